"""Synthetic damaged walls with exact masks, for tests and the offline default.

Each photo is a wall surface (brick, concrete or plaster) with cracks of varying width
that wander and branch, and sometimes spalled patches. Wall features that are *not*
damage (mortar joints, pores, stains, shading) are drawn too, so a model has to learn
more than "dark pixel". Masks are exact: the damage is drawn into the mask and the
photo from the same geometry. Everything is deterministic by seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SURFACES = ("brick", "concrete", "plaster")


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise in [-1, 1]: random values on a coarse grid, upsampled bicubically."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(img), -1.5, 1.5)


def _fractal(rng: np.random.Generator, h: int, w: int, cells=(64, 24, 8, 3), weights=(0.5, 0.3, 0.15, 0.05)) -> np.ndarray:
    return sum(wt * _noise(rng, h, w, c) for c, wt in zip(cells, weights))


def _brick(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array(rng.choice([[150, 70, 50], [170, 95, 70], [120, 60, 45], [185, 130, 95]]), np.float32)
    mortar = np.array([190, 185, 175], np.float32) * rng.uniform(0.75, 1.0)
    bh = int(rng.integers(18, 34))
    bw = int(bh * rng.uniform(2.0, 2.6))
    joint = int(rng.integers(2, 5))
    img = np.empty((h, w, 3), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    row = yy // bh
    shifted = xx + (row % 2) * (bw // 2)
    col = shifted // bw
    # per-brick tint
    tints = rng.normal(0, 12, (h // bh + 2, w // bw + 3, 3)).astype(np.float32)
    img[:] = base + tints[row, col]
    is_joint = ((yy % bh) < joint) | ((shifted % bw) < joint)
    img[is_joint] = mortar
    img += 18 * _fractal(rng, h, w)[..., None]
    return img


def _concrete(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    g = rng.uniform(110, 175)
    img = np.full((h, w, 3), g, np.float32) + np.array(rng.normal(0, 6, 3), np.float32)
    img += 30 * _fractal(rng, h, w)[..., None]
    img += rng.normal(0, 7, (h, w, 1)).astype(np.float32)  # grain
    # pores: small dark dots (not damage)
    n = int(h * w / 900)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    img[ys, xs] *= rng.uniform(0.45, 0.8, (n, 1)).astype(np.float32)
    return img


def _plaster(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array(rng.choice([[225, 220, 205], [210, 200, 180], [230, 225, 225], [200, 190, 160]]), np.float32)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    img = img + 14 * _fractal(rng, h, w, cells=(96, 32, 6, 2))[..., None]
    return img


def _crack_geometry(rng: np.random.Generator, h: int, w: int, depth: int = 0):
    """Segments (x0, y0, x1, y1, width) of one wandering crack with branches."""
    segs = []
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    angle = rng.uniform(0, 2 * np.pi)
    width = rng.uniform(1.0, 4.5) if depth == 0 else rng.uniform(1.0, 2.5)
    length = rng.uniform(0.5, 1.2) * max(h, w) * (0.5 ** depth)
    step = 4.0
    for _ in range(int(length / step)):
        angle += rng.normal(0, 0.35)
        nx, ny = x + step * np.cos(angle), y + step * np.sin(angle)
        width = float(np.clip(width + rng.normal(0, 0.25), 1.0, 6.0))
        segs.append((x, y, nx, ny, width))
        x, y = nx, ny
        if depth < 2 and rng.random() < 0.02:
            sub = _crack_geometry(rng, h, w, depth + 1)
            if sub:
                dx, dy = x - sub[0][0], y - sub[0][1]
                segs.extend((a + dx, b + dy, c + dx, d + dy, wd) for a, b, c, d, wd in sub)
        if not (-20 < x < w + 20 and -20 < y < h + 20):
            break
    return segs


def _draw_cracks(rng, h, w, n):
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(n):
        for x0, y0, x1, y1, width in _crack_geometry(rng, h, w):
            wd = max(1, int(round(width)))
            draw.line((x0, y0, x1, y1), fill=255, width=wd)
            if wd >= 3:  # round joints for wide cracks
                r = wd / 2
                draw.ellipse((x1 - r, y1 - r, x1 + r, y1 + r), fill=255)
    return np.asarray(mask) > 0


def _draw_spalls(rng, h, w, n):
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(n):
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        r = rng.uniform(0.06, 0.16) * min(h, w)
        k = 14
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = r * rng.uniform(0.55, 1.25, k)
        pts = [(cx + rr * np.cos(a), cy + rr * np.sin(a)) for a, rr in zip(angles, radii)]
        draw.polygon(pts, fill=255)
    return np.asarray(mask) > 0


def _distractors(rng, img, h, w):
    """Stains, shading and thin painted lines: dark things that are not damage."""
    shade = 1.0 + 0.25 * _noise(rng, h, w, max(h, w) // 2)
    img *= shade[..., None]
    for _ in range(int(rng.integers(0, 3))):
        stain = _noise(rng, h, w, 20) > rng.uniform(0.55, 0.8)
        img[stain] *= rng.uniform(0.7, 0.9)
    if rng.random() < 0.3:  # a straight cable or pencil line
        line = Image.new("L", (w, h), 0)
        y = rng.uniform(0, h)
        ImageDraw.Draw(line).line((0, y, w, y + rng.uniform(-h / 4, h / 4)), fill=255, width=1)
        img[np.asarray(line) > 0] *= 0.6
    return img


def damaged_wall(
    seed: int, height: int = 256, width: int = 256, surface: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic photo and its crack and spall masks.

    Args:
        seed: everything is a function of it.
        height, width: photo size in pixels.
        surface: 'brick', 'concrete', 'plaster', or None to pick by seed.

    Returns:
        (image uint8 HxWx3, crack mask bool HxW, spall mask bool HxW).
    """
    rng = np.random.default_rng(seed)
    surface = surface or SURFACES[int(rng.integers(0, len(SURFACES)))]
    h, w = height, width
    img = {"brick": _brick, "concrete": _concrete, "plaster": _plaster}[surface](rng, h, w)
    img = _distractors(rng, img, h, w)

    spall = _draw_spalls(rng, h, w, int(rng.choice([0, 0, 1, 1, 2])))
    if spall.any():
        # Exposed core: rougher, darker, shifted colour; a shadowed rim inside the edge.
        core = np.array([120, 115, 105], np.float32) * rng.uniform(0.7, 1.1)
        rough = core + 35 * _fractal(rng, h, w, cells=(12, 5, 2), weights=(0.4, 0.4, 0.2))[..., None]
        img[spall] = rough[spall]
        edge = spall & ~(np.asarray(Image.fromarray(spall.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(5))) > 0)
        img[edge] *= 0.55

    cracks = _draw_cracks(rng, h, w, int(rng.integers(1, 4)))
    if cracks.any():
        depth = rng.uniform(0.15, 0.45)
        dark = depth + (1 - depth) * 0.3 * (_noise(rng, h, w, 6) + 1) / 2
        img[cracks] *= dark[cracks][:, None]

    img += rng.normal(0, 3, img.shape).astype(np.float32)  # sensor noise
    image = np.clip(img, 0, 255).astype(np.uint8)
    return image, cracks, spall


