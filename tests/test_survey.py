"""Measuring photos end to end: predict --measure, a survey ranked by severity, its offline report."""

import csv
import re

import numpy as np
import pytest
from PIL import Image

from unet.cracks import measure
from unet.damage_model import DamageModel
from unet.errors import ConfigError
from unet.predict import predict_files
from unet.survey import photo_metadata, run_survey
from unet.synthetic import measured_cracks


@pytest.fixture(scope="module")
def default_model():
    return DamageModel.load()


def _with_gps(image, path, lat=(52.0, 22.0, 12.5), lat_ref="N", lon=(1.0, 10.0, 3.0), lon_ref="W"):
    exif = Image.Exif()
    exif[0x8825] = {1: lat_ref, 2: lat, 3: lon_ref, 4: lon}
    exif[306] = "2026:11:20 10:11:12"
    Image.fromarray(image).save(path, exif=exif)


def test_the_bundled_model_then_measure_finds_the_drawn_geometry(default_model):
    image, mask, truths = measured_cracks(1, 384, 512)
    found = measure(default_model.segment(image).mask)
    true = measure(mask)
    assert found.count == len(truths)
    assert found.total_length_px == pytest.approx(sum(t.length for t in truths), rel=0.05)
    assert abs(found.max_width_px - max(t.width for t in truths)) <= 2.0
    assert abs(found.total_length_px - true.total_length_px) <= 0.05 * true.total_length_px


def test_gps_and_time_are_read_from_exif(tmp_path):
    image = np.full((16, 16, 3), 128, np.uint8)
    _with_gps(image, tmp_path / "a.jpg")
    Image.fromarray(image).save(tmp_path / "plain.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"nope")
    meta = photo_metadata(tmp_path / "a.jpg")
    assert meta["latitude"] == pytest.approx(52 + 22 / 60 + 12.5 / 3600)
    assert meta["longitude"] == pytest.approx(-(1 + 10 / 60 + 3 / 3600))
    assert meta["taken"] == "2026:11:20 10:11:12"
    assert photo_metadata(tmp_path / "plain.jpg") == {"latitude": "", "longitude": "", "taken": ""}
    assert photo_metadata(tmp_path / "junk.jpg")["latitude"] == ""


def test_predict_measure_adds_columns_and_a_crack_table_per_photo(default_model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, widths in enumerate([(2, 3), (9, 11)]):
        Image.fromarray(measured_cracks(i, 256, 256, per_side=2, widths=widths)[0]).save(src / f"w{i}.png")
    rows = predict_files(default_model, [src], tmp_path / "out", measure=True, mm_per_px=0.5)
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
    thin, wide = by_name["w0.png"], by_name["w1.png"]
    assert thin["max_width_px"] < wide["max_width_px"]
    assert wide["max_width_mm"] == pytest.approx(0.5 * wide["max_width_px"], abs=0.01)
    assert thin["grade"] <= 2 and wide["grade"] in (2, 3)  # ~5 mm sits on the slight/moderate line
    written = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert {"cracks", "total_length_mm", "grade_name", "cracks_csv"} <= set(written[0])
    for r in rows:
        table = list(csv.DictReader(open(tmp_path / "out" / r["cracks_csv"])))
        assert len(table) == r["cracks"] + r["patches"]
        assert all(float(t["length_mm"]) > 0 for t in table)
        assert (tmp_path / "out" / r["cracks_png"]).is_file()
    # The crack files are outputs: a second run over the output folder does not take them as photos.
    again = predict_files(default_model, [tmp_path / "out", src], tmp_path / "out", measure=True)
    assert len(again) == 2


def test_a_bad_scale_is_refused_before_any_work(default_model, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="millimetres per pixel"):
        predict_files(default_model, [tmp_path / "a.png"], tmp_path / "out", measure=True, mm_per_px="abc")
    assert not (tmp_path / "out").exists()


def test_a_survey_ranks_photos_worst_first_and_its_report_opens_offline(default_model, tmp_path):
    src = tmp_path / "street"
    src.mkdir()
    _with_gps(measured_cracks(2, 256, 320, per_side=2, widths=(1, 2))[0], src / "house_1.jpg")
    Image.fromarray(measured_cracks(3, 256, 320, per_side=2, widths=(10, 12))[0]).save(src / "house_<2>.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    rows = run_survey(default_model, [src], tmp_path / "survey", mm_per_px=1.0, title="Street & 5")
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["house_<2>.png", "house_1.jpg", "broken.jpg"]
    assert rows[0]["grade"] > rows[1]["grade"]
    assert rows[1]["latitude"] != "" and rows[0]["latitude"] == "" and rows[2]["error"]
    table = list(csv.DictReader(open(tmp_path / "survey" / "survey.csv")))
    assert [r["file"] for r in table] == [r["file"] for r in rows]
    page = (tmp_path / "survey" / "report.html").read_text()
    assert "Street &amp; 5" in page and "house_&lt;2&gt;.png" in page and "<2>" not in page  # escaped
    assert "broken.jpg" in page and "not an engineering assessment" in page and "Burland" in page
    assert page.count("<circle") == 1  # one photo has a GPS position
    assert page.count("data:image/jpeg;base64,") == 4  # overlay and centre lines for each measured photo
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page)  # nothing fetched from a network


def test_an_interrupted_survey_still_writes_its_report(default_model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        Image.fromarray(measured_cracks(i, 128, 128, per_side=1)[0]).save(src / f"p{i}.png")

    def stop_after_one(items):
        for n, item in enumerate(items):
            if n == 1:
                raise KeyboardInterrupt
            yield item

    with pytest.raises(KeyboardInterrupt):
        run_survey(default_model, [src], tmp_path / "out", progress=stop_after_one)
    table = list(csv.DictReader(open(tmp_path / "out" / "survey.csv")))
    done = [r for r in table if not r["error"]]
    assert len(table) == 8 and 1 <= len(done) < 8  # the photos already segmented when it stopped are kept
    assert all(r["error"] == "not processed (interrupted)" for r in table if r["error"])
    assert "interrupted" in (tmp_path / "out" / "report.html").read_text()
