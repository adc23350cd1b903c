"""What every page shares: folders, the sidebar model picker, cached models and scans.

Not a page itself (streamlit_app.py lists the pages). Keras is imported only inside
:func:`get_model`, so pages that show no model paint without waiting for TensorFlow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import streamlit as st

from unet.runs import default_runs_dir

ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = default_runs_dir()
DATA_DIR = Path(os.environ.get("UNET_DATA_DIR", ROOT / "data"))
SAMPLE_DIR = DATA_DIR / "sample"
MODEL_KEY = "model_choice"
MODEL_PATH_KEY = "model_path"  # the picker's file, set once per rerun by the sidebar

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def through_app() -> None:
    """Make sure the app's entry point runs before this page (call first on every page).

    The one workaround for Streamlit's legacy multipage mode (``PagesManager.
    uses_pages_directory``, Streamlit 1.67): a ``pages/`` folder beside the entry point
    (the layout this product keeps) makes Streamlit, until ``st.navigation`` has run once
    in the server process, run a directly opened page URL (a bookmark, after a restart) as
    a file on its own (``script_runner._mpa_v1``), with every file of the folder in the
    sidebar and no model picker. Leave that mode and rerun: the entry point then runs, and
    its navigation opens this page. Only a session the entry point has never run for needs
    it (AppTest, which re-creates the legacy mode on every run, has run the entry point
    first). ``tests/test_app.py::test_legacy_pages_mode_still_exists`` fails when a
    Streamlit upgrade drops that mode: then delete this function and its calls.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and MODEL_PATH_KEY not in st.session_state:
        PagesManager.uses_pages_directory = False
        st.rerun()


def md_escape(text: object) -> str:
    """Text from file names shown literally in markdown (no formatting, no HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def md_code(text: object) -> str:
    """Text shown as inline code: escapes do not apply inside backticks, so backticks are removed."""
    return "`" + str(text).replace("`", "'") + "`"


def ensure_sample_data() -> Path:
    """The generated sample dataset, made on first use (deterministic, a few seconds)."""
    if not (SAMPLE_DIR / "dataset.json").is_file():
        from unet.synthetic import write_sample_dataset

        with st.spinner("Generating the offline sample dataset..."):
            write_sample_dataset(SAMPLE_DIR, count=48, seed=0)
    return SAMPLE_DIR


def allowed_data_roots() -> list[Path]:
    """Folders a typed dataset path may point into: data/ plus UNET_DATA_ROOTS (os.pathsep-separated)."""
    extra = [Path(p) for p in os.environ.get("UNET_DATA_ROOTS", "").split(os.pathsep) if p]
    return [p.expanduser().resolve() for p in [DATA_DIR, *extra]]


def resolve_dataset_path(typed: str) -> Path:
    """A typed dataset folder, confined to :func:`allowed_data_roots` (``..`` and symlinks resolved first).

    Raises:
        ValueError: the path leads outside every allowed folder, or is not a folder.
    """
    raw = Path(typed.strip()).expanduser()
    roots = allowed_data_roots()
    try:
        path = (raw if raw.is_absolute() else DATA_DIR / raw).resolve()
        is_dir = path.is_dir()
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise ValueError(f"{typed[:80]}{'...' if len(typed) > 80 else ''}: not a usable folder path "
                         f"({exc.strerror})") from None
    if not any(path == r or path.is_relative_to(r) for r in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ValueError(f"{typed}: datasets must be inside {allowed}. To allow another folder, start the app with "
                         f"UNET_DATA_ROOTS set to it (UNET_DATA_ROOTS=/path/to/photos make run; several separated "
                         f"by '{os.pathsep}'), or add the dataset as a zip on the Dataset page")
    if not is_dir:
        raise ValueError(f"{typed}: no such dataset folder")
    return path


def safe_file_name(name: str, default: str = "photo") -> str:
    """A download name made only of letters, digits, '.', '_' and '-' (no path, no markup)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name).replace("\\", "/")).name).strip("._")
    return stem[:80] or default


def known_datasets() -> dict[str, Path]:
    """Dataset folders under data/ (the generated sample first)."""
    found: dict[str, Path] = {}
    if SAMPLE_DIR.is_dir():
        found["sample (generated)"] = SAMPLE_DIR
    if DATA_DIR.is_dir():
        for p in sorted(DATA_DIR.iterdir()):
            if p.is_dir() and p != SAMPLE_DIR and not p.name.startswith("."):
                found[p.name] = p
    return found


def split_folders(root: Path) -> dict[str, Path]:
    """The split folders of a dataset (or the folder itself when it has none)."""
    splits = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    return splits or {"all": root}