def write_sample_dataset(
    root: str | Path,
    count: int = 48,
    seed: int = 0,
    size: tuple[int, int] = (256, 320),
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    progress=None,
) -> dict:
    """Write a synthetic dataset in the per-sample layout with train/val/test splits.

    Layout: ``<root>/<split>/<id>/images/<id>.png`` and ``masks/<id>_crack.png``
    (+ ``<id>_spall.png`` when the photo has spalling): two masks per sample, unioned
    by the loader, exactly as in the original scripts' data.

    Args:
        root: target folder (created).
        count: number of photos in all.
        seed: dataset seed; the same seed writes byte-identical files.
        size: (height, width) of each photo.
        fractions: train/val/test shares.
        progress: optional callable taking an iterable, e.g. ``tqdm``.

    Returns:
        A summary dict (also written to ``<root>/dataset.json``).
    """
    root = Path(root)
    if count < 3:
        raise ValueError("count must be at least 3 (one photo per split)")
    n_val = max(1, int(round(count * fractions[1])))
    n_test = max(1, int(round(count * fractions[2])))
    n_train = count - n_val - n_test
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    items = range(count)
    if progress is not None:
        items = progress(items)
    damaged = []
    for i in items:
        split = splits[i]
        sid = f"wall_{i:04d}"
        image, crack, spall = damaged_wall(seed * 100_003 + i, *size)
        d = root / split / sid
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(d / "images" / f"{sid}.png")
        Image.fromarray(crack.astype(np.uint8) * 255).save(d / "masks" / f"{sid}_crack.png")
        if spall.any():
            Image.fromarray(spall.astype(np.uint8) * 255).save(d / "masks" / f"{sid}_spall.png")
        damaged.append(float((crack | spall).mean()))
    summary = {
        "name": "synthetic damaged walls",
        "generator": "python -m unet sample-data",
        "seed": seed,
        "count": count,
        "splits": {"train": n_train, "val": n_val, "test": n_test},
        "size": list(size),
        "mean_damaged_pct": round(100 * float(np.mean(damaged)), 3),
    }
    from .files import write_json_atomic

    write_json_atomic(root / "dataset.json", summary)  # written last: its presence means "complete"
    return summary


