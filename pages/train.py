"""Train: start a background run, watch it live, stop or resume it; all runs with their state.

Training is its own OS process (python -m unet runs start ...); this page only writes
the config and reads the run folder, so closing the tab or restarting the app never
stops a run, and the page re-attaches to it.
"""

import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages.common import (RUNS_DIR, ensure_sample_data, known_datasets, md_escape, model_choices,
                          resolve_dataset_path, through_app)
from unet.config import DEVICES, LOSSES, TrainConfig
from unet.errors import UnetError
from unet.model import PRESETS
from unet.runs import ACTIVE, create_run, launch, list_runs, request_stop, start_waiting

through_app()

RUN_KEY = "train_run"

st.title("Train")
ensure_sample_data()
defaults = TrainConfig()
datasets = known_datasets()

LOSS_LABELS = {"bce_dice": "BCE + Dice (default)", "dice": "Dice", "bce": "BCE (the original recipe)"}


def _params(description: str) -> str:
    """The parameter count from a preset's description ('0.5 M parameters'), short enough for a list."""
    found = re.search(r"([0-9.]+ M) parameters", description)
    return f"{found.group(1)} parameters" if found else description.split(",")[0].split(";")[0][:30]


with st.form("new_run"):
    st.subheader("New run")
    c1, c2, c3 = st.columns(3)
    data_label = c1.selectbox("Dataset", list(datasets) + ["A folder path..."], key="train_data")
    data_path = c1.text_input("Folder (when 'A folder path...')", key="train_data_path")
    preset = c2.selectbox("Model size (preset)", list(PRESETS), index=list(PRESETS).index(defaults.preset),
                          key="train_preset", format_func=lambda k: f"{k} · {_params(PRESETS[k].description)}",
                          help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    size = c3.select_slider("Input size (px)", [64, 96, 128, 192, 256, 320, 384, 512], value=defaults.size,
                            key="train_size")
    loss = c1.selectbox("Loss (what training minimises)", list(LOSSES), key="train_loss",
                        format_func=lambda k: LOSS_LABELS.get(k, k),
                        help="; ".join(f"{k}: {v}" for k, v in LOSSES.items()))
    epochs = c2.number_input("Epochs", 1, 1000, defaults.epochs, key="train_epochs")
    batch = c3.number_input("Batch size", 1, 256, defaults.batch, key="train_batch")
    lr = c1.number_input("Learning rate", 1e-5, 0.1, defaults.learning_rate, format="%.5f", key="train_lr")
    device = c2.selectbox("Device", DEVICES, key="train_device")
    deep = c2.checkbox("Deep supervision", False, key="train_deep",
                       help="While training, the decoder's coarser levels each draw a map of their own, scored "
                            "against the mask too: a direct signal deep into the network. The saved model is the "
                            "plain preset, as fast to predict")
    augment = c3.checkbox("Augmentation", True, key="train_augment",
                          help="Random flips, rotations, crops and brightness changes of the training photos")
    mixed = c3.checkbox("Mixed precision", False, key="train_mixed",
                        help="Faster on hardware made for it: bfloat16 on recent CPUs, float16 on GPUs")
    ema = c3.checkbox("Average the weights (EMA)", False, key="train_ema",
                      help="Validation and the saved model use a moving average of the weights over about "
                           "the last 100 batches (momentum 0.99): steadier than the last batch's weights")
    steps = c1.number_input("Batches per epoch (0 = one pass over the photos)", 0, 10000, 20, key="train_steps",
                            help="Random crops are drawn each batch, so small datasets can use more batches per epoch")
    name = c2.text_input("Run label (optional)", key="train_name", max_chars=40)
    NEW_WEIGHTS = "New weights (train from scratch)"
    starts = {NEW_WEIGHTS: None, **model_choices()}
    start_from = c3.selectbox("Start from", list(starts), key="train_init",
                              help="Fine-tune: start from a trained model's weights (its preset is used) and "
                                   "train on your photos, usually with a lower learning rate such as 0.0005.")
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    root, problem = datasets.get(data_label), None
    if data_label == "A folder path...":
        try:
            root = resolve_dataset_path(data_path or "")
        except ValueError as exc:
            root, problem = None, str(exc)
    if root is None or not root.is_dir():
        st.error(md_escape(problem or f"Dataset folder not found: {data_label}"))
    else:
        try:
            init_from = starts.get(start_from)
            if init_from:
                from unet.damage_model import ModelCard

                card = ModelCard.read(init_from)
                if card is not None and card.preset and card.preset != preset:
                    st.info(f"Preset {md_escape(card.preset)}: the model you start from has that architecture.")
                    preset = card.preset
            cfg = TrainConfig(data=str(root), preset=preset, size=int(size), loss=loss, epochs=int(epochs),
                              batch=int(batch), learning_rate=float(lr), device=device, augment=augment,
                              steps_per_epoch=int(steps) or None, mixed_precision=mixed, name=name,
                              init_from=init_from, ema=0.99 if ema else 0.0, deep_supervision=deep).validate()
            run = create_run(cfg, RUNS_DIR)
            pid = launch(run)
            st.session_state[RUN_KEY] = run.id
            st.success(f"Started run {run.id}." if pid else
                       f"Queued run {run.id}: {md_escape(run.raw_status().get('waiting'))}.")
        except (UnetError, OSError) as exc:
            st.error(f"Could not start the run: {md_escape(exc)}")

start_waiting(RUNS_DIR)  # a queue whose last process was killed moves on
runs = list_runs(RUNS_DIR)
if not runs:
    st.info("No runs yet. Start one with the form above.")
    st.stop()

ids = [r.id for r in runs]
if st.session_state.get(RUN_KEY) not in ids:
    active = [r.id for r in runs if r.status().get("state") in ACTIVE]
    st.session_state[RUN_KEY] = (active or ids)[0]
st.subheader("Run")
run_id = st.selectbox("Watching", ids, key=RUN_KEY)
run = next(r for r in runs if r.id == run_id)


def curves(run) -> go.Figure:
    hist = run.history()
    prog = run.progress()
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Validation metrics"))
    batch = prog.get("batch_losses") or []
    if batch:
        fig.add_trace(go.Scatter(x=[b[0] for b in batch], y=[b[1] for b in batch], mode="lines",
                                 name="training loss (per batch)", line={"width": 1}), 1, 1)
    if hist:
        ep = [h["epoch"] for h in hist]
        fig.add_trace(go.Scatter(x=ep, y=[h.get("loss") for h in hist], mode="lines+markers", name="training loss"), 1, 1)
        if "val_loss" in hist[0]:
            fig.add_trace(go.Scatter(x=ep, y=[h.get("val_loss") for h in hist], mode="lines+markers",
                                     name="validation loss"), 1, 1)
        for key in ("val_dice", "val_iou", "val_precision", "val_recall"):
            if key in hist[0]:
                fig.add_trace(go.Scatter(x=ep, y=[h.get(key) for h in hist], mode="lines+markers",
                                         name=key.replace("val_", "")), 1, 2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=380, margin={"t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig


# TensorFlow's start-up lines on a machine without an NVIDIA GPU: it looks for CUDA, says it
# found none, and reports the failed driver call as an error. Harmless there, alarming to read.
_NO_GPU_NOISE = re.compile(r"All log messages before absl::InitializeLog|cudart_stub\.cc.*Could not find cuda "
                           r"drivers|cuda_platform\.cc.*failed call to cuInit|cuda_executor\.cc.*CUDA_ERROR_NO_DEVICE")


def readable_log(text: str, run, cfg: dict) -> list[str]:
    """The log's lines, without TensorFlow's CUDA probing when the run trains without a GPU
    (kept when it should have one: then they say why it has not). The log file keeps everything."""
    devices = run.environment().get("devices") or []
    wants_gpu = cfg.get("device") == "gpu" or any("GPU" in str(d).upper() for d in devices)
    lines = text.splitlines()
    return lines if wants_gpu else [line for line in lines if not _NO_GPU_NOISE.search(line)]


@st.fragment(run_every=2)
def live_panel():
    status = run.status()
    state = status.get("state", "unknown")
    prog = run.progress()
    cfg = run.config()
    icon = {"running": ":green[:material/play_circle:]", "queued": ":orange[:material/schedule:]",
            "completed": ":green[:material/check_circle:]", "stopped": ":gray[:material/pause_circle:]",
            "failed": ":red[:material/error:]"}.get(state, ":material/help:")
    st.markdown(f"{icon} **{state}** · preset {cfg.get('preset')} · {cfg.get('size')} px · "
                f"loss {cfg.get('loss')} · backend {run.environment().get('backend', cfg.get('backend', '…'))}")
    if status.get("error"):
        st.error(md_escape(status["error"]))
    stalled = run.stalled(status)
    if stalled:
        st.warning(md_escape(stalled))
    if status.get("waiting") and state == "queued":
        st.info(f"Waiting: {md_escape(status['waiting'])}")
    epochs = cfg.get("epochs") if isinstance(cfg.get("epochs"), int) and cfg.get("epochs") > 0 else 1
    if prog:
        done = (prog.get("epoch", 1) - 1 + prog.get("batch", 0) / max(1, prog.get("steps", 1))) / epochs
        eta = prog.get("eta_s")
        eta_text = f" · about {int(eta // 60)} min {int(eta % 60)} s left" if eta and state in ACTIVE else ""
        st.progress(min(1.0, max(0.0, done)),
                    text=f"epoch {prog.get('epoch')}/{epochs} · batch {prog.get('batch')}/{prog.get('steps')} · "
                         f"loss {prog.get('loss', float('nan')):.4f}{eta_text}")
    st.plotly_chart(curves(run), width="stretch", key=f"curves_{run.id}")
    b1, b2, _ = st.columns([1, 1, 4])
    if b1.button("Stop", disabled=state not in ACTIVE, key=f"stop_{run.id}"):
        request_stop(run)
        st.toast("Stop requested: the run ends after its current batch and saves a checkpoint.")
    can_resume = state in ("stopped", "failed") and run.last_checkpoint.exists()
    if b2.button("Resume", disabled=not can_resume, key=f"resume_{run.id}"):
        try:
            launch(run, resume=True)
            st.toast("Resumed from the last checkpoint.")
        except UnetError as exc:
            st.error(md_escape(exc))
    with st.expander("Log (last lines)"):
        st.code("\n".join(readable_log(run.log_tail(40), run, cfg)[-25:]) or "(empty)", language=None)
    # Every run's row is read in the same poll as the panel above, so the two always agree.
    st.subheader("All runs")
    table = pd.DataFrame([r.summary() for r in list_runs(RUNS_DIR)]).drop(columns=["last val Dice"])
    st.dataframe(table, hide_index=True, width="stretch", key="train_all_runs")


live_panel()