def _runs_stamp() -> tuple:
    """What model_choices depends on, from file times alone (no JSON read): each run folder's
    status and model file."""
    stamp = []
    try:
        folders = sorted(p for p in RUNS_DIR.iterdir() if p.is_dir())
    except OSError:
        return ()
    for d in folders:
        times = []
        for name in ("status.json", "config.json", "model.keras"):
            try:
                times.append((d / name).stat().st_mtime_ns)
            except OSError:
                times.append(0)
        stamp.append((d.name, *times))
    return tuple(stamp)


def model_choices() -> dict[str, str]:
    """Label -> model file: the bundled models (the default first), then each run's saved model. Read again only
    when a run folder's files change (the sidebar asks on every rerun of every page)."""
    return dict(_model_choices(str(RUNS_DIR), _runs_stamp()))


@st.cache_data(max_entries=8, show_spinner=False)
def _model_choices(runs_dir: str, stamp: tuple) -> dict[str, str]:
    from unet.model import BUNDLED_MODELS
    from unet.runs import list_runs

    choices = {label: str(path) for label, path in BUNDLED_MODELS.items() if path.is_file()}
    for run in list_runs(runs_dir):
        if run.model_path.is_file():
            cfg = run.config()
            choices[f"Run {run.id} ({cfg.get('preset', '?')}, {run.status().get('state', '?')})"] = str(run.model_path)
    return choices


def sidebar_model_picker() -> str | None:
    """The shared model picker; returns the chosen model file (None when there is none)."""
    choices = model_choices()
    with st.sidebar:
        st.caption("Model used by Detect and Survey")
        if not choices:
            st.info("No trained model yet. Start one on the Train page.")
            st.session_state[MODEL_PATH_KEY] = None
            return None
        labels = list(choices)
        if st.session_state.get(MODEL_KEY) not in labels:
            st.session_state[MODEL_KEY] = labels[0]
        label = st.selectbox("Model", labels, key=MODEL_KEY, label_visibility="collapsed")
    st.session_state[MODEL_PATH_KEY] = choices[label]
    return choices[label]


def active_model_path() -> str | None:
    """The model chosen in the sidebar on this rerun (streamlit_app.py draws it before the page)."""
    return st.session_state.get(MODEL_PATH_KEY)


def _keep_keras_session() -> None:
    """Stop Streamlit from clearing the Keras session after every script run.

    Streamlit (1.67) calls ``keras.backend.clear_session()`` at the end of each run, for
    apps that build a model inside the script. Ours are loaded once and cached; clearing
    throws away TensorFlow's kernel caches and runs a full garbage collection (about
    0.2 s with TensorFlow loaded, holding the GIL while the results wait to be sent).
    """
    from streamlit.runtime.scriptrunner import script_runner

    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = lambda: None


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _load_model(path: str, stamp: tuple):
    from unet.damage_model import DamageModel

    _keep_keras_session()
    return DamageModel.load(path)


def get_model(path: str):
    """The :class:`unet.DamageModel` of a file, loaded once (and again only if the file or its
    card changes: a calibration rewrites the card's threshold and scale). At most four stay
    in memory, each with its predictor and inference copy.

    Raises:
        ModelError: the file (or its card) cannot be used; the message names it.
    """
    from unet.damage_model import file_stamp
    from unet.model import ModelError

    try:
        stamp = file_stamp(path)
    except OSError as exc:
        raise ModelError(f"{Path(path).name}: cannot be read ({exc.strerror})") from None
    return _load_model(path, stamp)


@st.cache_data(ttl=30, show_spinner="Scanning the dataset...")
def scan(path: str):
    """Dataset scan plus per-sample statistics, cached for 30 s."""
    from unet.data import sample_stats, scan_dataset

    result = scan_dataset(path)
    stats, problems = sample_stats(result.samples)
    return result, stats, problems


SCALE_UNKNOWN = "Not known (pixels only, no grade)"
SCALE_MM_PER_PX = "Millimetres per pixel"
SCALE_REAL_WIDTH = "Real width the photo shows (mm)"
SCALE_HELP = ("The grade reads the widest crack in millimetres, so it needs the photo's scale at the wall: "
              "millimetres per pixel, or the real width of what the photo shows (a 4 m wall filling a "
              "4000-pixel-wide photo is 1 mm per pixel). Put a ruler or a brick of known size in the photo "
              "to find it. Kept for this browser session.")


