"""Detect: drop photos, see original | mask | overlay | heat map with the damaged-pixel share.

Photos are segmented once per (photo, model), the mask at their own resolution (large
ones in overlapping tiles); moving the threshold only re-thresholds the stored probabilities.
Uploaded names are only shown (escaped), never used as paths.
"""

import hashlib
import io
from collections import ChainMap
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from pages.common import (SAMPLE_DIR, PhotoCache, active_model_path, ensure_sample_data, get_model, md_escape, measurement_panel,
                          mm_per_px_for, photo_cache, safe_file_name, scale_input, through_app)
from unet.cracks import measure, width_picture
from unet.errors import ConfigError
from unet.imaging import UPLOAD_TYPES, ImageError, display_name, encode_png, read_image
from unet.model import AUTO, ModelError
from unet.predict import confidence, doubt, heatmap, noise_robust_would_help, overlay, scale_hint, seen_scales, view_note

through_app()

PREVIEW = 640  # longest side shown on the page; downloads keep full resolution
CACHE_KEY = "detect_results"  # this session's views of each photo (previews, mask at its threshold)
SEEN_KEY = "detect_seen"  # photos this session had segmented (to say so when one was dropped)
SESSION_VIEWS = 24  # photos whose previews a session keeps (a few MB each)
# The page's photo limit, below the command line's 100 MP: a 1-bit PNG of a few KB can
# declare 100 MP, which would take the server several GB per upload.
APP_MAX_PIXELS = int(float(os.environ.get("UNET_APP_MAX_MP", "60")) * 1e6)

st.title("Detect damage")
st.write("Drop one or more photos. Each mask comes back at the photo's own resolution; large photos are "
         "processed in overlapping tiles, never squashed to the model's input size.")

model_path = active_model_path()
if model_path is None:
    st.info("No trained model yet. Start a run on the **Train** page; its model appears in the sidebar picker.")
    st.stop()
try:
    model = get_model(model_path)
except ModelError as exc:
    st.error(f"The chosen model cannot be used: {md_escape(exc)}")
    st.stop()

# Each model brings its own threshold: a new model choice resets the slider to its card's.
if st.session_state.get("detect_threshold_model") != (model_path, model.threshold):
    st.session_state["detect_threshold_model"] = (model_path, model.threshold)
    st.session_state["detect_threshold"] = min(0.95, max(0.05, float(round(model.threshold, 2))))
threshold = st.slider("Damage threshold (probability at which a pixel counts as damaged)", 0.05, 0.95,
                      step=0.01, key="detect_threshold")
flips = st.toggle("Careful mode: also segment each photo's mirror images and average (4x the time, "
                  "slightly more accurate)", key="detect_flips")
PHOTO_SCALES = {"the model's own": None, "automatic (from the cracks' width)": AUTO, "1 (as taken)": 1.0, "0.5": 0.5,
                "0.25": 0.25, "0.125": 0.125}
photo_scale_label = st.selectbox(
    "Photo scale: resize the photo before the model sees it (the mask keeps the photo's size)", list(PHOTO_SCALES),
    key="detect_photo_scale",
    help="The model learned from photos 224-544 px across, whose cracks are 2-12 px wide. A phone photo of a wall "
         "is many times that: wide cracks can then be missed or drawn thin. Automatic (the bundled model's own) "
         "looks at the photo small first and shrinks it until its cracks are as wide as those the model learned "
         "from; a photo of hairlines is seen as taken. Below 1 the model sees more of the wall per tile (and runs "
         "faster); it can lose hairline cracks.")
photo_scale = model.scale if PHOTO_SCALES[photo_scale_label] is None else PHOTO_SCALES[photo_scale_label]
scale_mode, scale_value = scale_input("detect")
uploads = st.file_uploader("Photos", type=UPLOAD_TYPES, accept_multiple_files=True, key="detect_upload")
# Upload names are only ever shown (base name, escaped); they never become paths.
files: list[tuple[str, bytes]] = [(display_name(b"", u.name), u.getvalue()) for u in uploads or []]
if st.button("Try a sample photo", key="detect_sample"):
    st.session_state["detect_sample_on"] = True
if st.session_state.get("detect_sample_on"):
    ensure_sample_data()
    sample = sorted((SAMPLE_DIR / "test").glob("*/images/*.png"))[:1]
    files += [(p.name, p.read_bytes()) for p in sample]
if not files:
    st.stop()

