"""Reading photos and masks the way people actually store them.

Every reader here returns plain numpy arrays (RGB ``uint8`` photos, ``bool`` masks)
and turns every way a file can be bad into an :class:`ImageError` whose message
names the file and the problem in plain words. Nothing here imports Keras.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UnetError

# Photos larger than this are refused from their header, before any pixel is decoded,
# so a file that claims 30000x30000 pixels cannot exhaust memory. 100 MP covers every
# phone and most DSLR photos (a 12 MP phone photo is 4000x3000).
MAX_PIXELS = 100_000_000

# Our own header check (below) refuses oversized photos with a message that gives the
# size; Pillow's guard would refuse them first with a vaguer one.
Image.MAX_IMAGE_PIXELS = None

# HEIC/HEIF is what iPhones save by default: pi-heif (pillow-heif's decoder-only build) teaches
# Pillow to read it. libheif applies the rotation the container carries while decoding and the
# EXIF orientation then reads 1, so the EXIF transpose below is a no-op, as it should be. Without
# the package (an environment that installed only part of requirements.txt), such a photo is
# still found in a folder and named as unreadable with the reason, rather than skipped in
# silence. AVIF is Pillow's own.
try:
    import pi_heif

    pi_heif.register_heif_opener()
    HEIF_READABLE = True
except ImportError:  # pragma: no cover - requirements.txt installs it
    HEIF_READABLE = False
HEIF_EXTENSIONS = (".heic", ".heif")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".avif") + HEIF_EXTENSIONS
# What the pages' uploaders accept (Streamlit compares extensions without case: IMG_0042.HEIC too).
UPLOAD_TYPES = [ext[1:] for ext in IMAGE_EXTENSIONS]

Source = Union[str, os.PathLike, bytes, BinaryIO]


class ImageError(UnetError, ValueError):
    """A file that cannot be used as a photo or a mask; the message names the file."""

    def __init__(self, name: str, problem: str):
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


def display_name(source: Source, name: str | None = None) -> str:
    """The base name used in messages; never a path a caller could be led to."""
    if name:
        return Path(str(name).replace("\\", "/")).name or "upload"
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return getattr(source, "name", None) and Path(source.name).name or "upload"


def _open(source: Source, name: str, max_pixels: int) -> Image.Image:
    """Open ``source`` lazily and check its size from the header alone."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(name, "the file is empty (0 bytes)")
        fp: BinaryIO = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageError(name, "is a folder, not an image file")
            if path.stat().st_size == 0:
                raise ImageError(name, "the file is empty (0 bytes)")
            fp = open(path, "rb")
        except FileNotFoundError:  # also a file that vanished while a folder was scanned
            raise ImageError(name, "the file does not exist") from None
        except OSError as exc:  # permissions, a name too long, an I/O error
            raise ImageError(name, f"cannot be read ({exc.strerror or exc})") from None
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError:
        raise ImageError(name, "the image has too many pixels to process safely") from None
    except UnidentifiedImageError:
        if not HEIF_READABLE and Path(name).suffix.lower() in HEIF_EXTENSIONS:
            raise ImageError(name, "a HEIC/HEIF photo, and the pi-heif package that reads them is not "
                                   "installed (pip install -r requirements.txt)") from None
        raise ImageError(
            name,
            "not a photo this tool can read (supported: JPEG, HEIC/HEIF, PNG, TIFF, BMP, GIF, WebP, AVIF)",
        ) from None
    except OSError as exc:
        raise ImageError(name, f"cannot be read ({exc})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(name, f"has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(
            name,
            f"is {w}x{h} pixels ({_megapixels(w * h)} MP); the limit is "
            f"{_megapixels(max_pixels)} MP. Downscale or crop the photo first",
        )
    return img


def _megapixels(pixels: int) -> str:
    """Megapixels to two decimals, trailing zeros dropped: 900, 12.19, 100.01 (never "100 > 100")."""
    return f"{pixels / 1e6:.2f}".rstrip("0").rstrip(".")


def _load(img: Image.Image, name: str) -> Image.Image:
    """Decode the pixels (first frame of an animation), applying EXIF orientation."""
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # libheif raises ValueError
        text = " ".join(str(exc).split())  # libheif's messages span lines
        if any(word in text.lower() for word in ("truncated", "broken", "incomplete", "end of file")):
            raise ImageError(name, "the file is truncated or damaged (it ends too early)") from None
        raise ImageError(name, f"the pixels cannot be decoded ({text})") from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale 16-bit or float samples to 0..255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if 0.0 <= lo and hi <= 1.0:
            return np.round(np.nan_to_num(arr) * 255).astype(np.uint8)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return np.round((np.nan_to_num(arr) - lo) * scale).astype(np.uint8)
    # Integer images wider than 8 bits (16-bit PNG/TIFF): full range is 0..65535.
    return (np.clip(arr.astype(np.int64), 0, 65535) // 257).astype(np.uint8)


def _rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.repeat(_to_uint8(np.asarray(img))[..., None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent areas become white, as image viewers show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_image(source: Source, name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a photo as an RGB ``uint8`` array of shape (H, W, 3).

    Grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB, in sRGB when the
    photo carries another colour profile (:func:`_in_srgb`); the EXIF
    orientation is applied so the array looks as the photo is displayed; for an
    animation the first frame is used.

    Args:
        source: a path, the file's bytes, or an open binary file.
        name: the name used in messages (defaults to the file's base name).
        max_pixels: photos with more pixels are refused before decoding.

    Returns:
        The photo as a contiguous (H, W, 3) ``uint8`` array.

    Raises:
        ImageError: the message names the file and what is wrong with it.
    """
    label = display_name(source, name)
    img = _open(source, label, max_pixels)
    try:
        img = _in_srgb(_load(img, label))
        return np.ascontiguousarray(_rgb_array(img))
    finally:
        img.close()


def _in_srgb(img: Image.Image) -> Image.Image:
    """The photo's colours in sRGB, the space of the training photos (none carries another
    profile). A photo tagged with another ICC profile (an iPhone's Display P3, a camera's Adobe
    RGB, a CMYK print profile) holds other numbers for the same colours: read as they are, fold
    1/5's photos re-encoded in Display P3 / Adobe RGB scored pixel F1 -0.0035 / -0.0026 on
    masonry and -0.0024 / -0.0066 on DeepCrack; converted, exactly their sRGB figures
    (bench/bench_colour.py). The conversion is littlecms's (Pillow's ImageCms), relative
    colorimetric: colours outside sRGB are clipped, as an sRGB screen shows them. Untagged and
    sRGB-tagged photos are left alone; a profile that cannot be read leaves the numbers as they
    are rather than losing the photo."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "CMYK"):
        return img
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return img
        # A profile of its own per call (0.08 ms): photos are decoded on several threads, and a
        # littlecms profile handle is not to be shared between them.
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.profileToProfile(img, profile, srgb, outputMode="RGB",
                                         renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img


def read_mask(source: Source, name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a damage mask as a ``bool`` array (H, W): True where a pixel is non-zero.

    Masks stored as 0/1, 0/255, palette indices, RGB or RGBA are all accepted; a
    pixel is damaged when any colour channel is non-zero (and, with an alpha
    channel, it is not fully transparent).
    """
    label = display_name(source, name)
    img = _open(source, label, max_pixels)
    try:
        img = _load(img, label)
        arr = np.asarray(img)
        if img.mode in ("RGBA", "LA", "PA"):
            colour, alpha = arr[..., :-1], arr[..., -1]
            return np.ascontiguousarray(np.any(colour > 0, axis=-1) & (alpha > 0))
        if arr.ndim == 3:
            return np.ascontiguousarray(np.any(arr > 0, axis=-1))
        return np.ascontiguousarray(arr > 0)
    finally:
        img.close()


def image_size(path: Source, name: str | None = None, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), read from the header."""
    label = display_name(path, name)
    img = _open(path, label, max_pixels)
    try:
        w, h = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block does not make the photo unusable
            orientation = 1
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    finally:
        img.close()


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image or a bool mask (saved as 0/255).

    Masks (a few kB) are compressed by Pillow at zlib level 6. Colour pictures (overlays,
    RGB or RGBA uint8) go through :func:`_colour_png`: level 1, which took a 12 MP overlay
    1.3 s in Pillow instead of 7.0 s at level 6 for a file 15% larger, and one fixed filter.
    """
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        return _colour_png(arr)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _png_chunk(tag: bytes, data) -> bytes:
    return struct.pack(">I", len(data)) + tag + bytes(data) + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def _colour_png(arr: np.ndarray, level: int = 1) -> bytes:
    """An RGB(A) uint8 picture as PNG bytes, every row with the "Up" filter (its difference from
    the row above, modulo 256, as the PNG specification defines it) and zlib at ``level``.

    Pillow tries five filters per row and keeps the best; on overlays of crack photos the "Up"
    filter alone gives files within 1% of that size, and numpy computes it for all rows at
    once. A 544x384 overlay: 19 ms in Pillow, 11 ms here (2-core AVX2); zlib also lets other
    threads run while it compresses, so a folder's writer threads work side by side.
    """
    h, w, c = arr.shape
    rows = np.ascontiguousarray(arr).reshape(h, w * c)
    filtered = np.empty((h, w * c + 1), np.uint8)
    filtered[:, 0] = 2  # filter type "Up"; the first row's "above" is zeros, so it is itself
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256
    header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 6, 0, 0, 0)  # 8 bits, RGB or RGBA
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(filtered, level)) + _png_chunk(b"IEND", b""))


def save_png(arr: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 image or a bool mask (0/255) as PNG, atomically."""
    from .files import write_bytes_atomic

    write_bytes_atomic(path, encode_png(arr))
