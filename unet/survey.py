"""A survey: many photos segmented and measured, ranked by severity, with a report that opens offline.

``run_survey`` is :func:`unet.predict.predict_files` with measurements, plus what a
survey needs beside each photo: where and when it was taken (EXIF GPS and time), a
ranking (worst first), ``survey.csv`` and ``report.html``, a single file with
thumbnails, measurements and a map drawn in SVG, that needs no internet and no server.
The Survey page and ``python -m unet survey`` both call it.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .cracks import DISCLAIMER, GRADES, GRADES_SOURCE
from .files import write_csv_atomic, write_text_atomic
from .predict import low_confidence

def default_surveys_dir() -> Path:
    """Where the Survey page keeps its surveys: ``$UNET_SURVEYS_DIR``, else the project's ``surveys/``."""
    import os

    return Path(os.environ.get("UNET_SURVEYS_DIR") or Path(__file__).resolve().parent.parent / "surveys")


def new_survey_dir(title: str, root: str | Path | None = None) -> Path:
    """A new, empty survey folder named by time and title (``20261125-101500-street-5-1a2b``)."""
    import re
    import secrets

    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "survey"
    root = Path(root) if root else default_surveys_dir()
    path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"
    path.mkdir(parents=True)
    return path


LOCATION_FIELDS = ["latitude", "longitude", "taken"]
GRADE_COLOURS = {0: "#2e7d32", 1: "#9ccc65", 2: "#fdd835", 3: "#fb8c00", 4: "#e53935", 5: "#6a1b9a"}
UNGRADED_COLOUR = "#78909c"
THUMB_SIDE = 320


def _degrees(dms, ref) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60 + s / 3600
    if str(ref).strip().upper() in ("S", "W"):
        value = -value
    return value if math.isfinite(value) else None


def photo_metadata(path: str | Path) -> dict:
    """Where and when a photo was taken, from its EXIF: ``latitude``, ``longitude`` (decimal
    degrees, WGS 84) and ``taken`` (as the camera wrote it); empty strings when absent or unreadable."""
    from PIL import Image

    found = dict.fromkeys(LOCATION_FIELDS, "")
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            gps = exif.get_ifd(0x8825)
            taken = exif.get_ifd(0x8769).get(36867) or exif.get(306)
    except Exception:  # noqa: BLE001 - metadata is optional: any failure means "not known"
        return found
    lat, lon = _degrees(gps.get(2), gps.get(1, "N")), _degrees(gps.get(4), gps.get(3, "E"))
    if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180 and (lat, lon) != (0.0, 0.0):
        found.update(latitude=round(lat, 7), longitude=round(lon, 7))
    if taken:
        found["taken"] = str(taken).strip("\x00 ")
    return found


