"""Datasets on disk: finding samples, reporting bad files, loading and augmenting pairs.

Two layouts are accepted (see README):

1. per-sample folders ``<root>/<id>/images/<one image>`` + ``<root>/<id>/masks/*``,
   all masks of a sample unioned;
2. paired folders ``<root>/images/<stem>.<ext>`` + ``<root>/masks/<stem>.png``
   (``foo_img.jpg`` / ``foo_lab.png`` and ``foo.jpg`` / ``foo_mask.png`` pair up too).

Splits are ``train/``, ``val/`` and ``test/`` subfolders when present; otherwise
:func:`split_samples` makes a deterministic seeded split. A scan never raises for a bad
file: it skips the sample and records a :class:`Problem` naming the file.

This module is numpy + Pillow only, so the dashboard can browse data without Keras.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from .errors import UnetError
from .imaging import IMAGE_EXTENSIONS, ImageError, image_size, read_image, read_mask

SPLITS = ("train", "val", "test")
# Suffixes that mark a file as an image or as a mask of the same stem.
_IMAGE_TAGS = ("_img", "_image", "_rgb")
_MASK_TAGS = ("_lab", "_label", "_mask", "_gt", "_seg")


@dataclass(frozen=True)
class Sample:
    """One photo and the mask files that together mark its damaged pixels."""

    id: str
    image: Path
    masks: tuple[Path, ...]
    split: str = "all"


@dataclass(frozen=True)
class Problem:
    """A file (or folder) that was skipped, and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Scan:
    """What a dataset scan found: usable samples per split and the problems."""

    root: Path
    layout: str
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def samples(self) -> list[Sample]:
        return [s for split in self.splits.values() for s in split]

    def split(self, name: str) -> list[Sample]:
        return self.splits.get(name, [])


class DatasetError(UnetError, ValueError):
    """The dataset as a whole cannot be used (missing folder, no samples at all)."""


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _files(folder: Path) -> list[Path]:
    """The image files of a folder; none when it is missing, unreadable or vanished meanwhile."""
    try:
        return sorted(p for p in folder.iterdir() if _is_image(p)) if _is_dir(folder) else []
    except OSError:
        return []


def _is_dir(p: Path) -> bool:
    """Like ``Path.is_dir``, but False for a folder that cannot be looked into (permissions)."""
    try:
        return p.is_dir()
    except OSError:
        return False


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError:
        return []


def _strip_tag(stem: str, tags: Sequence[str]) -> tuple[str, bool]:
    low = stem.lower()
    for tag in tags:
        if low.endswith(tag):
            return stem[: -len(tag)], True
    return stem, False


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _check_sizes(image: Path, masks: Sequence[Path], root: Path, problems: list[Problem]) -> bool:
    """Header-only check that the image and every mask can be opened and agree in size."""
    try:
        size = image_size(image)
    except ImageError as exc:
        problems.append(Problem(_rel(image, root), exc.problem))
        return False
    for m in masks:
        try:
            msize = image_size(m)
        except ImageError as exc:
            problems.append(Problem(_rel(m, root), exc.problem))
            return False
        if msize != size:
            problems.append(
                Problem(
                    _rel(m, root),
                    f"mask is {msize[0]}x{msize[1]} but its image {image.name} is {size[0]}x{size[1]}",
                )
            )
            return False
    return True


def _scan_per_sample(folder: Path, root: Path, split: str, problems: list[Problem]) -> list[Sample]:
    samples = []
    for d in _subfolders(folder):
        images = _files(d / "images")
        masks = _files(d / "masks")
        if not images:
            problems.append(Problem(_rel(d, root), "sample folder has no image in images/"))
            continue
        if len(images) > 1:
            problems.append(
                Problem(_rel(d / "images", root), f"{len(images)} images in one sample; using {images[0].name}")
            )
        if not masks:
            problems.append(Problem(_rel(images[0], root), "image without mask (masks/ is missing or empty)"))
            continue
        if _check_sizes(images[0], masks, root, problems):
            samples.append(Sample(d.name, images[0], tuple(masks), split))
    return samples


