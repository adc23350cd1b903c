"""Compare: trained models on a test split: table, bars, PR curves, per-image spread, disagreements.

Each (model, split) evaluation is computed once and stored on disk (a run's own folder
for run models); this page reads the stored results.
"""

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from pages.common import (RUNS_DIR, ensure_sample_data, get_model, known_datasets, md_escape, model_choices,
                          split_folders, through_app)
from unet.data import load_pair, scan_dataset
from unet.evaluate import evaluate_and_store, results_dir, stored_results
from unet.imaging import ImageError
from unet.errors import UnetError

through_app()

METRICS = ["iou", "dice", "precision", "recall"]

st.title("Compare models")
ensure_sample_data()
choices = model_choices()
if not choices:
    st.info("No trained models yet. Train two runs on the **Train** page, then compare them here.")
    st.stop()

c1, c2, c3 = st.columns([3, 2, 1])
labels = c1.multiselect("Models", list(choices), default=list(choices)[:2], key="compare_models")
datasets = known_datasets()
ds = c2.selectbox("Dataset", list(datasets), key="compare_dataset")
splits = split_folders(datasets[ds]) if ds else {}
split_names = list(splits)
split = c3.selectbox("Split", split_names, index=split_names.index("test") if "test" in split_names else 0,
                     key="compare_split")
if not labels or not split:
    st.stop()
data_dir = splits[split]

results, missing = {}, []
for label in labels:
    stored = stored_results(choices[label], data_dir, RUNS_DIR)
    if stored is None:
        missing.append(label)
    else:
        results[label] = stored

if missing:
    st.write(f"{len(missing)} model(s) not yet evaluated on this split.")
    if st.button(f"Evaluate {len(missing)} model(s)", type="primary", key="compare_run"):
        bar = st.progress(0.0, text="Evaluating...")
        for i, label in enumerate(missing):
            try:
                model = get_model(choices[label])
                n = len(scan_dataset(data_dir).samples) or 1

                def tick(items, i=i, label=label):
                    for j, item in enumerate(items):
                        bar.progress(min(1.0, (i + j / n) / len(missing)), text=f"Evaluating {label}...")
                        yield item

                results[label] = evaluate_and_store(model, choices[label], data_dir, RUNS_DIR, progress=tick)
            except UnetError as exc:
                st.error(f"{md_escape(label)}: {md_escape(exc)}")
        bar.empty()
        st.rerun()
if not results:
    st.stop()

# --- table -------------------------------------------------------------------------
table = pd.DataFrame([
    {"model": label, **{m: r[m] for m in METRICS}, "threshold": r["threshold"], "best F1": r["best_f1"],
     "at threshold": r["best_threshold"], "images": r["n_images"]}
    for label, r in results.items()
])
st.subheader(f"Pixel metrics on {md_escape(ds)} / {split} ({int(table['images'].max())} photos)")
st.dataframe(table.style.highlight_max(subset=METRICS + ["best F1"], color="#c6efce").format(precision=4),
             hide_index=True, width="stretch")
best = table.loc[table["dice"].idxmax(), "model"]
st.caption(f"Best Dice (F1): **{md_escape(best)}** (highlighted: the best value of each column).")

long = table.melt(id_vars="model", value_vars=METRICS, var_name="metric", value_name="value")
left, right = st.columns(2)
BOTTOM_LEGEND = {"orientation": "h", "yanchor": "top", "y": -0.2, "title": None}
bars = px.bar(long, x="metric", y="value", color="model", barmode="group", range_y=[0, 1],
              title="Metrics at each model's threshold")
bars.update_layout(legend=BOTTOM_LEGEND)
left.plotly_chart(bars, width="stretch")
pr = go.Figure()
for label, r in results.items():
    curve = pd.DataFrame(r["pr_curve"]).astype(float)
    curve = curve[curve["threshold"] > 0]
    pr.add_trace(go.Scatter(x=curve["recall"], y=curve["precision"], mode="lines", name=label,
                            hovertext=[f"threshold {t:.3f}" for t in curve["threshold"]]))
pr.update_layout(title="Precision-recall (threshold sweep)", xaxis_title="recall", yaxis_title="precision",
                 xaxis_range=[0, 1], yaxis_range=[0, 1.02], legend=BOTTOM_LEGEND)
right.plotly_chart(pr, width="stretch")

per = pd.concat([pd.DataFrame(r["per_image"]).assign(model=label) for label, r in results.items()])
for m in METRICS + ["true_pct", "pred_pct"]:
    per[m] = per[m].astype(float)
metric = st.selectbox("Per-image metric", METRICS, index=1, key="compare_metric")
st.plotly_chart(px.box(per, x="model", y=metric, points="all", hover_data=["id"],
                       title=f"Per-image {metric} (one dot per photo)"), width="stretch")

# --- side by side --------------------------------------------------------------------
st.subheader("Photo by photo")


def pred_mask(label: str, sample_id: str) -> np.ndarray | None:
    p = results_dir(choices[label], data_dir, RUNS_DIR) / "pred" / f"{sample_id}.png"
    return np.asarray(Image.open(p)) > 0 if p.is_file() else None


samples = {s.id: s for s in scan_dataset(data_dir).samples}
ids = sorted(set(per["id"]))
scores = per.pivot_table(index="id", columns="model", values="dice")
disagreement = {}
for sid in ids:
    masks = [m for m in (pred_mask(label, sid) for label in results) if m is not None]
    pairs = [(a, b) for i, a in enumerate(masks) for b in masks[i + 1:] if a.shape == b.shape]
    disagreement[sid] = float(np.mean([1 - ((a & b).sum() / max(1, (a | b).sum())) for a, b in pairs])) if pairs else 0.0
order = st.radio("Order", ["models disagree most", "lowest mean Dice", "name"], horizontal=True, key="compare_order")
if order == "models disagree most":
    ids.sort(key=lambda s: -disagreement[s])
elif order == "lowest mean Dice":
    ids.sort(key=lambda s: scores.loc[s].mean())
n = st.slider("Photos shown", 1, max(1, len(ids)), min(4, len(ids)), key="compare_n") if len(ids) > 1 else 1
for sid in ids[:n]:
    s = samples.get(sid)
    if s is None:
        continue
    try:
        image, truth = load_pair(s)
    except ImageError as exc:
        st.error(md_escape(exc))
        continue
    cols = st.columns(2 + len(results))
    cols[0].image(image, caption=f"{sid} · disagreement {disagreement[sid]:.2f}")
    cols[1].image(truth.astype(np.uint8) * 255, caption=f"ground truth · {100 * truth.mean():.2f}%")
    for col, label in zip(cols[2:], results):
        m = pred_mask(label, sid)
        if m is not None:
            col.image(m.astype(np.uint8) * 255, caption=f"{label[:40]} · Dice {scores.loc[sid, label]:.3f}")