def _number(value, default: float = -1.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _given(row: dict, key: str) -> bool:
    """Whether a row (from our rows or read back from CSV) has a value for ``key``."""
    return str(row.get(key, "")).strip() not in ("", "None")


def severity_key(row: dict) -> tuple:
    """Sort key, worst first: grade, then widest crack, then damaged share; failures last."""
    failed = bool(row.get("error"))
    return (failed, -_number(row.get("grade")), -_number(row.get("max_width_px")), -_number(row.get("damaged_pct")),
            str(row.get("file")))


def _thumb(image: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    from PIL import Image

    img = Image.fromarray(image)
    img.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def run_survey(
    model,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    mm_per_px: float | None = None,
    threshold: float | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    flips: bool = False,
    scale: float | None = None,
    title: str | None = None,
) -> list[dict]:
    """Segment and measure every photo of ``inputs``; write the survey into ``out_dir``.

    Writes what ``predict --measure`` writes (masks, overlays, crack tables and pictures,
    ``results.csv`` in input order) and then ``survey.csv`` (one row per photo, worst
    first, with its GPS position and time when the photo has them) and ``report.html``.
    An interrupted survey (Ctrl-C) still writes both for the photos done, then re-raises.

    Returns:
        The rows of ``survey.csv``, worst first.
    """
    from .damage_model import DamageModel
    from .predict import predict_files

    dm = DamageModel.of(model)
    thumbs: dict[str, tuple[bytes, bytes]] = {}

    def keep(path, image, seg, found) -> None:
        from .cracks import width_picture
        from .predict import overlay

        lines = max(2, round(2 * max(image.shape[:2]) / THUMB_SIDE))  # still visible once shrunk
        thumbs[str(path)] = (_thumb(overlay(image, seg.mask)), _thumb(width_picture(image, found, thickness=lines)))

    meta = {"title": title or "Damage survey", "made": time.strftime("%Y-%m-%d %H:%M"),
            "model": dm.path.name if dm.path else "a model in memory",
            "threshold": threshold if threshold is not None else dm.card.threshold, "mm_per_px": mm_per_px,
            "inputs": [str(p) for p in inputs]}
    out = Path(out_dir)
    try:
        rows = predict_files(dm, inputs, out, threshold=threshold, progress=progress, flips=flips, scale=scale,
                             measure=True, mm_per_px=mm_per_px, on_result=keep)
    except KeyboardInterrupt:
        write_report(out, _read_results(out / "results.csv"), thumbs, {**meta, "interrupted": True})
        raise
    return write_report(out, rows, thumbs, meta)


def _read_results(path: Path) -> list[dict]:
    import csv

    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def write_report(out: Path, rows: list[dict], thumbs: dict, meta: dict) -> list[dict]:
    """``survey.csv`` and ``report.html`` from the rows of ``results.csv``; returns the ranked rows."""
    ranked = []
    for row in rows:
        ranked.append({**row, **photo_metadata(row["file"])})
    ranked.sort(key=severity_key)
    fields = list(rows[0].keys()) + LOCATION_FIELDS if rows else ["file"] + LOCATION_FIELDS
    write_csv_atomic(out / "survey.csv", ranked, fields)
    write_text_atomic(out / "report.html", report_html(ranked, thumbs, meta))
    return ranked


# --------------------------------------------------------------------------- the HTML report

def _grade_colour(row: dict) -> str:
    return GRADE_COLOURS.get(int(_number(row["grade"]))) if _given(row, "grade") else UNGRADED_COLOUR


def _map_svg(rows: list[dict], width: int = 640, height: int = 400) -> str:
    """The photos with a GPS position as coloured points on a plain SVG (no map tiles, works offline)."""
    pts = [(float(r["longitude"]), float(r["latitude"]), r) for r in rows
           if _given(r, "latitude") and _given(r, "longitude")]
    if not pts:
        return "<p class='muted'>No photo carries a GPS position in its EXIF, so there is no map.</p>"
    lons, lats = [p[0] for p in pts], [p[1] for p in pts]
    k = math.cos(math.radians(sum(lats) / len(lats)))  # metres per degree of longitude shrink with latitude
    span_x = max((max(lons) - min(lons)) * k, 1e-5)
    span_y = max(max(lats) - min(lats), 1e-5)
    s = min((width - 40) / span_x, (height - 40) / span_y)
    cx, cy = (max(lons) + min(lons)) / 2, (max(lats) + min(lats)) / 2
    metres = span_x * 111_320
    dots = []
    for lon, lat, r in pts:
        x = width / 2 + (lon - cx) * k * s
        y = height / 2 - (lat - cy) * s
        label = html.escape(f"{Path(r['file']).name}: {_grade_text(r)}")
        dots.append(f"<a href='#{_anchor(r)}'><circle cx='{x:.1f}' cy='{y:.1f}' r='7' fill='{_grade_colour(r)}' "
                    f"stroke='#222'><title>{label}</title></circle></a>")
    return (f"<svg viewBox='0 0 {width} {height}' width='{width}' height='{height}' class='map' role='img' "
            f"aria-label='photo positions'><rect width='100%' height='100%' fill='#f4f4f0'/>{''.join(dots)}"
            f"<text x='8' y='{height - 8}' font-size='11' fill='#555'>west-east span about {metres:,.0f} m; "
            f"north is up</text></svg>")


def _anchor(row: dict) -> str:
    import hashlib

    return "p" + hashlib.sha1(str(row["file"]).encode()).hexdigest()[:10]


def _grade_text(row: dict) -> str:
    if row.get("error"):
        return "not measured"
    if not _given(row, "grade"):
        return "not graded (no scale)"
    return f"{str(row['grade']).strip()} · {row.get('grade_name', '')}"


def _confidence_row(row: dict) -> str:
    """The card's row for the model's confidence in the mask (none for results without the column)."""
    if "confidence" not in row:
        return ""
    said = html.escape(str(row.get("note") or ""))
    if low_confidence(row):
        return f"<tr><th>confidence</th><td class='low'><b>low: check it by eye</b>; {said}</td></tr>"
    return f"<tr><th>confidence</th><td>high{'; ' + said if said else ''}</td></tr>"


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return ""
    return f"<img src='data:image/jpeg;base64,{base64.b64encode(data).decode()}' alt='{html.escape(alt)}'>"


def report_html(rows: list[dict], thumbs: dict, meta: dict) -> str:
    """A self-contained HTML report: summary, grade table and source, map, one card per photo, worst first."""
    esc = html.escape
    done = [r for r in rows if not r.get("error")]
    failed = [r for r in rows if r.get("error")]
    counts = {}
    for r in done:
        counts[_grade_text(r)] = counts.get(_grade_text(r), 0) + 1
    scale = meta.get("mm_per_px")
    scale_text = f"{scale:g} mm per pixel" if scale else "none given: lengths and widths in pixels, no grades"
    grade_rows = "".join(
        f"<tr><td><span class='dot' style='background:{GRADE_COLOURS[g.category]}'></span>{g.category}</td>"
        f"<td>{esc(g.name)}</td><td>{'&gt; 25' if math.isinf(g.upper_mm) else f'up to {g.upper_mm:g}'}</td>"
        f"<td>{esc(g.description)}</td></tr>" for g in GRADES)
    cards = []
    for r in done:
        pair = thumbs.get(str(r["file"]), (None, None))
        mm = f"{_number(r.get('max_width_mm')):.2f} mm" if _given(r, "max_width_mm") else ""
        total_mm = (f" ({_number(r.get('total_length_mm')) / 1000:.2f} m)"
                    if _given(r, "total_length_mm") else "")
        where = (f"{r['latitude']}, {r['longitude']}" if _given(r, "latitude")
                 else "no GPS in the photo")
        cards.append(
            f"<section class='card' id='{_anchor(r)}'><h3><span class='dot' style='background:{_grade_colour(r)}'>"
            f"</span>{esc(Path(r['file']).name)}</h3><p class='muted'>{esc(str(r['file']))}</p>"
            f"<div class='pics'>{_img(pair[0], 'damage overlay')}{_img(pair[1], 'crack centre lines by width')}</div>"
            f"<table class='kv'><tr><th>grade</th><td>{esc(_grade_text(r))}</td></tr>"
            f"<tr><th>widest crack</th><td>{_number(r.get('max_width_px'), 0):.1f} px {esc(mm)}</td></tr>"
            f"<tr><th>total crack length</th><td>{_number(r.get('total_length_px'), 0):,.0f} px{esc(total_mm)}</td></tr>"
            f"<tr><th>cracks</th><td>{esc(str(r.get('cracks', '')))} ({esc(str(r.get('pattern', '')))})</td></tr>"
            f"<tr><th>patches (spalling?)</th><td>{esc(str(r.get('patches', '')))}</td></tr>"
            f"<tr><th>damaged pixels</th><td>{_number(r.get('damaged_pct'), 0):.2f}%</td></tr>"
            f"<tr><th>position</th><td>{esc(where)}</td></tr>"
            f"<tr><th>taken</th><td>{esc(str(r.get('taken') or 'not recorded'))}</td></tr>"
            f"<tr><th>files</th><td>{esc(str(r.get('mask', '')))}, {esc(str(r.get('cracks_csv', '')))}</td></tr>"
            f"{_confidence_row(r)}</table></section>")
    failed_html = "".join(f"<li><b>{esc(str(r['file']))}</b>: {esc(str(r['error']))}</li>" for r in failed)
    summary = "; ".join(f"grade {esc(k)}: {n}" if k[0].isdigit() else f"{esc(k)}: {n}"
                        for k, n in sorted(counts.items(), reverse=True)) or "nothing measured"
    interrupted = ("<p class='warn'>The survey was interrupted: photos marked 'not processed' were not "
                   "segmented.</p>" if meta.get("interrupted") else "")
    unsure = [r for r in done if low_confidence(r)]
    check = ("<div class='warn'><b>" + f"{len(unsure)} photo(s) to check by eye</b> before trusting their grade: the "
             "model was unsure of the mask, or the photo is unlike the photos it learned from (its note says which; "
             "a grade read from a doubtful mask may be too low)<ul>"
             + "".join(f"<li><a href='#{_anchor(r)}'>{esc(Path(r['file']).name)}</a>: {esc(str(r.get('note', '')))}</li>"
                       for r in unsure) + "</ul></div>") if unsure else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(meta.get('title', 'Damage survey'))}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }}