# --------------------------------------------------------------------------- cracks of known geometry

CRACK_KINDS = ("horizontal", "vertical", "diagonal", "branching")


@dataclass(frozen=True)
class TrueCrack:
    """The geometry a generated crack was drawn from (the answer a measurement should give).

    Attributes:
        kind: 'horizontal', 'vertical', 'diagonal' or 'branching'.
        width: its width in pixels (constant along the crack).
        length: tip to tip along its centre line, in pixels: the centre line's length plus
            half a width at each free end (the drawn crack has round tips).
        angle: the direction it was drawn in, degrees counter-clockwise from horizontal
            (0-180); for a branching crack, its first arm's.
        arms: the centre line as polylines, each ``[(x, y), ...]`` in pixels.
    """

    kind: str
    width: float
    length: float
    angle: float
    arms: tuple


def _polyline(rng, x, y, angle_deg, length, wiggle):
    """A slightly wavy line from (x, y): points every ~12 px, bending by at most ``wiggle`` of its length."""
    n = max(2, int(length / 12))
    t = np.linspace(0.0, 1.0, n + 1)
    a = math.radians(angle_deg)
    ux, uy = math.cos(a), -math.sin(a)  # y grows downwards in the photo
    bend = wiggle * length * np.sin(np.pi * t * rng.uniform(1, 2.5) + rng.uniform(0, np.pi)) * (t > 0)
    pts = [(x + length * ti * ux - b * uy, y + length * ti * uy + b * ux) for ti, b in zip(t, bend)]
    return pts


def _line_length(pts) -> float:
    return float(sum(math.dist(p, q) for p, q in zip(pts, pts[1:])))