def scale_input(key: str, modes: tuple[str, ...] = (SCALE_UNKNOWN, SCALE_MM_PER_PX, SCALE_REAL_WIDTH)
                ) -> tuple[str, str]:
    """The photos' scale, as the user gives it: (mode, typed value). Kept for the browser session.

    Streamlit drops a widget's state when its page is left, so each value lives under a
    plain session key, is copied into the widget before it is drawn and back when it changes.
    """
    saved = st.session_state.setdefault("scale_saved", {})
    mode_key, value_key = f"{key}_scale_mode", f"{key}_scale_value"

    def keep(widget_key: str) -> None:
        saved[widget_key] = st.session_state[widget_key]

    st.session_state[mode_key] = saved.get(mode_key, modes[0]) if saved.get(mode_key) in modes else modes[0]
    st.session_state[value_key] = saved.get(value_key, "")
    left, right = st.columns([3, 2])
    mode = left.radio("Scale of the photos", modes, key=mode_key, horizontal=True, help=SCALE_HELP,
                      on_change=keep, args=(mode_key,))
    value = ""
    if mode != SCALE_UNKNOWN:
        label = "millimetres per pixel" if mode == SCALE_MM_PER_PX else "real width shown, in mm"
        value = right.text_input(label, key=value_key, placeholder="0.5" if mode == SCALE_MM_PER_PX else "4000",
                                 on_change=keep, args=(value_key,))
    return mode, value


def mm_per_px_for(mode: str, value: str, width_px: int) -> float | None:
    """The scale of one photo from :func:`scale_input`'s answer.

    Raises:
        ConfigError: the typed value is not a positive number (the message says what was typed).
    """
    from unet.cracks import check_mm_per_px, mm_per_px_from_width

    if mode == SCALE_MM_PER_PX:
        return check_mm_per_px(value)
    if mode == SCALE_REAL_WIDTH:
        return mm_per_px_from_width(value, width_px)
    return None


def measurement_panel(box, measurement, picture: bytes, key: str, stem: str) -> None:
    """The cracks of one photo: grade, widest crack, total length, centre lines by width, a table and its CSV."""
    from unet.cracks import DISCLAIMER

    m = measurement
    g = m.grade
    widest = m.widest
    mm = m.mm_per_px
    c1, c2, c3, c4 = box.columns(4)
    c1.metric("Grade", g.label if g else "not graded",
              help=("Burland/BRE 251 damage category by the widest crack. " + DISCLAIMER) if g else
              "Give the photo's scale above to grade it.")
    c2.metric("Widest crack", "none" if widest is None else
              (f"{widest.max_width_mm:.2f} mm" if mm else f"{widest.max_width_px:.1f} px"),
              help=None if widest is None else f"{widest.max_width_px:.1f} px wide, crack #{widest.id}")
    c3.metric("Total crack length", f"{m.total_length_px * mm / 1000:.2f} m" if mm else f"{m.total_length_px:,.0f} px")
    c4.metric("Cracks", f"{m.count}", help=f"Mostly {m.pattern}. Patches (spalling?): {len(m.patches)}; "
              f"specks too small to measure: {m.specks}.")
    left, right = box.columns([1, 1])
    left.image(picture, caption="centre lines by width: yellow thinnest, red widest")
    rows = m.rows()
    if rows:
        right.dataframe(rows, hide_index=True, height=300, key=f"{key}_table")
        from unet.files import csv_text

        right.download_button("Cracks CSV", csv_text(rows, m.fields), file_name=f"{stem}_cracks.csv",
                              mime="text/csv", key=f"{key}_csv", on_click="ignore")
    else:
        right.info("No crack found at this threshold.")
    box.caption(DISCLAIMER + (f" One pixel is {mm:g} mm here: cracks thinner than that read as one pixel."
                              if mm else ""))


class PhotoCache:
    """Decoded photos and their probability maps, shared by every browser session and bounded in bytes.

    Detect keeps a photo's pixels and its probability map (float16) so that moving the
    threshold needs no model call; with several sessions dropping 12 MP photos that is
    most of the server's memory, so one budget covers them all (``UNET_DETECT_CACHE_MB``,
    default 1500): the photo used longest ago goes first, and is segmented again if shown.
    The same photo dropped in two sessions is kept once.
    """

    def __init__(self):
        import threading
        from collections import OrderedDict

        self._items: "OrderedDict[tuple, dict]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def budget() -> int:
        return int(float(os.environ.get("UNET_DETECT_CACHE_MB", "1500")) * 2**20)

    @staticmethod
    def size_of(item: dict) -> int:
        return sum(v.nbytes for v in item.values() if hasattr(v, "nbytes"))

    def get(self, key: tuple) -> dict | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple, item: dict) -> None:
        """Keep ``item``; drop the least recently used others until the budget holds (the newest stays)."""
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > 1 and self.nbytes() > self.budget():
                self._items.popitem(last=False)

    def nbytes(self) -> int:
        return sum(self.size_of(i) for i in list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@st.cache_resource
def photo_cache() -> PhotoCache:
    """The one :class:`PhotoCache` of this server process."""
    return PhotoCache()