store = photo_cache()  # pixels and probability maps, shared by all sessions, bounded in bytes
cache: dict = st.session_state.setdefault(CACHE_KEY, {})
seen: set = st.session_state.setdefault(SEEN_KEY, set())
CANCELLED_KEY = "detect_cancelled"


def key_of(data: bytes) -> tuple:
    return (hashlib.sha1(data).hexdigest(), model_path, photo_scale, flips)


# Photos still to segment can be cancelled: the click reruns the page, which stops the work
# in progress after its current row of tiles; the photos not done wait for "Segment them".
keys = [key_of(data) for _, data in files]
pending = [k for k in keys if k not in store]
cancelled: set = st.session_state.setdefault(CANCELLED_KEY, set())
if pending and not set(pending) <= cancelled:
    # Said at once, before any photo is decoded: the drop was received, and what is coming.
    names = [name for (name, _), k in zip(files, keys) if k in pending and k not in cancelled]
    slot = st.empty()
    left, right = slot.container().columns([5, 1])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    left.caption(f"Segmenting {md_escape(', '.join(names[:3]))}{more}: each photo's progress shows in its own "
                 "box below.")
    if right.button("Cancel", key="detect_cancel", help="Stop segmenting; the photos already done stay."):
        cancelled.update(pending)
        slot.empty()
if pending and set(pending) <= cancelled:
    st.info(f"Cancelled: {len(pending)} photo(s) not segmented.")
    if st.button("Segment them", key="detect_resume", type="primary"):
        cancelled.difference_update(pending)
        st.rerun()


def _clock(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def result(name: str, data: bytes, key: tuple, where) -> ChainMap | None:
    """This photo's entry for this model and mode: this session's views, over the shared image,
    probability and the seconds the model took (computed once); None when its segmenting was cancelled."""
    item = store.get(key)
    if item is None:
        if key in cancelled:
            return None
        if key in seen:
            where.caption(f"Segmented again: the app keeps at most {PhotoCache.budget() / 2**20:,.0f} MB of "
                          "results for all its users, and this photo's had been dropped.")
        bar = where.progress(0.0, text=f"Reading {name}...")  # the first sign of work, before decoding
        image = read_image(data, name=name, max_pixels=APP_MAX_PIXELS)
        h, w = image.shape[:2]
        bar.progress(0.0, text=f"Segmenting {name} ({w}×{h} px)...")
        start = last = time.perf_counter()

        def tick(fraction: float) -> None:
            # At most one update a second: each one is redrawn by the browser, which shares the CPU
            # with the model on a small machine.
            nonlocal last
            now = time.perf_counter()
            if now - last < 1.0 or now - start < 2.0 or fraction >= 1:  # a short photo needs no bar moving
                return
            last = now
            left = f" · about {_clock((now - start) / fraction * (1 - fraction))} left" if fraction > 0 else ""
            bar.progress(min(1.0, fraction), text=f"Segmenting {name}: {100 * fraction:.0f}%{left}")

        prob, seen_scale = model.scaled_probability(image, flips=flips, scale=photo_scale, progress=tick)
        prob = prob.astype(np.float16)  # half the memory
        seconds = time.perf_counter() - start
        bar.empty()
        item = {"image": image, "prob": prob, "seconds": seconds, "scale": seen_scale,
                "view": view_note(image, seen_scales(seen_scale, photo_scale))}
        store.put(key, item)
        seen.add(key)
        cache.pop(key, None)  # views of an earlier copy are out of date
    entry = cache.pop(key, None) or {}
    cache[key] = entry  # the newest last
    while len(cache) > SESSION_VIEWS:
        cache.pop(next(iter(cache)))
    # This session's views first, then the shared pixels and map (read, never held: the store may drop them).
    return ChainMap(entry, item)


def shrink(arr: np.ndarray) -> np.ndarray:
    """Downscale for display only; BOX averaging keeps thin cracks visible (as grey in masks)."""
    h, w = arr.shape[:2]
    if max(h, w) <= PREVIEW:
        return arr
    if arr.dtype == np.float16:  # Pillow has no half floats
        arr = arr.astype(np.float32)
    scale = PREVIEW / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.BOX))  # float32 maps become mode "F"