def _pair_by_stem(
    image_files: Iterable[Path], mask_files: Iterable[Path], root: Path, split: str, problems: list[Problem]
) -> list[Sample]:
    masks: dict[str, Path] = {}
    for m in mask_files:
        masks.setdefault(_strip_tag(m.stem, _MASK_TAGS)[0], m)
    samples = []
    for img in image_files:
        stem = _strip_tag(img.stem, _IMAGE_TAGS)[0]
        mask = masks.get(stem)
        if mask is None:
            problems.append(Problem(_rel(img, root), "image without mask (no mask file with the same name)"))
            continue
        if _check_sizes(img, [mask], root, problems):
            samples.append(Sample(stem, img, (mask,), split))
    return samples


def _scan_flat(folder: Path, root: Path, split: str, problems: list[Problem]) -> list[Sample]:
    """Images and masks side by side in one folder, told apart by their name tags."""
    images, masks = [], []
    for f in _files(folder):
        (masks if _strip_tag(f.stem, _MASK_TAGS)[1] else images).append(f)
    return _pair_by_stem(images, masks, root, split, problems)


def detect_layout(folder: Path) -> str:
    """'paired', 'per-sample', 'flat' or 'empty' for one split folder."""
    if _is_dir(folder / "images") and _is_dir(folder / "masks"):
        return "paired"
    if any(_is_dir(d / "images") for d in _subfolders(folder)):
        return "per-sample"
    if _files(folder):
        return "flat"
    return "empty"


def scan_folder(folder: Path, root: Path | None = None, split: str = "all") -> tuple[list[Sample], list[Problem], str]:
    """Scan one split folder of either layout."""
    root = root or folder
    problems: list[Problem] = []
    layout = detect_layout(folder)
    if layout == "paired":
        samples = _pair_by_stem(_files(folder / "images"), _files(folder / "masks"), root, split, problems)
    elif layout == "per-sample":
        samples = _scan_per_sample(folder, root, split, problems)
    elif layout == "flat":
        samples = _scan_flat(folder, root, split, problems)
    else:
        samples = []
        problems.append(Problem(_rel(folder, root) if folder != root else folder.name, "folder holds no images"))
    return samples, problems, layout


