"""Home: what the studio does, the active model, devices, datasets and latest runs."""

from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import (RUNS_DIR, active_model_path, ensure_sample_data, known_datasets, md_code, md_escape,
                          through_app)
from unet.devices import detect_hardware
from unet.model import BUNDLED_MODELS
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
        from unet.damage_model import ModelCard
        from unet.errors import UnetError

        st.markdown(md_code(Path(path).parent.name + "/" + Path(path).name))
        try:
            card = ModelCard.read(path) or ModelCard()
        except UnetError as exc:  # a damaged card: say so here; Detect refuses the model too
            st.error(md_escape(exc))
        else:
            st.caption(f"preset {card.preset or '?'} · threshold {card.threshold:g} · "
                       f"trained at {card.input_size} px"
                       + (" · each photo seen at its own scale, from the width of its cracks" if card.scale == "auto"
                          else f" · photos seen at {card.scale:g}x their size" if card.scale != 1.0 else ""))
            origin = card.threshold_origin()
            if origin:
                st.caption(md_escape(origin))
            if card.calibration and card.calibration.get("stale"):
                st.warning(md_escape(card.calibration["stale"]))
        others = [label for label, other in BUNDLED_MODELS.items()
                  if other.is_file() and other.resolve() != Path(path).resolve()]
        if others:
            st.caption("Also bundled, in the sidebar's picker: " + "; ".join(md_escape(o) for o in others) + ".")

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
    # The same numbers as the Train page: the model a run keeps is its best epoch's.
    st.dataframe(table[["run", "state", "preset", "epochs", "best val Dice", "error"]], hide_index=True,
                 width="stretch")