def jpeg(arr: np.ndarray) -> bytes:
    """Preview bytes, encoded here once (Streamlit passes bytes through without re-encoding)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def views(entry: dict, threshold: float) -> dict:
    """Everything shown for one photo at one threshold, computed once and kept.

    The original and the heat map do not depend on the threshold; the percentage, mask
    and overlay are kept for the last threshold. A rerun that changes nothing for this
    photo (another photo dropped, a download clicked) redraws it from bytes alone.
    """
    if "original" not in entry:
        entry["small_image"], entry["small_prob"] = shrink(entry["image"]), shrink(entry["prob"])
        entry["original"] = jpeg(entry["small_image"])
        entry["heat"] = jpeg(heatmap(entry["small_prob"]))
    if entry.get("threshold") != threshold:
        mask = entry["prob"] >= threshold
        entry.update(threshold=threshold, pct=100.0 * float(mask.mean()), doubt=doubt(entry["prob"], threshold),
                     mask_view=encode_png(shrink((mask * 255).astype(np.uint8))),
                     overlay_view=jpeg(overlay(entry["small_image"], entry["small_prob"] >= threshold)))
    return entry


INSPECT_SIDE = 2048  # the zoomable views' longest side (a 12 MP photo at half size; small photos at their own)


def _data_uri(arr: np.ndarray) -> str:
    import base64

    return "data:image/jpeg;base64," + base64.b64encode(jpeg(arr)).decode()


def inspect_figure(entry: dict, threshold: float, opacity: float):
    """Photo | overlay | probability, large, with one zoom and pan for all three (shared axes, in the
    photo's own pixel coordinates)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    image, prob = entry["image"], entry["prob"]
    h, w = prob.shape
    f = min(1.0, INSPECT_SIDE / max(h, w))
    if entry.get("inspect_f") != f:
        # Threshold-free, so kept with the shared photo (and counted in the app's memory budget).
        size = (max(1, round(w * f)), max(1, round(h * f)))
        small_prob = np.asarray(Image.fromarray(prob.astype(np.float32)).resize(size, Image.BOX))
        entry.maps[1].update(inspect_f=f, inspect_image=np.asarray(Image.fromarray(image).resize(size, Image.BOX)),
                             inspect_prob=small_prob.astype(np.float16))
    small, small_prob = entry["inspect_image"], entry["inspect_prob"]
    fig = make_subplots(rows=1, cols=3, shared_xaxes="all", shared_yaxes="all", horizontal_spacing=0.01,
                        subplot_titles=("photo", f"damage at {threshold:.2f}, opacity {opacity:.0%}",
                                        "probability"))
    views = [small, overlay(small, small_prob >= threshold, alpha=opacity), heatmap(small_prob.astype(np.float32))]
    for col, view in enumerate(views, start=1):
        fig.add_trace(go.Image(source=_data_uri(view), x0=0, y0=0, dx=1 / f, dy=1 / f,
                               hovertemplate="x %{x:.0f}, y %{y:.0f}<extra></extra>"), 1, col)
    fig.update_xaxes(showticklabels=False, range=[0, w])
    fig.update_yaxes(showticklabels=False, range=[h, 0], scaleanchor="x")
    fig.update_layout(height=520, margin=dict(l=0, r=0, t=30, b=0), dragmode="pan")
    return fig


def measured(entry: dict, threshold: float) -> tuple:
    """The photo's cracks at this threshold (in pixels), and their centre-line picture, computed once."""
    if entry.get("measured_at") != threshold:
        with st.spinner("Measuring the cracks..."):
            m = measure(entry["prob"] >= threshold)
            h, w = m.shape
            picture = width_picture(entry["image"], m, thickness=max(1, round(1.5 * max(h, w) / PREVIEW)))
        entry.update(measured_at=threshold, measurement=m, width_view=jpeg(shrink(picture)))
    return entry["measurement"], entry["width_view"]


rows = []
for i, ((name, data), key) in enumerate(zip(files, keys)):
    safe = md_escape(name)
    box = st.container(border=True)
    try:
        found = result(name, data, key, box)
        if found is None:
            box.markdown(f"**{safe}** · not segmented (cancelled)")
            rows.append({"file": name, "damaged_pct": None, "width": None, "height": None, "error": "cancelled"})
            continue
        entry = views(found, threshold)
    except ImageError as exc:
        box.error(f"**{safe}**: {md_escape(exc.problem)}")
        rows.append({"file": name, "damaged_pct": None, "width": None, "height": None, "error": exc.problem})
        continue
    image, prob, pct, seen_scale = entry["image"], entry["prob"], entry["pct"], entry["scale"]
    h, w = prob.shape
    chosen = " (automatic)" if photo_scale == AUTO else ""
    box.markdown(f"**{safe}** · {w}×{h} px · **{pct:.2f}% damaged** at threshold {threshold:.2f} · "
                 f"segmented in {entry['seconds']:.2f} s{' (careful mode)' if flips else ''}"
                 f"{f' · seen at scale {seen_scale:g}{chosen}' if seen_scale != 1 or chosen else ''}")
    hint = "" if photo_scale == AUTO else scale_hint((h, w), seen_scale)
    if hint:
        box.warning(f"Large photo: {md_escape(hint)} (*Photo scale* above).")
    view_said, retake = entry["view"]  # what the exposure, noise and focus rules did for the model
    if view_said:
        other = (" The bundled noise-robust model (sidebar) usually keeps more of the cracks of dim or grainy photos, "
                 "above all on brick." if noise_robust_would_help(model_path, view_said) else "")
        (box.warning if retake else box.info)(f"Photo: {md_escape(view_said)}.{other}")
    unsure = entry["doubt"]
    if unsure:
        box.warning(f"Check this mask by eye: the model is {md_escape(unsure)}.")
    # Previews are downscaled and encoded once per photo (mask and overlay once per
    # threshold); the full-resolution PNGs are encoded only when a download is clicked.
    c1, c2, c3, c4 = box.columns(4)
    c1.image(entry["original"], caption="original")
    c2.image(entry["mask_view"], caption="damage mask")
    c3.image(entry["overlay_view"], caption=f"overlay · {pct:.2f}% damaged")
    c4.image(entry["heat"], caption="probability (dark = intact, yellow = damaged)")
    stem = safe_file_name(Path(name).stem)
    d1, d2, _ = box.columns([1, 1, 2])
    d1.download_button("Mask PNG", lambda p=prob, t=threshold: encode_png(p >= t), file_name=f"{stem}_mask.png",
                       mime="image/png", key=f"dl_mask_{i}", on_click="ignore")
    d2.download_button("Overlay PNG", lambda im=image, p=prob, t=threshold: encode_png(overlay(im, p >= t)),
                       file_name=f"{stem}_overlay.png", mime="image/png", key=f"dl_overlay_{i}", on_click="ignore")
    if box.toggle("Inspect up close: zoom and pan the photo, overlay and probability together", key=f"inspect_{i}"):
        opacity = box.slider("Overlay opacity (0 = the photo, 1 = the mask)", 0.0, 1.0, 0.55, 0.05,
                             key=f"inspect_opacity_{i}")
        box.plotly_chart(inspect_figure(entry, threshold, opacity), key=f"inspect_fig_{i}",
                         config={"scrollZoom": True, "displaylogo": False})
        box.caption("Scroll to zoom, drag to pan, double-click to see the whole photo; the three views move "
                    "together." + (f" Shown at {entry['inspect_f']:.0%} of the photo's size; the mask download "
                                   "is full size." if entry["inspect_f"] < 1 else ""))
    # Measured after the pictures are on their way to the browser: the result shows first.
    try:
        mm_per_px = mm_per_px_for(scale_mode, scale_value, w)
        scale_problem = None
    except ConfigError as exc:
        mm_per_px, scale_problem = None, str(exc)
    m, width_view = measured(entry, threshold)
    m = m.with_scale(mm_per_px)
    summary = m.summary()
    rows.append({"file": name, "damaged_pct": round(pct, 4), "width": w, "height": h, "error": "",
                 "photo scale": seen_scale, "confidence": confidence(unsure, retake),
                 "cracks": summary["cracks"], "max_width_px": summary["max_width_px"],
                 "total_length_px": summary["total_length_px"], "pattern": summary["pattern"],
                 "mm_per_px": mm_per_px, "max_width_mm": summary.get("max_width_mm"),
                 "grade": m.grade.label if m.grade else "not graded"})
    if scale_problem:
        box.error(f"Scale: {md_escape(scale_problem)}. The cracks are shown in pixels, not graded.")
    measurement_panel(box.expander("Measurements: grade, widest crack, length", expanded=True), m, width_view,
                      key=f"measure_{i}", stem=stem)

table = pd.DataFrame(rows)
for column in ("width", "height", "cracks"):  # whole numbers, also beside a photo that failed ("544", not "544.0")
    if column in table:
        table[column] = table[column].astype("Int64")
table.insert(2, "threshold", threshold)
table["careful mode"] = flips
table["model"] = Path(model_path).parent.name + "/" + Path(model_path).name
st.subheader("All results")
st.dataframe(table, hide_index=True, width="stretch")
buf = io.StringIO()
table.to_csv(buf, index=False)
st.download_button("Results CSV", buf.getvalue(), file_name="damage_results.csv", mime="text/csv", key="dl_csv")