def scan_dataset(root: str | Path) -> Scan:
    """Index a dataset folder: samples per split and every problem found.

    Args:
        root: the dataset folder. With ``train/``, ``val/`` or ``test/`` subfolders
            each is a split; otherwise the folder itself is one split named ``all``.

    Returns:
        A :class:`Scan`; bad samples are left out and listed in ``problems``.

    Raises:
        DatasetError: the folder does not exist or is not a folder.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file, not a dataset folder")
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()}
    scan = Scan(root=root, layout="empty")
    if not split_dirs:
        split_dirs = {"all": root}
    layouts = set()
    for name, folder in split_dirs.items():
        try:
            samples, problems, layout = scan_folder(folder, root, name)
        except OSError as exc:  # renamed, removed or made unreadable while it was scanned
            samples, layout = [], "empty"
            problems = [Problem(_rel(folder, root) if folder != root else folder.name,
                                f"could not be read ({exc.strerror or exc})")]
        scan.splits[name] = samples
        scan.problems.extend(problems)
        if layout != "empty":
            layouts.add(layout)
    scan.layout = "+".join(sorted(layouts)) or "empty"
    return scan


def split_samples(
    samples: Sequence[Sample], val_fraction: float = 0.15, test_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[Sample]]:
    """Deterministic split of one pool of samples (same seed, same ids: same split), whole source
    photos per part (:func:`source_of`: the patches of one wall are not both trained on and used
    to choose the checkpoint), about ``val_fraction`` and ``test_fraction`` of the photos each.
    A pool of one source photo is split photo by photo (there is no other way to hold any out).
    """
    ordered = sorted(samples, key=lambda s: s.id)
    groups: dict[str, list[Sample]] = {}
    for s in ordered:
        groups.setdefault(source_of(s.id), []).append(s)
    if len(groups) < 2:
        groups = {s.id: [s] for s in ordered}
    keys = list(groups)  # photos of their own: the ids' order, so such a pool splits as it always did
    order = np.random.default_rng(seed).permutation(len(keys))
    n_val = int(round(len(ordered) * val_fraction))
    n_test = int(round(len(ordered) * test_fraction))
    if len(ordered) >= 2 and val_fraction > 0:
        n_val = max(n_val, 1)
    parts: dict[str, list[Sample]] = {"val": [], "test": [], "train": []}
    for i in order:  # whole sources, until each part has its share (the last source may overshoot it)
        part = "val" if len(parts["val"]) < n_val else "test" if len(parts["test"]) < n_test else "train"
        if part != "train" and i == order[-1] and not parts["train"]:
            part = "train"  # never leave nothing to train on
        parts[part] += groups[keys[i]]
    return {"val": parts["val"], "test": parts["test"], "train": parts["train"]}


# A patch cut from a bigger photo is named <name>_<photo number>_<patch number> (the masonry
# set's ``a_0_10`` is patch 10 of photo ``a_0``), a crop <photo>-<number> (DeepCrack's
# ``IMG33-12`` and ``11116-3``, crops of the photos ``IMG33`` and ``11116``, whose own crop is
# ``11116``): the patches and crops of one photo are one source. Any other id (``wall_0003``,
# DeepCrack's ``11111``) is a photo of its own.
_PATCH = re.compile(r"^(.*\d)_\d+$")
_CROP = re.compile(r"^(.+)-\d+$")
FOLD_SEED = 0  # folds do not change with a run's seed: every run of a protocol sees the same ones
# Which rule grouped photos into sources (crossval summaries record it; folds drawn under
# another rule hold other photos): 1, patches only; 2 (2026-11-27), crops too.
GROUPING = 2


def source_of(sample_id: str) -> str:
    """The source photo a sample was cut from: ``a_0`` for patch ``a_0_10``, ``IMG33`` for crop
    ``IMG33-12`` (and for ``IMG33`` itself); the id itself for any other.

    Grouping by source keeps every patch and crop of one photo in one fold, so no fold is scored
    on a wall (or a stretch of pavement) another fold trained on, and a split's F1 is resampled
    by source (:func:`unet.metrics.f1_interval`).
    """
    m = _CROP.match(sample_id) or _PATCH.match(sample_id)
    return m.group(1) if m else sample_id


def fold_split(samples: Sequence[Sample], fold: int, folds: int) -> tuple[list[Sample], list[Sample]]:
    """(the other folds, fold ``fold``) of ``folds`` (1-based), whole source photos per fold.

    Sources are shuffled with :data:`FOLD_SEED`, then each, the largest first, goes to the
    fold with the fewest samples so far: folds are balanced, and the same for every run.
    """
    if not 2 <= folds <= 20 or not 1 <= fold <= folds:
        raise DatasetError(f"fold {fold}/{folds}: want 1 <= fold <= folds, 2 <= folds <= 20")
    groups: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.id):
        groups.setdefault(source_of(s.id), []).append(s)
    keys = sorted(groups)
    if len(keys) < folds:
        raise DatasetError(f"{len(keys)} source photo(s) cannot make {folds} folds (a fold holds whole photos)")
    order = np.random.default_rng(FOLD_SEED).permutation(len(keys))
    shuffled = [keys[i] for i in order]
    shuffled.sort(key=lambda k: -len(groups[k]))  # stable: ties keep the shuffled order
    sizes, owner = [0] * folds, {}
    for k in shuffled:
        f = min(range(folds), key=lambda i: (sizes[i], i))
        owner[k] = f
        sizes[f] += len(groups[k])
    held = [s for k in keys if owner[k] == fold - 1 for s in groups[k]]
    rest = [s for k in keys if owner[k] != fold - 1 for s in groups[k]]
    return rest, held


def parse_fold(text: str | None) -> tuple[int, int] | None:
    """``"k/K"`` as (k, K); None for None or ''. A :class:`DatasetError` names a bad one."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 2 <= int(m.group(2)) <= 20 or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise DatasetError(f"fold must be k/K with 1 <= k <= K and 2 <= K <= 20 (got {text!r})")
    return int(m.group(1)), int(m.group(2))