.muted {{ color: #666; font-size: 12px; margin: 0; }}
.warn {{ background: #fff3cd; padding: .6em 1em; border-radius: 4px; }}
.low {{ background: #fff3cd; }}
.dot {{ display: inline-block; width: .85em; height: .85em; border-radius: 50%; margin-right: .4em;
        border: 1px solid #333; vertical-align: -1px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }}
.card {{ border-top: 1px solid #ddd; padding: 1em 0; }}
.pics img {{ max-width: 49%; margin-right: 1%; border: 1px solid #ccc; }}
.map {{ border: 1px solid #ccc; max-width: 100%; height: auto; }}
</style></head><body>
<h1>{esc(meta.get('title', 'Damage survey'))}</h1>
<p class="muted">Made {esc(meta.get('made', ''))} with model {esc(str(meta.get('model', '')))}, threshold
{_number(meta.get('threshold'), 0):.3f}; scale: {esc(scale_text)}.</p>
{interrupted}
<p><b>{len(done)} photo(s) measured</b>, {len(failed)} could not be. {summary}.</p>
{check}
<p class="warn">{esc(DISCLAIMER)} Widths are read at the photo's resolution: one pixel is the finest step
{'(' + f'{scale:g} mm' + ')' if scale else ''}, so hairline cracks can read wider than they are.</p>
<h2>Map</h2>
{_map_svg(done)}
<h2>Photos, worst first</h2>
{''.join(cards) or '<p>No photo was measured.</p>'}
{'<h2>Photos that could not be measured</h2><ul>' + failed_html + '</ul>' if failed else ''}
<h2>Grades</h2>
<p>{esc(GRADES_SOURCE)}. Category by the approximate width of the widest crack, in millimetres. The source
weighs more than width (number of cracks, distortion, ease of repair); a grade here is read from width
alone.</p>
<table><tr><th>category</th><th>damage</th><th>crack width (mm)</th><th>typical</th></tr>{grade_rows}</table>
</body></html>
"""
