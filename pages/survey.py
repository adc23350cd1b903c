"""Survey: a folder (or many uploads) of photos segmented and measured, worst first, on a map, with a report.

The work is :func:`unet.survey.run_survey`, the same as ``python -m unet survey``: each
survey is a folder under ``surveys/`` (or ``$UNET_SURVEYS_DIR``) with the masks, crack
tables, ``survey.csv`` and ``report.html``, so earlier surveys can be opened again.
Upload names are only shown (escaped) and stored under a safe name; a typed folder is
confined to the dataset folders, as on the Dataset page.
"""

import math
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import (SCALE_MM_PER_PX, SCALE_UNKNOWN, active_model_path, get_model, md_escape,
                          resolve_dataset_path, safe_file_name, scale_input, through_app)
from unet.cracks import DISCLAIMER, check_mm_per_px
from unet.errors import ConfigError
from unet.imaging import UPLOAD_TYPES
from unet.model import ModelError
from unet.predict import few, for_noise_robust, low_confidence
from unet.survey import GRADE_COLOURS, UNGRADED_COLOUR, default_surveys_dir, new_survey_dir, run_survey

through_app()

SHOWN_KEY = "survey_shown"
HINT_KEY = "survey_hint"  # (survey, the names of its dim or grainy photos)
UPLOAD, FOLDER = "Upload photos", "A folder on the server"

st.title("Survey")
st.write("Segment and measure many photos at once: the photos come back ranked worst first, on a map when "
         "they carry GPS, with a report that opens offline. " + DISCLAIMER)

model_path = active_model_path()
if model_path is None:
    st.info("No trained model yet. Start a run on the **Train** page; its model appears in the sidebar picker.")
    st.stop()

source = st.radio("Photos", [UPLOAD, FOLDER], horizontal=True, key="survey_source")
uploads, folder = [], ""
if source == UPLOAD:
    uploads = st.file_uploader("Photos", type=UPLOAD_TYPES, accept_multiple_files=True, key="survey_upload") or []
else:
    folder = st.text_input("Folder (inside the data folder, or a folder UNET_DATA_ROOTS allows)", key="survey_folder",
                           placeholder="sample/test")
scale_mode, scale_value = scale_input("survey", modes=(SCALE_UNKNOWN, SCALE_MM_PER_PX))
title = st.text_input("Report title", value="Damage survey", key="survey_title", max_chars=120)


def _progress(bar):
    """Move ``bar`` as photos are done, with the time left."""
    def wrap(items):
        if not hasattr(items, "__len__"):
            items = list(items)
        n = len(items)  # a sized iterable is not run ahead: it is the work itself
        start = time.monotonic()
        for k, item in enumerate(items):
            left = ""
            if k:
                secs = (time.monotonic() - start) / k * (n - k)
                left = f" · about {secs / 60:.0f} min left" if secs >= 90 else f" · about {secs:.0f} s left"
            bar.progress(k / max(n, 1), text=f"{k} of {n} photos done{left}")
            yield item
        bar.progress(1.0, text=f"{n} of {n} photos done")
    return wrap


def start_survey() -> None:
    try:
        mm = check_mm_per_px(scale_value) if scale_mode == SCALE_MM_PER_PX else None
        inputs = [resolve_dataset_path(folder)] if source == FOLDER else []
        if source == FOLDER and not folder.strip():
            raise ValueError("type a folder first")
    except (ConfigError, ValueError) as exc:
        st.error(md_escape(exc))
        return
    if source == UPLOAD and not uploads:
        st.error("Drop some photos first.")
        return
    try:
        model = get_model(model_path)
    except ModelError as exc:
        st.error(f"The chosen model cannot be used: {md_escape(exc)}")
        return
    out = new_survey_dir(title)
    if source == UPLOAD:
        photos = out / "photos"
        photos.mkdir()
        used: set[str] = set()
        for u in uploads:  # stored under safe, distinct names; the shown name is never a path
            name = safe_file_name(u.name)
            stem, n = Path(name).stem, 2
            while name.lower() in used:
                name, n = f"{stem}~{n}{Path(u.name).suffix.lower()}", n + 1
            used.add(name.lower())
            (photos / name).write_bytes(u.getvalue())
        inputs = [photos]
    bar = st.progress(0.0, text="Starting...")
    rows = run_survey(model, inputs, out / "results", mm_per_px=mm, progress=_progress(bar), title=title)
    st.session_state[SHOWN_KEY] = out.name
    dim = for_noise_robust(model_path, rows)
    if dim:  # shown with this survey's results while they are the ones shown
        st.session_state[HINT_KEY] = (out.name, dim)


if st.button("Run the survey", type="primary", key="survey_run"):
    start_survey()

# ------------------------------------------------------------------ results
root = default_surveys_dir()
done = sorted((p for p in root.glob("*/results/survey.csv")), key=lambda p: p.parent.parent.name, reverse=True)
if not done:
    st.info("No survey yet: choose photos and run one.")
    st.stop()
names = [p.parent.parent.name for p in done]
if st.session_state.get(SHOWN_KEY) not in names:
    st.session_state[SHOWN_KEY] = names[0]
shown = st.selectbox("Survey shown", names, key=SHOWN_KEY)
results = root / shown / "results"
table = pd.read_csv(results / "survey.csv", dtype=str, keep_default_na=False)
graded = "grade" in table.columns