def training_splits(
    root: str | Path | Sequence[str | Path], seed: int = 0, val_fraction: float = 0.15,
    fold: tuple[int, int] | None = None, validation: bool = True,
) -> tuple[list[Sample], list[Sample], Scan]:
    """(train, val) samples of one dataset or several pooled: their own split folders or a seeded split.

    With ``fold`` (k, K) the validation photos are fold k of each dataset's training photos
    (:func:`fold_split`) and the dataset's own val split is not read: choices made on folds
    leave it for one honest reading at the end. With ``validation`` False every training photo
    trains and nothing is held out: the val split is not read.

    Returns:
        train, val and the scan (of the first root; problems of every root are merged into it).
    """
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    if not roots:
        raise DatasetError("no dataset folder given")
    train, val, merged = [], [], None
    for r in roots:
        scan = scan_dataset(r)
        t, v = scan.split("train"), scan.split("val") if validation else []
        if not t and "all" in scan.splits:
            parts = split_samples(scan.split("all"), val_fraction=val_fraction, seed=seed)
            t, v = (parts["train"], parts["val"]) if validation else (scan.split("all"), [])
        if fold is not None:
            t, v = fold_split(t, *fold)
        train += t
        val += v
        if merged is None:
            merged = scan
        else:
            merged.problems.extend(scan.problems)
    if not train:
        raise DatasetError(f"{', '.join(map(str, roots))}: no usable training samples found "
                           f"({len(merged.problems)} problems)")
    return train, val, merged


# ---------------------------------------------------------------------------------
# Loading pairs
# ---------------------------------------------------------------------------------


def union_mask(sample: Sample, height: int, width: int) -> np.ndarray:
    """The union of a sample's masks (a pixel is damaged if any mask marks it).

    Raises:
        ImageError: a mask cannot be read, or its size differs from the image's.
    """
    mask = np.zeros((height, width), dtype=bool)
    for m in sample.masks:
        part = read_mask(m)
        if part.shape != mask.shape:
            raise ImageError(m.name, f"mask is {part.shape[1]}x{part.shape[0]} but its image "
                                     f"{sample.image.name} is {width}x{height}")
        mask |= part
    return mask


