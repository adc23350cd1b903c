"""Every page through Streamlit's AppTest, with generated data and real tiny models."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import fresh_pages, sharp_scene

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")


@pytest.fixture()
def app_env(tmp_path, monkeypatch, sample_dir):
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data / "sample")
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("UNET_DATA_DIR", str(data))
    monkeypatch.setenv("UNET_RUNS_DIR", str(runs))
    monkeypatch.setenv("UNET_SURVEYS_DIR", str(tmp_path / "surveys"))
    fresh_pages()
    return data, runs


def _app(page: str | None = None, timeout: float = 120):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _copy_run(trained, runs: Path, name: str | None = None) -> Path:
    dest = runs / (name or trained.id)
    shutil.copytree(trained.dir, dest)
    return dest


def test_home_shows_the_model_card_datasets_and_runs(app_env, trained_tiny):
    _, runs = app_env
    _copy_run(trained_tiny, runs, "run-a")
    at = _app()
    assert at.title[0].value == "Damage segmentation studio"
    from unet.damage_model import ModelCard
    from unet.model import DEFAULT_MODEL

    card = ModelCard.read(DEFAULT_MODEL)
    caption = " ".join(c.value for c in at.caption)
    assert f"threshold {card.threshold:g}" in caption and f"trained at {card.input_size} px" in caption
    # and where the threshold came from (the bundled card: calibrate on a fold of the training photos)
    assert "Threshold chosen by calibration on fold 1/5 of the training photos" in caption.replace("\\", ""), caption
    assert "Also bundled, in the sidebar's picker: Bundled noise-robust model (grainy, dim or JPEG-noisy photos)." \
        in caption.replace("\\", ""), caption
    text = " ".join(m.value for m in at.markdown)
    assert "default.keras" in text and "**sample \\(generated\\)**" in text and "**CPU**" in text
    table = at.dataframe[0].value
    assert list(table["run"]) == ["run-a"] and list(table["state"]) == ["completed"]
    # The same Dice as the Train page: the best epoch's, whose model the run keeps.
    best = max(h["val_dice"] for h in trained_tiny.history())
    assert "best val Dice" in table.columns and table["best val Dice"][0] == pytest.approx(best)
    # And the Train page's panel and its table say the same about the run, from one poll.
    at.switch_page("pages/train.py").run()
    panel = next(m.value for m in at.markdown if "preset tiny" in m.value)
    row = next(d.value for d in at.dataframe if "best val Dice" in d.value.columns)
    assert f"**{row['state'][0]}**" in panel
    # Plain words in the form: short labels that fit, the raw names only in the help.
    assert at.selectbox(key="train_loss").options[0] == "BCE + Dice (default)"
    assert all(len(o) <= 35 for o in at.selectbox(key="train_preset").options)  # 42 were cut


def test_a_damaged_run_folder_or_model_card_never_takes_a_page_down(app_env, trained_tiny):
    _, runs = app_env
    _copy_run(trained_tiny, runs, "run-a")
    bad = _copy_run(trained_tiny, runs, "run-b")
    (bad / "status.json").write_text("[1]")
    (bad / "config.json").write_text('{"created_at": 7, "preset": [1]}')
    (runs / "run-a" / "model.json").write_text('{"threshold": "abc"')  # truncated, not JSON
    at = _app()
    table = at.dataframe[0].value
    assert dict(zip(table["run"], table["state"])) == {"run-a": "completed", "run-b": "unreadable"}
    # the sidebar's choice (AppTest reruns the page alone, so it is set where the picker keeps it)
    at.session_state["model_path"] = str(runs / "run-a" / "model.keras")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("model\\.json: the model card is not valid JSON" in e.value for e in at.error)
    for page in ("train", "detect", "compare"):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])


def test_legacy_pages_mode_still_exists():
    """Why ``pages.common.through_app`` exists: with a ``pages/`` folder beside the entry point,
    the pinned Streamlit still starts a server in its legacy multipage mode, where a directly
    opened page URL runs that file alone. When this fails, Streamlit dropped the mode: delete
    ``through_app`` and its calls."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import script_runner

    saved = PagesManager.uses_pages_directory
    try:
        PagesManager.uses_pages_directory = None
        PagesManager(APP)
        assert PagesManager.uses_pages_directory is True
    finally:
        PagesManager.uses_pages_directory = saved
    assert callable(getattr(script_runner, "_mpa_v1", None))