ok = table[table["error"] == ""]
failed = table[table["error"] != ""]
m1, m2, m3 = st.columns(3)
m1.metric("Photos measured", len(ok))
m2.metric("Could not be read", len(failed))
if graded and len(ok):
    worst = ok.iloc[0]
    m3.metric("Worst grade", f"{worst['grade']} · {worst['grade_name']}", help=DISCLAIMER)
else:
    m3.metric("Worst grade", "not graded", help="No scale was given for this survey.")
if len(failed):
    st.warning("Not measured: " + "; ".join(f"**{md_escape(Path(f).name)}**: {md_escape(e)}"
                                            for f, e in zip(failed["file"], failed["error"])))
unsure = ok[[low_confidence(r) for r in ok.to_dict("records")]] if len(ok) else ok
if len(unsure):
    st.warning(f"**{len(unsure)} photo(s) to check by eye** before trusting their grade: the model was unsure of "
               "the mask, or the photo is unlike the photos it learned from (a grade read from a doubtful mask may "
               "be too low; the note column says why): " + ", ".join(md_escape(Path(f).name) for f in unsure["file"]))
hint = st.session_state.get(HINT_KEY)
if hint and hint[0] == shown:
    dim = hint[1]
    st.info(f"{len(dim)} photo(s) dim or grainy ({md_escape(few(dim))}): the bundled noise-robust model (sidebar) "
            "usually keeps more of their cracks, above all on brick.")


def _preview(path: Path, side: int = 1200) -> bytes:
    """A JPEG no larger than ``side`` for the page (the full-size PNG stays in the survey folder)."""
    import io

    from PIL import Image

    with Image.open(path) as img:
        img.thumbnail((side, side), Image.BOX)
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()


def _colour(grade: str) -> str:
    return GRADE_COLOURS.get(int(grade), UNGRADED_COLOUR) if grade not in ("", None) else UNGRADED_COLOUR


located = ok[(ok["latitude"] != "") & (ok["longitude"] != "")]
if len(located):
    import plotly.graph_objects as go

    lat = located["latitude"].astype(float)
    lon = located["longitude"].astype(float)
    fig = go.Figure()
    grades = located["grade"] if graded else pd.Series([""] * len(located), index=located.index)
    for g in sorted(set(grades), reverse=True):
        sel = grades == g
        fig.add_scatter(x=lon[sel], y=lat[sel], mode="markers", name=f"grade {g}" if g else "not graded",
                        marker=dict(size=14, color=_colour(g), line=dict(width=1, color="#222")),
                        text=[Path(f).name for f in located["file"][sel]], customdata=list(located.index[sel]),
                        hovertemplate="%{text}<br>%{y:.6f}, %{x:.6f}<extra></extra>")
    # Longitude degrees shrink with latitude: keep the map's proportions true (no tiles, works offline).
    fig.update_yaxes(scaleanchor="x", scaleratio=1 / max(math.cos(math.radians(float(lat.mean()))), 0.01),
                     title="latitude")
    fig.update_xaxes(title="longitude")
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), title="Where the photos were taken",
                      plot_bgcolor="#f4f4f0")
    picked = st.plotly_chart(fig, key="survey_map", on_select="rerun", selection_mode="points")
    points = picked.selection.points if picked else []
    if points and points[0].get("customdata") is not None:
        st.session_state["survey_pick"] = int(points[0]["customdata"])
else:
    st.caption("No photo in this survey carries a GPS position in its EXIF, so there is no map.")

columns = [c for c in ["file", "grade", "grade_name", "confidence", "max_width_mm", "max_width_px", "total_length_mm",
                       "total_length_px", "cracks", "pattern", "damaged_pct", "latitude", "longitude", "taken",
                       "note", "error"] if c in table.columns]
view = table[columns].copy()
view["file"] = view["file"].map(lambda f: Path(f).name)
view = view.rename(columns={"grade_name": "damage", "max_width_mm": "widest crack (mm)",
                            "max_width_px": "widest crack (px)", "total_length_mm": "crack length (mm)",
                            "total_length_px": "crack length (px)", "damaged_pct": "damaged %",
                            "pattern": "mostly", "error": "problem"})
st.caption("Worst first. Select a row (or a point on the map) to open that photo's result.")
chosen = st.dataframe(view, hide_index=True, on_select="rerun", selection_mode="single-row", key="survey_table",
                      width="stretch")
rows = chosen.selection.rows if chosen else []
pick = rows[0] if rows else st.session_state.get("survey_pick")
d1, d2, _ = st.columns([1, 1, 2])
d1.download_button("Survey CSV", (results / "survey.csv").read_bytes(), file_name=f"{shown}.csv", mime="text/csv",
                   key="survey_csv", on_click="ignore")
if (results / "report.html").is_file():
    d2.download_button("Report (HTML, opens offline)", (results / "report.html").read_bytes(),
                       file_name=f"{shown}.html", mime="text/html", key="survey_html", on_click="ignore")

if pick is not None and 0 <= pick < len(table):
    row = table.iloc[pick]
    box = st.container(border=True)
    box.markdown(f"**{md_escape(Path(row['file']).name)}**" + (
        f" · grade **{md_escape(row['grade'])} · {md_escape(row['grade_name'])}**" if graded and row["grade"] else ""))
    if row["error"]:
        box.error(md_escape(row["error"]))
    else:
        c1, c2 = box.columns(2)
        c1.image(_preview(results / row["overlay"]), caption="overlay")
        c2.image(_preview(results / row["cracks_png"]), caption="centre lines by width: yellow thinnest, red widest")
        box.dataframe(pd.read_csv(results / row["cracks_csv"]), hide_index=True, key="survey_cracks")