def load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Decode a sample: RGB uint8 image and the union of its masks as bool.

    Raises:
        ImageError: naming the file that could not be used.
    """
    image = read_image(sample.image)
    return image, union_mask(sample, *image.shape[:2])


def load_pairs(samples: Sequence[Sample]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[Sample], list[Problem]]:
    """Decode many samples; the ones that fail are reported, not raised."""
    pairs, kept, problems = [], [], []
    for s in samples:
        try:
            pairs.append(load_pair(s))
            kept.append(s)
        except ImageError as exc:
            problems.append(Problem(str(exc.name), exc.problem))
    return pairs, kept, problems


@dataclass(frozen=True)
class SampleStats:
    id: str
    split: str
    width: int
    height: int
    damaged_pct: float


def sample_stats(samples: Sequence[Sample]) -> tuple[list[SampleStats], list[Problem]]:
    """Size and damaged-pixel percentage of each sample (masks decoded, images by header)."""
    stats, problems = [], []
    for s in samples:
        try:
            w, h = image_size(s.image)
            mask = union_mask(s, h, w)
            stats.append(SampleStats(s.id, s.split, w, h, 100.0 * float(mask.mean())))
        except ImageError as exc:
            problems.append(Problem(exc.name, exc.problem))
    return stats, problems


# ---------------------------------------------------------------------------------
# Augmentation and batching (numpy only: works under every Keras backend)
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """Random changes applied identically to a photo and its mask.

    ``crop_scale`` bounds the side of the random crop relative to the model input
    (a crop of ``size * s`` pixels is resized to ``size``); brightness, contrast and colour
    change the photo only. ``color``: each channel's gain is scaled by 1 +- color (white
    balance) and the saturation by 1 +- 2 x color (0: off, and no random numbers drawn, so
    runs without it keep their crops). ``noise``: sensor noise, each crop's pixels get Gaussian
    noise of a standard deviation drawn uniformly in 0-noise x 255, independent per pixel and
    channel, added last, at the model's input resolution (0: off, no random numbers drawn).
    """

    flip: bool = True
    rotate90: bool = True
    crop_scale: tuple[float, float] = (0.75, 1.33)
    brightness: float = 0.15
    contrast: float = 0.15
    color: float = 0.0
    noise: float = 0.0

    @classmethod
    def none(cls) -> "Augment":
        return cls(flip=False, rotate90=False, crop_scale=(1.0, 1.0), brightness=0.0, contrast=0.0)


def mirror_pad(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad bottom/right with mirrored content up to (height, width)."""
    ph, pw = max(0, height - arr.shape[0]), max(0, width - arr.shape[1])
    if ph == 0 and pw == 0:
        return arr
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="symmetric")


def _resize(arr: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    if arr.dtype == bool:
        img = Image.fromarray(arr.astype(np.uint8) * 255)
        return np.asarray(img.resize((size, size), Image.NEAREST)) > 127
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(arr).resize((size, size), resample))


def random_pair(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator, aug: Augment
) -> tuple[np.ndarray, np.ndarray]:
    """A random size x size training crop of one pair, augmented identically."""
    lo, hi = aug.crop_scale
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else lo
    crop = max(8, int(round(size * s)))
    image = mirror_pad(image, crop, crop)
    mask = mirror_pad(mask, crop, crop)
    y = int(rng.integers(0, image.shape[0] - crop + 1))
    x = int(rng.integers(0, image.shape[1] - crop + 1))
    img = _resize(image[y : y + crop, x : x + crop], size, nearest=False)
    msk = _resize(mask[y : y + crop, x : x + crop], size, nearest=True)
    if aug.flip and rng.random() < 0.5:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if aug.flip and rng.random() < 0.5:
        img, msk = img[::-1], msk[::-1]
    if aug.rotate90:
        k = int(rng.integers(0, 4))
        img, msk = np.rot90(img, k), np.rot90(msk, k)
    if aug.brightness or aug.contrast:
        b = rng.uniform(-aug.brightness, aug.brightness) * 255
        c = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
        mean = img.mean()
        # Through a 256-entry table: the same values as the arithmetic on every pixel, in one
        # pass (that arithmetic was half a batch's time, and the GIL's, on a 16-core GPU machine).
        lut = np.clip((np.arange(256, dtype=np.float32) - mean) * c + mean + b, 0, 255).astype(np.uint8)
        img = lut[img]
    if aug.color:
        img = recolor(img, 1.0 + rng.uniform(-aug.color, aug.color, 3),
                      max(0.0, 1.0 + rng.uniform(-2 * aug.color, 2 * aug.color)))
    if aug.noise:
        sigma = rng.uniform(0.0, aug.noise) * 255
        noisy = img.astype(np.float32) + _gaussian(rng, img.shape) * sigma
        img = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img), np.ascontiguousarray(msk)