def test_dataset_page_summary_follows_the_choice(app_env, tmp_path):
    data, _ = app_env
    other = data / "walls2"
    from unet.synthetic import write_sample_dataset

    write_sample_dataset(other, count=5, seed=9, size=(64, 64))
    (other / "train" / "broken").mkdir()
    at = _app("dataset")
    first = at.dataframe[0].value
    assert int(first["photos"].sum()) == 12
    assert {"damaged % (mean)", "damaged % (max)"} <= set(first.columns)  # words, not mean_damaged_pct
    import json

    histogram = json.loads(at.get("plotly_chart")[0].proto.spec)
    colours = {t["name"]: t["marker"]["color"] for t in histogram["data"]}
    assert len(set(colours.values())) == len(colours) == 3  # train, val and test told apart...
    assert all(t["marker"].get("opacity", 1) < 1 for t in histogram["data"])  # ...also where overlaid bars cover each other
    at.selectbox(key="dataset_choice").set_value("walls2").run()
    assert not at.exception
    assert int(at.dataframe[0].value["photos"].sum()) == 5
    problems = at.dataframe[1].value
    assert problems["file"].str.contains("broken").any()


def test_a_dataset_added_as_a_zip_is_unpacked_checked_and_chosen(app_env, sample_dir):
    import io
    import zipfile

    data, _ = app_env
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(sample_dir.rglob("*.png")):
            z.write(f, "walls/" + f.relative_to(sample_dir).as_posix())
    at = _app("dataset")
    at.file_uploader(key="dataset_zip").set_value([("walls.zip", b"not a zip", "application/zip")]).run()
    at.text_input(key="dataset_zip_name").input("broken").run()
    at.button(key="dataset_zip_add").click().run()
    assert any("not a zip file" in e.value for e in at.error) and not (data / "broken").exists()
    at.file_uploader(key="dataset_zip").set_value([("walls.zip", buf.getvalue(), "application/zip")]).run()
    at.text_input(key="dataset_zip_name").input("my walls").run()
    at.button(key="dataset_zip_add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("my\\-walls" in s.value for s in at.success)
    assert at.selectbox(key="dataset_choice").value == "my-walls"
    summary = at.dataframe[0].value
    assert set(summary["split"]) == {"train", "val", "test"}
    # A typed folder outside the data folders says how to allow one.
    at.selectbox(key="dataset_choice").set_value("A folder path...").run()
    at.text_input(key="dataset_path").input("/etc").run()
    assert any("ROOTS=/path/to/photos make run" in e.value and "zip" in e.value for e in at.error)


def test_train_page_starts_a_run(app_env):
    _, runs = app_env
    at = _app("train")
    at.selectbox(key="train_preset").set_value("tiny")
    at.select_slider(key="train_size").set_value(64)
    at.number_input(key="train_epochs").set_value(1)
    at.checkbox(key="train_ema").check()
    at.checkbox(key="train_deep").check()
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, [e.value for e in at.exception]
    from unet.runs import list_runs, wait

    created = list_runs(runs)
    assert len(created) == 1 and created[0].config()["preset"] == "tiny" and created[0].config()["ema"] == 0.99
    assert created[0].config()["deep_supervision"] is True
    assert wait(created[0], timeout=120)["state"] == "completed", created[0].log_tail()
    # The log shown is the run's own, without TensorFlow's CUDA probing on a machine with no GPU.
    at.run()
    shown = "\n".join(c.value for c in at.code)
    assert "training and" in shown and "completed" in shown
    assert "cuInit" not in shown and "absl::InitializeLog" not in shown


def test_train_page_fine_tunes_from_a_trained_model(app_env, trained_tiny):
    _, runs = app_env
    _copy_run(trained_tiny, runs, "run-a")
    at = _app("train")
    choice = next(o for o in at.selectbox(key="train_init").options if o.startswith("Run run-a"))
    at.selectbox(key="train_init").set_value(choice)
    at.select_slider(key="train_size").set_value(64)
    at.number_input(key="train_epochs").set_value(1)
    at.text_input(key="train_name").input("my walls")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Preset tiny" in i.value for i in at.info)  # the starting model's architecture
    from unet.runs import list_runs, wait

    new = next(r for r in list_runs(runs) if r.id != "run-a")
    assert "my-walls" in new.id
    cfg = new.config()
    assert cfg["preset"] == "tiny" and cfg["init_from"] == str(runs / "run-a" / "model.keras")
    assert wait(new, timeout=120)["state"] == "completed", new.log_tail()
    assert "weights initialised from" in new.log_tail(100)


def test_detect_threshold_changes_the_percentage(app_env, trained_tiny):
    _, runs = app_env
    _copy_run(trained_tiny, runs)
    at = _app("detect")
    from unet.synthetic import damaged_wall

    image, _, _ = damaged_wall(5, 96, 128)
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    at.file_uploader(key="detect_upload").set_value([("wall.png", buf.getvalue(), "image/png"),
                                                     ("notes.png", b"<html>", "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("notes\\.png" in e.value and "not a photo" in e.value for e in at.error)  # in its own place
    def result_line():
        return next(m.value for m in at.markdown if "% damaged" in m.value)

    def pct():
        return float(result_line().split("**")[3].split("%")[0])

    def seconds():
        return re.search(r"segmented in ([0-9.]+) s", result_line()).group(1)

    took = seconds()
    # Streamlit would clear the Keras session after each run (TensorFlow's kernel caches
    # and a full garbage collection, 0.2 s): the app keeps it.
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("unet_test_marker", 1)
    at.slider(key="detect_threshold").set_value(0.05).run()
    low = pct()
    at.slider(key="detect_threshold").set_value(0.95).run()
    high = pct()
    assert low > high
    assert seconds() == took  # moving the threshold re-thresholds; the model did not run again
    assert global_state.get_global_attribute("unet_test_marker") == 1
    assert len(at.get("image")) >= 4  # original, mask, overlay, heat map
    # Careful mode segments again (mirror images averaged), and says so on the result line.
    at.toggle(key="detect_flips").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "(careful mode)" in result_line()
    from pages.common import photo_cache

    store = photo_cache()
    by_mode = {key[-1]: store.get(key)["prob"] for key in at.session_state["detect_results"]}
    assert set(by_mode) == {False, True} and not np.array_equal(by_mode[False], by_mode[True])


def test_detect_measures_the_cracks_and_grades_them_once_a_scale_is_given(app_env):
    import io

    from unet.synthetic import measured_cracks

    image, _, truths = measured_cracks(2, 256, 320, per_side=2, widths=(6, 8))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    at = _app("detect")  # the bundled default model
    at.file_uploader(key="detect_upload").set_value([("wall.png", buf.getvalue(), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Grade"] == "not graded" and metrics["Cracks"] == str(len(truths))
    assert metrics["Widest crack"].endswith(" px")
    widest_px = float(metrics["Widest crack"].split()[0])
    assert abs(widest_px - max(t.width for t in truths)) <= 2

    at.radio(key="detect_scale_mode").set_value("Millimetres per pixel").run()
    at.text_input(key="detect_scale_value").input("abc").run()
    assert any("Scale:" in e.value and "millimetres per pixel" in e.value for e in at.error)
    at.text_input(key="detect_scale_value").input("0.5").run()
    assert not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Widest crack"] == f"{0.5 * widest_px:.2f} mm"
    from unet.cracks import grade

    assert metrics["Grade"] == grade(0.5 * widest_px).label
    crack_table = next(d.value for d in at.dataframe if "max_width_mm" in d.value.columns)
    assert len(crack_table) == len(truths)
    # Inspect up close: photo, overlay and probability in one figure that zooms and pans as one.
    at.toggle(key="inspect_0").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    import json

    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["type"] for t in spec["data"]] == ["image"] * 3
    layout = spec["layout"]
    assert layout["xaxis2"]["matches"] == "x" and layout["xaxis3"]["matches"] == "x"
    assert layout["yaxis2"]["matches"] == "y" and layout["yaxis"]["range"] == [256, 0]
    at.slider(key="inspect_opacity_0").set_value(1.0).run()
    assert "opacity 100%" in at.get("plotly_chart")[0].proto.spec
    # The scale is kept for the session: another page and back, it is still there.
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/detect.py").run()
    assert at.radio(key="detect_scale_mode").value == "Millimetres per pixel"
    assert at.text_input(key="detect_scale_value").value == "0.5"


def test_survey_flags_the_photos_to_check_by_eye_and_points_dim_ones_to_the_noise_robust_model(app_env):
    data, _ = app_env
    from unet.synthetic import measured_cracks

    cellar = data / "cellar"
    cellar.mkdir()
    image = measured_cracks(3, 192, 256, per_side=2, widths=(6, 8))[0]
    Image.fromarray(image).save(cellar / "daylight.png")
    Image.fromarray((image * 0.05).astype(np.uint8)).save(cellar / "dark.png")  # far too dark to trust
    at = _app("survey")
    at.radio(key="survey_source").set_value("A folder on the server").run()
    at.text_input(key="survey_folder").input("cellar").run()
    at.button(key="survey_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    warned = " ".join(w.value for w in at.warning).replace("\\", "")  # names are shown escaped
    assert "**1 photo(s) to check by eye**" in warned and "dark.png" in warned and "daylight" not in warned
    assert any("noise-robust model" in i.value and "dark.png" in i.value.replace("\\", "") for i in at.info)
    table = next(d.value for d in at.dataframe if "confidence" in d.value.columns)  # no scale given: no grades
    by_file = table.set_index("file")
    assert by_file.loc["dark.png", "confidence"] == "low" and "too dark to trust" in by_file.loc["dark.png", "note"]
    assert by_file.loc["daylight.png", "confidence"] == "high"


def test_survey_a_folder_ranks_it_maps_it_and_opens_a_photo(app_env):
    data, _ = app_env
    from unet.synthetic import measured_cracks

    street = data / "street"
    street.mkdir()
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (45.0, 30.0, 0.0), 3: "E", 4: (9.0, 10.0, 0.0)}
    Image.fromarray(measured_cracks(1, 192, 256, per_side=2, widths=(1, 2))[0]).save(street / "thin.jpg", exif=exif)
    Image.fromarray(measured_cracks(2, 192, 256, per_side=2, widths=(9, 11))[0]).save(street / "wide.png")
    (street / "broken.png").write_bytes(b"\x89PNG truncated")
    at = _app("survey")
    assert any("No survey yet" in i.value for i in at.info)
    at.radio(key="survey_source").set_value("A folder on the server").run()
    at.text_input(key="survey_folder").input("/etc").run()
    at.button(key="survey_run").click().run()
    assert any("must be inside" in e.value for e in at.error)  # confined like datasets
    at.text_input(key="survey_folder").input("street").run()
    at.radio(key="survey_scale_mode").set_value("Millimetres per pixel").run()
    at.text_input(key="survey_scale_value").input("0").run()
    at.button(key="survey_run").click().run()
    assert any("millimetres per pixel" in e.value for e in at.error)
    at.text_input(key="survey_scale_value").input("1").run()
    at.button(key="survey_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "grade" in d.value.columns)
    assert list(table["file"]) == ["wide.png", "thin.jpg", "broken.png"]  # worst first, failures last
    assert int(table["grade"][0]) > int(table["grade"][1]) and "widest crack (mm)" in table.columns
    assert any("broken\\.png" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Photos measured"] == "2"
    assert len(at.get("plotly_chart")) == 1  # one photo has GPS: a map
    assert {b.label for b in at.get("download_button")} >= {"Survey CSV", "Report (HTML, opens offline)"}
    # Opening a photo's result: the page keeps the pick across reruns (as a map click sets it).
    at.session_state["survey_pick"] = 0
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("image")) >= 2 and any("wide\\.png" in m.value for m in at.markdown)


def _detect_with_a_run(app_env, trained_tiny):
    """Detect, with a trained tiny run chosen in the sidebar."""
    _, runs = app_env
    _copy_run(trained_tiny, runs, "run-a")
    at = _app()
    at.session_state["model_path"] = str(runs / "run-a" / "model.keras")
    return at.switch_page("pages/detect.py").run()


def _png(image: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def test_detect_warns_about_a_photo_far_larger_than_the_training_photos_and_offers_a_scale(app_env, trained_tiny):
    at = _detect_with_a_run(app_env, trained_tiny)
    photo = _png(np.random.default_rng(0).integers(0, 256, (200, 1800, 3), dtype=np.uint8))
    at.file_uploader(key="detect_upload").set_value([("panorama.png", photo, "image/png")]).run()
    assert any("Large photo" in w.value and "try scale 0\\.5" in w.value for w in at.warning)
    at.selectbox(key="detect_photo_scale").set_value("0.5").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("Large photo" in w.value for w in at.warning)
    assert any("seen at scale 0.5" in m.value and "1800×200 px" in m.value for m in at.markdown)  # mask at full size


def test_detect_says_when_a_photo_was_shown_to_the_model_brighter_smoothed_or_sharpened_and_flags_one_too_dark(
        app_env, trained_tiny):
    at = _detect_with_a_run(app_env, trained_tiny)
    files = [(name, _png(np.random.default_rng(1).integers(0, level, (80, 96, 3), dtype=np.uint8)), "image/png")
             for name, level in (("stairwell.png", 40), ("cellar.png", 8))]
    grainy = np.clip(130 + np.random.default_rng(2).normal(0, 25, (80, 96, 3)), 0, 255).astype(np.uint8)
    files.append(("dusk.png", _png(grainy), "image/png"))
    blocks = sharp_scene(np.random.default_rng(1), 80, 96)  # sharp edges, then a lens out of focus by 6 px
    soft = np.asarray(Image.fromarray(blocks).filter(ImageFilter.GaussianBlur(6)))
    files.append(("shaky.png", _png(soft), "image/png"))
    at.file_uploader(key="detect_upload").set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]
    brightened = [i.value.replace("\\", "") for i in at.info if "Photo: a dark photo" in i.value]  # unescaped
    assert len(brightened) == 1 and "brightened x6.9 for the model" in brightened[0]  # mean 19.5 -> 135
    too_dark = [w.value for w in at.warning if "too dark to trust" in w.value]
    assert len(too_dark) == 1 and "retake it with more light" in too_dark[0]
    smoothed = [i.value.replace("\\", "") for i in at.info if i.value.startswith("Photo: a noisy photo")]
    assert len(smoothed) == 1 and "(noise 25/255" in smoothed[0] and "smoothed (blur" in smoothed[0], smoothed
    sharpened = [w.value.replace("\\", "") for w in at.warning if w.value.startswith("Photo: out of focus")]
    assert len(sharpened) == 1 and "sharpened for the model" in sharpened[0] and "retake it in focus" in sharpened[0]


def test_detect_points_a_dim_or_grainy_photo_to_the_noise_robust_model(app_env):
    """With the bundled default chosen, a dim photo (brightened for the model) and a grainy one
    (smoothed) say the bundled noise-robust model keeps more of such photos' cracks; a photo
    like the training photos does not, nor does any photo once that model is chosen."""
    from unet.model import BUNDLED_MODELS

    default, robust = BUNDLED_MODELS.values()
    rng = np.random.default_rng(3)
    files = [("stairwell.png", _png(rng.integers(0, 40, (64, 80, 3), dtype=np.uint8)), "image/png"),
             ("dusk.png", _png(np.clip(130 + rng.normal(0, 25, (64, 80, 3)), 0, 255).astype(np.uint8)), "image/png"),
             ("daylight.png", _png(np.full((64, 80, 3), 130, np.uint8)), "image/png")]
    at = _app()
    at.session_state["model_path"] = str(default)
    at.switch_page("pages/detect.py").run()
    at.file_uploader(key="detect_upload").set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]
    said = [m.value.replace("\\", "") for m in [*at.info, *at.warning] if m.value.startswith("Photo: ")]
    assert len(said) == 2 and all("The bundled noise-robust model (sidebar) usually keeps more" in m for m in said), said
    at.session_state["model_path"] = str(robust)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    said = [m.value for m in [*at.info, *at.warning] if m.value.startswith("Photo: ")]
    assert len(said) == 2 and not any("noise-robust" in m for m in said), said


def test_detect_threshold_follows_the_chosen_models_card(app_env, trained_tiny):
    from unet.damage_model import DamageModel

    _, runs = app_env
    for name, threshold in (("run-a", 0.48), ("run-b", 0.3)):
        DamageModel.load(_copy_run(trained_tiny, runs, name) / "model.keras").update_card(threshold=threshold)
    at = _app()
    at.session_state["model_path"] = str(runs / "run-a" / "model.keras")  # the sidebar's choice
    at.switch_page("pages/detect.py").run()
    assert at.slider(key="detect_threshold").value == 0.48
    at.session_state["model_path"] = str(runs / "run-b" / "model.keras")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="detect_threshold").value == 0.3  # not the previous model's 0.48
    at.slider(key="detect_threshold").set_value(0.7).run()
    assert at.slider(key="detect_threshold").value == 0.7  # the user's own choice stays


def test_detect_keeps_the_apps_memory_within_one_budget_for_all_sessions(app_env, trained_tiny, monkeypatch):
    import io

    _, runs = app_env
    _copy_run(trained_tiny, runs, "run-a")
    # Room for about one 200x200 photo (3 bytes a pixel for the photo, 2 for its float16 map).
    monkeypatch.setenv("UNET_DETECT_CACHE_MB", "0.3")
    photos = []
    for i in range(4):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buf, "PNG")
        photos.append((f"p{i}.png", buf.getvalue(), "image/png"))
    sessions = []
    for chunk in (photos[:3], photos[3:]):  # two browser sessions
        at = _app()
        at.session_state["model_path"] = str(runs / "run-a" / "model.keras")
        at.switch_page("pages/detect.py").run()
        from pages.common import photo_cache

        if not sessions:
            photo_cache().clear()
        at.file_uploader(key="detect_upload").set_value(chunk).run()
        assert not at.exception, [e.value for e in at.exception]
        assert sum("% damaged" in m.value for m in at.markdown) == len(chunk)  # every photo still shown
        sessions.append(at)
    store = photo_cache()
    assert len(store) == 1 and store.nbytes() <= 0.3 * 2**20  # one budget, across both sessions
    first = sessions[0]
    first.run()  # the first session's photos were dropped: segmented again, and it says why
    assert not first.exception, [e.value for e in first.exception]
    assert any("Segmented again" in c.value and "0 MB" in c.value for c in first.caption)


def test_compare_two_runs(app_env, trained_tiny):
    _, runs = app_env
    _copy_run(trained_tiny, runs, "run-a")
    _copy_run(trained_tiny, runs, "run-b")
    at = _app("compare")
    picker = at.multiselect(key="compare_models")
    from unet.model import BUNDLED_MODELS

    # the bundled models first (the default, then the noise-robust one), then the runs
    assert list(picker.options) == [*BUNDLED_MODELS, *(o for o in picker.options if o.startswith("Run "))]
    assert len(picker.options) == 4
    picker.set_value([o for o in picker.options if o.startswith("Run run-")]).run()
    at.button(key="compare_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table.columns) >= {"IoU", "Dice (F1)", "precision", "recall", "F1 90% interval",
                                                      "best possible F1", "reached at threshold", "source photos"}
    # This split's photos come from fewer source photos than an interval needs: none is shown,
    # nor a verdict on the difference (the browser test's larger split shows both).
    assert (table["source photos"] < 3).all() and (table["F1 90% interval"] == "-").all()
    assert len(at.dataframe) == 1
    assert list((runs / "run-a" / "eval").glob("*/metrics.json"))
    # Two copies of one model agree on every photo, also where both find nothing (was "disagreement 1.00").
    captions = [c.value for c in at.caption if "the models disagree on" in c.value]
    assert captions and all("disagree on 0%" in c for c in captions)