def _render(arms, width, h, w) -> np.ndarray:
    """Pixels whose centre lies within width/2 of any arm (exact, no anti-aliasing)."""
    pts = np.array([p for arm in arms for p in arm])
    r = width / 2
    x0, y0 = max(0, int(pts[:, 0].min() - r - 1)), max(0, int(pts[:, 1].min() - r - 1))
    x1, y1 = min(w, int(pts[:, 0].max() + r + 2)), min(h, int(pts[:, 1].max() + r + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    best = np.full(yy.shape, np.inf)
    for arm in arms:
        for (ax, ay), (bx, by) in zip(arm, arm[1:]):
            dx, dy = bx - ax, by - ay
            t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
            best = np.minimum(best, np.hypot(xx - ax - t * dx, yy - ay - t * dy))
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = best <= r
    return out


def measured_cracks(seed: int, height: int = 480, width: int = 480, per_side: int = 3,
                    kinds: tuple[str, ...] = CRACK_KINDS, widths: tuple[float, float] = (1.0, 12.0),
                    surface: str | None = None) -> tuple[np.ndarray, np.ndarray, list[TrueCrack]]:
    """A photo of separate cracks whose true length, width and direction are recorded.

    The photo is cut into ``per_side`` x ``per_side`` cells with one crack in each (so no
    two touch): a slightly wavy line in one of the four directions, or two to four arms
    from a common point for 'branching'. Each crack has one width throughout.

    Returns:
        (image uint8 HxWx3, mask bool HxW, the cracks' geometry in cell order).
    """
    rng = np.random.default_rng(seed)
    surface = surface or SURFACES[int(rng.integers(0, len(SURFACES)))]
    h, w = height, width
    cell_h, cell_w = h / per_side, w / per_side
    side = min(cell_h, cell_w)
    mask = np.zeros((h, w), bool)
    truths: list[TrueCrack] = []
    for i in range(per_side * per_side):
        cy, cx = (i // per_side + 0.5) * cell_h, (i % per_side + 0.5) * cell_w
        kind = kinds[int(rng.integers(0, len(kinds)))]
        wd = float(rng.uniform(*widths))
        if kind == "branching":
            n_arms = int(rng.integers(3, 5))
            start = rng.uniform(0, 360)
            angles = [start + k * 360 / n_arms + rng.uniform(-15, 15) for k in range(n_arms)]
            arms = tuple(_polyline(rng, cx, cy, a, rng.uniform(0.28, 0.4) * side, 0.04) for a in angles)
            length = sum(_line_length(a) for a in arms) + n_arms * wd / 2
            angle = angles[0] % 180
        else:
            base = {"horizontal": 0.0, "vertical": 90.0, "diagonal": float(rng.choice([45.0, 135.0]))}[kind]
            angle = (base + rng.uniform(-12, 12)) % 180
            ln = rng.uniform(0.55, 0.85) * side
            wd = min(wd, ln / 8)
            a = math.radians(angle)
            sx, sy = cx - ln / 2 * math.cos(a), cy + ln / 2 * math.sin(a)
            arms = (tuple(_polyline(rng, sx, sy, angle, ln, 0.03)),)
            length = _line_length(arms[0]) + wd
        mask |= _render(arms, wd, h, w)
        truths.append(TrueCrack(kind, wd, float(length), float(angle), arms))
    img = {"brick": _brick, "concrete": _concrete, "plaster": _plaster}[surface](rng, h, w)
    img[mask] *= rng.uniform(0.25, 0.45)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), mask, truths


# Wide-gamut photos (unet.imaging reads a photo tagged with a colour profile in sRGB): the numbers a
# phone or camera writes for an sRGB scene, and the ICC profile that says how to read them.
def _xyz_matrix(primaries, white=(0.3127, 0.3290)) -> np.ndarray:
    """Linear RGB -> XYZ for these chromaticities (columns: red, green, blue), white D65."""
    p = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    w = np.array([white[0] / white[1], 1.0, (1 - white[0] - white[1]) / white[1]])
    return p * np.linalg.solve(p, w)


# Chromaticities (x, y) of red, green and blue; all three spaces have a D65 white.
SRGB_PRIMARIES = [(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)]
P3_PRIMARIES = [(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)]  # Display P3 (iPhones)
ADOBE_RGB_PRIMARIES = [(0.64, 0.33), (0.21, 0.71), (0.15, 0.06)]  # many cameras


def icc_profile(primaries, gamma: float, name: str) -> bytes:
    """A matrix/TRC ICC v2 display profile (D65 white, one gamma for all channels): the kind a
    camera or phone embeds (Display P3, Adobe RGB), made here since Pillow makes only sRGB."""
    import struct

    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    d65, d50 = np.array([0.95047, 1.0, 1.08883]), np.array([0.96422, 1.0, 0.82521])
    adapt = np.linalg.inv(bradford) @ np.diag((bradford @ d50) / (bradford @ d65)) @ bradford
    to_d50 = adapt @ _xyz_matrix(primaries)

    def xyz(v):
        return b"XYZ " + bytes(4) + b"".join(struct.pack(">i", round(c * 65536)) for c in v)

    text = name.encode("ascii")
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text) + 1) + text + b"\0" + bytes(12) + bytes(67)),
            (b"wtpt", xyz(d50)), (b"rXYZ", xyz(to_d50[:, 0])), (b"gXYZ", xyz(to_d50[:, 1])),
            (b"bXYZ", xyz(to_d50[:, 2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text" + bytes(4) + b"generated by unet.synthetic\0")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + b"".join(struct.pack(">i", round(c * 65536)) for c in d50))
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def in_wide_gamut(image: np.ndarray, primaries, gamma: float) -> np.ndarray:
    """An sRGB photo's colours as the numbers a camera writes in a wide-gamut space (those
    primaries, that gamma): the same scene, as ``icc_profile(primaries, gamma, ...)`` describes it."""
    v = image / 255.0
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    wide = linear @ np.linalg.solve(_xyz_matrix(primaries), _xyz_matrix(SRGB_PRIMARIES)).T
    return np.round(np.clip(wide, 0, 1) ** (1 / gamma) * 255).astype(np.uint8)