@functools.lru_cache(maxsize=1)
def _normal_bank() -> np.ndarray:
    """4M standard normal values, made once per process."""
    return np.random.default_rng(20261127).standard_normal(1 << 22, dtype=np.float32)


def _gaussian(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Standard normal noise of this shape: a window of a fixed bank of 4M values at an offset the
    crop's generator draws (deterministic per seed, as the crops are). Drawing fresh values cost as
    much as the rest of a crop's augmentation (264 -> 125 crops of 256 a second on one thread);
    a window costs a copy."""
    bank, n = _normal_bank(), int(np.prod(shape))
    if n > bank.size // 2:  # a crop larger than about 1100 x 1100: fresh values
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, bank.size - n + 1))
    return bank[start : start + n].reshape(shape)


def recolor(img: np.ndarray, gains: np.ndarray, saturation: float) -> np.ndarray:
    """A uint8 RGB photo with each channel multiplied by its gain, then its saturation scaled
    (each pixel moved away from, or towards, the mean of its channels), rounded and clipped.

    Both steps are linear in the pixel's channels: one 3x3 matrix, one product per pixel
    (1.7x as fast as the steps one by one)."""
    m = np.diag(np.asarray(gains, np.float32)) @ (saturation * np.eye(3, dtype=np.float32) + (1 - saturation) / 3)
    # einsum, not a BLAS product: BLAS threads of its own fight the batch threads (0.8x at 2)
    out = np.einsum("pk,kc->pc", img.reshape(-1, 3).astype(np.float32), m)
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8).reshape(img.shape)


def tiles(image: np.ndarray, mask: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic size x size tiles covering a pair (mirror-padded at the edges)."""
    h = -(-image.shape[0] // size) * size
    w = -(-image.shape[1] // size) * size
    image, mask = mirror_pad(image, h, w), mirror_pad(mask, h, w)
    return [
        (image[y : y + size, x : x + size], mask[y : y + size, x : x + size])
        for y in range(0, h, size)
        for x in range(0, w, size)
    ]


class PairBatcher:
    """Numpy batches of (uint8 image, float32 mask) from decoded pairs.

    Args:
        pairs: decoded (image, mask) pairs, kept in memory.
        size: the model input side.
        batch_size: samples per batch.
        augment: random crops and changes (training) or None for fixed tiles (validation).
        steps: batches per epoch (training); defaults to one pass over the pairs.
        seed: base seed; batch ``i`` of epoch ``e`` is the same on every run.
        shard: this process's index in a multi-host job: its batches are its own (a seed of
            their own), the global batch being every process's together.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        size: int,
        batch_size: int,
        augment: Augment | None = None,
        steps: int | None = None,
        seed: int = 0,
        shard: int | None = None,
    ):
        if not pairs:
            raise DatasetError("no samples to batch")
        self.size, self.batch_size, self.augment, self.seed, self.shard = size, batch_size, augment, seed, shard
        self.epoch = 0
        if augment is None:
            self.items = [t for img, msk in pairs for t in tiles(img, msk, size)]
            self.pairs = []
            self.steps = -(-len(self.items) // batch_size)
        else:
            self.pairs = list(pairs)
            self.items = []
            self.steps = steps or max(1, -(-len(self.pairs) // batch_size))

    def __len__(self) -> int:
        return self.steps

    def batch(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch`` (by default the batcher's current epoch)."""
        if self.augment is None:
            chunk = self.items[index * self.batch_size : (index + 1) * self.batch_size]
        else:
            epoch = self.epoch if epoch is None else int(epoch)
            key = [self.seed, epoch, index] + ([] if self.shard is None else [self.shard])
            rng = np.random.default_rng(key)
            picks = rng.integers(0, len(self.pairs), self.batch_size)
            chunk = [random_pair(*self.pairs[i], self.size, rng, self.augment) for i in picks]
        x = np.stack([c[0] for c in chunk])
        y = np.stack([c[1] for c in chunk]).astype(np.float32)[..., None]
        return x, y
