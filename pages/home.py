"""Home: what the studio does, the active model, devices, datasets and latest runs."""

import json

import pandas as pd
import streamlit as st

from pages.common import (RUNS_DIR, active_model_path, ensure_sample_data, known_datasets, md_code, md_escape,
                          through_app)
from unet.devices import detect_hardware
from unet.runs import list_runs

through_app()

st.title("Damage segmentation studio")
st.write(
    "Finds damaged pixels (cracks, spalling) in photos of walls, columns and façades with a U-Net. "
    "Browse a dataset, train a model on it, drop in new photos to see the damage, and compare models on a test set."
)

ensure_sample_data()
left, mid, right = st.columns(3)

with left:
    st.subheader("Active model")
    path = active_model_path()
    if path is None:
        st.info("No trained model yet: start a run on the **Train** page.")
    else:
        from pathlib import Path

        side = Path(path).with_suffix(".json")
        info = json.loads(side.read_text()) if side.is_file() else {}
        st.markdown(md_code(Path(path).parent.name + "/" + Path(path).name))
        scale = info.get("scale", 1.0)
        st.caption(f"preset {info.get('preset', '?')} · threshold {info.get('threshold', 0.5)} · "
                   f"trained at {info.get('input_size', '?')} px"
                   + (f" · photos seen at {scale:g}x their size" if scale != 1.0 else ""))

with mid:
    st.subheader("Compute devices")
    for d in detect_hardware():
        st.markdown(f"**{d['kind']}** · {md_escape(d['name'])}")

with right:
    st.subheader("Datasets")
    for name, root in known_datasets().items():
        st.markdown(f"**{md_escape(name)}** · {md_code(root)}")

st.subheader("Latest runs")
runs = list_runs(RUNS_DIR)[:10]
if not runs:
    st.caption("No training runs yet.")
else:
    table = pd.DataFrame([r.summary() for r in runs])
    st.dataframe(table[["run", "state", "preset", "epochs", "last val Dice", "error"]], hide_index=True,
                 width="stretch")
