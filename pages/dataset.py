"""Dataset: summary per split, problems by file, a filterable gallery and one sample opened large."""

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from pages.common import (DATA_DIR, ensure_sample_data, known_datasets, md_code, md_escape, resolve_dataset_path,
                          scan, through_app)
from unet.data import load_pair
from unet.errors import UnetError
from unet.imaging import ImageError, display_name
from unet.predict import overlay

through_app()

PAGE_SIZE = 12

st.title("Dataset")
ensure_sample_data()

with st.expander("Add a dataset from a zip"):
    st.caption("A zip of photos and their masks, in either layout the Dataset page reads (see the README); "
               f"at most {st.get_option('server.maxUploadSize')} MB. It is unpacked into the data folder, checked, "
               "and then listed here for Train and Compare.")
    upload = st.file_uploader("Zip", type=["zip"], key="dataset_zip")
    zip_name = st.text_input("Name", key="dataset_zip_name", max_chars=60,
                             value=Path(upload.name).stem if upload else "")
    if st.button("Add the dataset", key="dataset_zip_add", disabled=upload is None):
        from unet.dataset_zip import unpack_dataset_zip

        try:
            with st.spinner("Unpacking and checking..."):
                dest = unpack_dataset_zip(upload, DATA_DIR, zip_name, zip_name=display_name(b"", upload.name))
        except UnetError as exc:
            st.error(md_escape(exc))
        else:
            scan.clear()
            st.session_state["dataset_choice"] = dest.name
            st.success(f"Added **{md_escape(dest.name)}**.")

datasets = known_datasets()
options = list(datasets) + ["A folder path..."]
if st.session_state.get("dataset_choice") not in options:
    st.session_state.pop("dataset_choice", None)
choice = st.selectbox("Dataset", options, key="dataset_choice")
if choice == "A folder path...":
    typed = st.text_input("Folder (inside data/, or a folder allowed by UNET_DATA_ROOTS)", key="dataset_path",
                          placeholder="walls/2026-site-visit")
    root = None
    if typed:
        try:
            root = resolve_dataset_path(typed)
        except ValueError as exc:
            st.error(md_escape(exc))
else:
    root = datasets[choice]
if root is None:
    st.stop()

try:
    result, stats, stat_problems = scan(str(root))
except ValueError as exc:
    st.error(md_escape(exc))
    st.stop()

st.caption(f"Layout: {result.layout} · {md_code(result.root)}")
df = pd.DataFrame([s.__dict__ for s in stats])
problems = result.problems + stat_problems
if df.empty:
    st.warning("No usable photo/mask pairs in this folder.")
else:
    summary = df.groupby("split").agg(
        photos=("id", "count"),
        sizes=("width", lambda w: ", ".join(sorted({f"{a}x{b}" for a, b in zip(w, df.loc[w.index, "height"])})[:4])),
        mean_damaged_pct=("damaged_pct", "mean"),
        max_damaged_pct=("damaged_pct", "max"),
    ).reset_index().rename(columns={"mean_damaged_pct": "damaged % (mean)", "max_damaged_pct": "damaged % (max)"})
    summary["problems"] = [sum(1 for p in problems if p.path.startswith(s + "/") or s == "all")
                           for s in summary["split"]]
    st.subheader("Summary")
    st.dataframe(summary.round(2), hide_index=True, width="stretch")
    fig = px.histogram(df, x="damaged_pct", color="split", nbins=30, barmode="overlay", opacity=0.7,
                       color_discrete_map={"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c", "all": "#1f77b4"},
                       labels={"damaged_pct": "damaged pixels (%)"}, title="Damaged-pixel share per photo")
    st.plotly_chart(fig, width="stretch")

if problems:
    with st.expander(f"{len(problems)} problem(s) found; those files were skipped", expanded=df.empty):
        st.dataframe(pd.DataFrame([{"file": p.path, "problem": p.message} for p in problems]),
                     hide_index=True, width="stretch")

if df.empty:
    st.stop()

st.subheader("Gallery")
c1, c2, c3, c4 = st.columns([2, 2, 3, 2])
split = c1.selectbox("Split", ["all splits"] + sorted(df["split"].unique()), key="gallery_split")
order = c2.selectbox("Sort by", ["id", "most damaged", "least damaged"], key="gallery_sort")
lo, hi = c3.slider("Damaged % between", 0.0, float(max(1.0, np.ceil(df["damaged_pct"].max()))),
                   (0.0, float(max(1.0, np.ceil(df["damaged_pct"].max())))), key="gallery_range")
show_overlay = c4.toggle("Show masks", value=True, key="gallery_overlay")
view = df if split == "all splits" else df[df["split"] == split]
view = view[(view["damaged_pct"] >= lo) & (view["damaged_pct"] <= hi)]
if order != "id":
    view = view.sort_values("damaged_pct", ascending=order == "least damaged")
pages = max(1, -(-len(view) // PAGE_SIZE))
page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page") if pages > 1 else 1
shown = view.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
by_id = {(s.split, s.id): s for s in result.samples}


@st.cache_data(max_entries=256, show_spinner=False)
def thumbnail(image_path: str, mask_paths: tuple, with_mask: bool, side: int = 256):
    from PIL import Image

    from unet.data import Sample

    image, mask = load_pair(Sample("x", Path(image_path), tuple(Path(m) for m in mask_paths)))
    pic = overlay(image, mask) if with_mask else image
    im = Image.fromarray(pic)
    im.thumbnail((side, side))
    return np.asarray(im)


cols = st.columns(4)
for i, row in enumerate(shown.itertuples()):
    s = by_id[(row.split, row.id)]
    with cols[i % 4]:
        try:
            st.image(thumbnail(str(s.image), tuple(map(str, s.masks)), show_overlay),
                     caption=f"{s.id} · {row.damaged_pct:.2f}%")
        except ImageError as exc:
            st.error(md_escape(exc))
st.caption(f"{len(view)} photo(s) match; showing {len(shown)}.")

st.subheader("One sample, large")
ids = [f"{r.split}/{r.id}" for r in view.itertuples()]
if ids:
    pick = st.selectbox("Sample", ids, key="sample_pick")
    s = by_id[tuple(pick.split("/", 1))]
    try:
        image, mask = load_pair(s)
        a, b, c = st.columns(3)
        # Filling the column: a 224 px patch shown at 224 px is too small to check a hairline crack.
        a.image(image, caption=f"photo · {image.shape[1]}×{image.shape[0]} px", width="stretch")
        b.image(mask.astype(np.uint8) * 255, caption="mask (union of its mask files)", width="stretch")
        c.image(overlay(image, mask), caption=f"overlay · {100 * mask.mean():.2f}% damaged", width="stretch")
    except ImageError as exc:
        st.error(md_escape(exc))
