"""Compare: trained models on a test split: table, bars, PR curves, per-image spread, disagreements.

Each (model, split) evaluation is computed once and stored on disk (a run's own folder
for run models); this page reads the stored results.
"""

import os

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from pages.common import (RUNS_DIR, ensure_sample_data, get_model, known_datasets, md_escape, model_choices,
                          split_folders, through_app)
from unet.data import load_pair, scan_dataset
from unet.evaluate import compare_rows, evaluate_and_store, results_dir, stored_results
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
NAMES = {"iou": "IoU", "dice": "Dice (F1)", "precision": "precision", "recall": "recall"}


def _interval(r: dict) -> str:
    iv = r.get("dice_interval")
    return f"{iv[0]:.3f}-{iv[1]:.3f}" if iv else "-"


table = pd.DataFrame([
    {"model": label, **{NAMES[m]: r[m] for m in METRICS}, "F1 90% interval": _interval(r), "threshold": r["threshold"],
     "best possible F1": r["best_f1"], "reached at threshold": r["best_threshold"], "photos": r["n_images"],
     "source photos": r.get("sources")}
    for label, r in results.items()
])
st.subheader(f"Pixel metrics on {md_escape(ds)} / {split} ({int(table['photos'].max())} photos)")
shown = [NAMES[m] for m in METRICS]
st.dataframe(table.style.highlight_max(subset=shown + ["best possible F1"], color="#c6efce").format(precision=4),
             hide_index=True, width="stretch")
best = table.loc[table["Dice (F1)"].idxmax(), "model"]
st.caption(f"Each model at its own threshold (its card's). Highest Dice (F1) there: **{md_escape(best)}**. "
           "*Best possible F1* is what the model would score at the threshold that suits this split best "
           "(*reached at threshold*): a hint that a calibration would help, not a fair score. Highlighted: the "
           "best value of each column.")

# --- is the difference real? ---------------------------------------------------------
# Patches cut from one photo share its cracks and light: a split is worth its source photos, not its patches.
others = [label for label in results if label != best]
pairs = {label: compare_rows(results[label]["per_image"], results[best]["per_image"]) for label in others}
if any(pairs.values()):
    st.markdown(f"**Can this split tell the models apart?** Each against **{md_escape(best)}**, the source "
                "photos resampled together (a photo's patches and crops count as one; 2,000 resamples):")
    st.dataframe(pd.DataFrame([
        {"model": label, "F1 difference": d["difference"], "90% interval": f"{d['low']:+.3f} to {d['high']:+.3f}",
         "ahead in": f"{100 * d['ahead']:.0f}% of resamples",
         "verdict": d["verdict"]}
        for label, d in pairs.items() if d]).style.format({"F1 difference": "{:+.4f}"}), hide_index=True,
        width="stretch")
    st.caption("*F1 90% interval* (table above): where the model's F1 would fall on other photos like these. "
               "A difference whose interval holds 0 is within what another choice of photos would change: "
               "do not pick a model on it; evaluate on more source photos (another split, or folds).")

long = table.melt(id_vars="model", value_vars=shown, var_name="metric", value_name="value")
# The F1 bars carry their 90% interval (none where the split has too few source photos).
interval = {label: r.get("dice_interval") for label, r in results.items()}
shows = [metric == NAMES["dice"] and interval[m] is not None for m, metric in zip(long["model"], long["metric"])]
long["above"] = [interval[m][1] - v if ok else np.nan for m, v, ok in zip(long["model"], long["value"], shows)]
long["below"] = [v - interval[m][0] if ok else np.nan for m, v, ok in zip(long["model"], long["value"], shows)]
left, right = st.columns(2)
BOTTOM_LEGEND = {"orientation": "h", "yanchor": "top", "y": -0.2, "title": None}
bars = px.bar(long, x="metric", y="value", color="model", barmode="group", range_y=[0, 1],
              error_y="above", error_y_minus="below", title="Metrics at each model's threshold (F1: its 90% interval)")
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
metric = st.selectbox("Per-image metric", METRICS, index=1, key="compare_metric", format_func=NAMES.get)
st.plotly_chart(px.box(per, x="model", y=metric, points="all", hover_data=["id"],
                       labels={metric: NAMES[metric]},
                       title=f"Per-image {NAMES[metric]} (one dot per photo)"), width="stretch")

# --- side by side --------------------------------------------------------------------
st.subheader("Photo by photo")


def pred_mask(label: str, sample_id: str) -> np.ndarray | None:
    p = results_dir(choices[label], data_dir, RUNS_DIR) / "pred" / f"{sample_id}.png"
    return np.asarray(Image.open(p)) > 0 if p.is_file() else None


def _disagreement(masks: list[np.ndarray]) -> float:
    """Mean 1 - IoU over pairs of masks; two empty masks agree (they both found nothing)."""
    pairs = [(a, b) for i, a in enumerate(masks) for b in masks[i + 1:] if a.shape == b.shape]
    if not pairs:
        return 0.0
    return float(np.mean([1 - (a & b).sum() / (a | b).sum() if (a | b).any() else 0.0 for a, b in pairs]))


@st.cache_data(max_entries=8, show_spinner="Comparing the masks photo by photo...")
def disagreements(pred_dirs: tuple[str, ...], ids: tuple[str, ...], keys: tuple) -> dict[str, float]:
    """Per photo, how much the models' stored masks differ; decoded once per set of stored results
    (``keys`` changes when any of them is evaluated again)."""
    out = {}
    for sid in ids:
        masks = [np.asarray(Image.open(p)) > 0 for p in (f"{d}/{sid}.png" for d in pred_dirs)
                 if os.path.isfile(p)]
        out[sid] = _disagreement(masks)
    return out


samples = {s.id: s for s in scan_dataset(data_dir).samples}
ids = sorted(set(per["id"]))
scores = per.pivot_table(index="id", columns="model", values="dice")
disagreement = disagreements(tuple(str(results_dir(choices[label], data_dir, RUNS_DIR) / "pred") for label in results),
                             tuple(ids), tuple(r.get("key") for r in results.values()))
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
    st.caption(f"{md_escape(sid)}: the models disagree on {100 * disagreement[sid]:.0f}% of the pixels either "
               "marks as damaged")
    cols = st.columns(2 + len(results))
    cols[0].image(image, caption=sid)
    cols[1].image(truth.astype(np.uint8) * 255, caption=f"ground truth · {100 * truth.mean():.2f}%")
    for col, label in zip(cols[2:], results):
        m = pred_mask(label, sid)
        if m is not None:
            col.image(m.astype(np.uint8) * 255, caption=f"{label[:40]} · Dice {scores.loc[sid, label]:.3f}")
