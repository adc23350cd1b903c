"""Photos and masks in the forms people store them; every bad file named in the error."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import rgb, save_like_a_phone
from unet.imaging import ImageError, image_size, read_image, read_mask
from unet.synthetic import P3_PRIMARIES, icc_profile, in_wide_gamut


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (no real pixel data)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_rgba_grayscale_palette_cmyk_and_16bit_become_rgb(tmp_path):
    base = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgb = Image.fromarray(base)
    cases = {
        "rgba.png": rgb.convert("RGBA"),
        "gray.png": rgb.convert("L"),
        "palette.gif": rgb.convert("P"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "photo.bmp": rgb,
        "photo.tiff": rgb,
    }
    for name, img in cases.items():
        out = read_image(_save(img, tmp_path / name))
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8, name
    # 16-bit grayscale: full range maps to 0..255
    arr16 = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    out = read_image(_save(Image.fromarray(arr16), tmp_path / "deep.tiff"))
    assert out.shape == (20, 30, 3) and out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    # RGBA transparency is shown as white, not black
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert read_image(_save(clear, tmp_path / "clear.png")).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (40, 20, 3)  # displayed portrait
    assert out[:10, :, 0].mean() > 200  # the left strip is now at the top
    assert image_size(path) == (20, 40)


def test_an_iphone_heic_photo_is_read_upright_like_its_jpeg_and_found_in_a_folder(tmp_path):
    """HEIC is what iPhones save: read (pi-heif), turned upright, found by a folder scan whatever
    the extension's case, and its GPS read for the survey map. AVIF too (Pillow's own)."""
    from unet.predict import collect_images
    from unet.survey import photo_metadata

    img = np.full((32, 64, 3), 90, np.uint8)
    img[:, :16] = (250, 20, 20)  # red strip on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # held in portrait: rotate 90 degrees clockwise on display
    exif[0x8825] = {1: "N", 2: (45.0, 30.0, 0.0), 3: "E", 4: (9.0, 10.0, 0.0)}
    folder = tmp_path / "survey"
    folder.mkdir()
    for name in ("IMG_0042.HEIC", "rotated.jpg"):
        save_like_a_phone(img, folder / name, exif, quality=95)
    save_like_a_phone(img, folder / "wall.avif", quality=95)
    heic, jpeg = read_image(folder / "IMG_0042.HEIC"), read_image(folder / "rotated.jpg")
    assert heic.shape == jpeg.shape == (64, 32, 3)  # upright: portrait, as the phone showed it
    assert heic[:16, :, 0].mean() > 200 and heic[40:, :, 0].mean() < 150  # the left strip is now at the top
    assert np.abs(heic.astype(int) - jpeg).mean() < 8
    assert image_size(folder / "IMG_0042.HEIC") == (32, 64)
    assert read_image(folder / "wall.avif").shape == (32, 64, 3)
    assert sorted(p.name for p, _ in collect_images([folder])) == ["IMG_0042.HEIC", "rotated.jpg", "wall.avif"]
    meta = photo_metadata(folder / "IMG_0042.HEIC")
    assert meta["latitude"] == pytest.approx(45.5) and meta["longitude"] == pytest.approx(9 + 10 / 60)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = read_image(path)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.png", b"", "empty"),
        ("page.png", b"<html><body>not an image</body></html>", "not a photo"),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not a photo"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as err:
        read_image(path)
    assert name in str(err.value)


def test_a_wide_gamut_photo_is_read_in_srgb_like_the_training_photos(tmp_path):
    """An iPhone writes Display P3 numbers and tags them with its profile; the model learned from
    sRGB. Tagged, the numbers are converted back to the scene's sRGB; untagged, sRGB-tagged or with
    a broken profile, they are read as written."""
    from PIL import ImageCms

    # patches of colour (a HEIC, like a JPEG, keeps colour at half resolution)
    scene = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    p3 = in_wide_gamut(scene, P3_PRIMARIES, 2.2)
    assert np.abs(p3.astype(int) - scene).mean() > 8  # the same colours, other numbers
    profile = icc_profile(P3_PRIMARIES, 2.2, "Display P3 (generated)")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, icc in [("p3.png", profile), ("p3.heic", profile), ("untagged.png", None),
                      ("srgb.png", srgb), ("broken.png", profile[:200])]:
        out = read_image(save_like_a_phone(p3, tmp_path / name, quality=95, icc=icc)).astype(int)
        if icc is profile:
            assert np.abs(out - scene).mean() < (1 if name.endswith(".png") else 3), name
        else:
            assert np.array_equal(out, p3), name


def test_tagged_photos_decoded_on_threads_read_as_they_do_one_by_one(tmp_path):
    """A folder's photos are decoded ahead on threads (predict): each conversion stands alone."""
    from concurrent.futures import ThreadPoolExecutor

    profile = icc_profile(P3_PRIMARIES, 2.2, "Display P3 (generated)")
    paths = [save_like_a_phone(in_wide_gamut(rgb(96, 128, seed=i), P3_PRIMARIES, 2.2), tmp_path / f"p{i}.png",
                               icc=profile) for i in range(8)]
    alone = [read_image(p) for p in paths]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(read_image, paths * 4))
    assert all(np.array_equal(a, b) for a, b in zip(alone * 4, together))
    assert not np.array_equal(alone[0], in_wide_gamut(rgb(96, 128, seed=0), P3_PRIMARIES, 2.2))  # converted


def test_a_heic_photo_without_its_decoder_says_what_to_install(tmp_path, monkeypatch):
    import unet.imaging

    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic not really a photo")
    with pytest.raises(ImageError, match="not a photo this tool can read .*HEIC"):
        read_image(path)
    monkeypatch.setattr(unet.imaging, "HEIF_READABLE", False)  # an environment without pi-heif
    with pytest.raises(ImageError, match="IMG_0001.HEIC: a HEIC/HEIF photo, and the pi-heif package"):
        read_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "HEIC"])
def test_truncated_files_are_reported(tmp_path, fmt):
    path = save_like_a_phone(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8),
                             tmp_path / f"whole.{fmt.lower()}")
    data = path.read_bytes()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as err:
        read_image(path)
    assert "cut." in str(err.value)


def test_huge_header_is_refused_before_decoding():
    with pytest.raises(ImageError, match="30000x30000") as err:
        read_image(_png_header_only(30000, 30000), name="bomb.png")
    assert "bomb.png" in str(err.value)


def test_a_photo_just_over_the_limit_says_by_how_much():
    with pytest.raises(ImageError) as err:
        read_image(_png_header_only(10001, 10000), name="big.png")
    assert "is 10001x10000 pixels (100.01 MP); the limit is 100 MP" in str(err.value)
    with pytest.raises(ImageError, match=r"\(20 MP\); the limit is 12\.5 MP"):
        read_image(_png_header_only(5000, 4000), name="phone.png", max_pixels=12_500_000)


def test_one_pixel_image(tmp_path):
    out = read_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "dot.png"))
    assert out.shape == (1, 1, 3) and tuple(out[0, 0]) == (1, 2, 3)


def test_masks_in_every_encoding(tmp_path):
    truth = np.zeros((6, 6), bool)
    truth[1:3, 2:5] = True
    as01 = Image.fromarray(truth.astype(np.uint8))
    as255 = Image.fromarray(truth.astype(np.uint8) * 255)
    rgb = Image.fromarray(np.stack([truth * 200, truth * 0, truth * 10], -1).astype(np.uint8))
    pal = as01.convert("P")
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    rgba = rgb.convert("RGBA")
    for name, img in {"m01.png": as01, "m255.png": as255, "mrgb.png": rgb, "mpal.png": pal, "mrgba.png": rgba}.items():
        np.testing.assert_array_equal(read_mask(_save(img, tmp_path / name)), truth, err_msg=name)


def test_upload_names_never_become_paths():
    with pytest.raises(ImageError) as err:
        read_image(b"junk", name="../../etc/<img src=x>.png")
    assert str(err.value).startswith("<img src=x>.png:")  # base name only; escaping is the page's job


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 7, 3), (37, 53, 3), (9, 4, 4)])
def test_colour_png_decodes_to_the_same_pixels(shape):
    """Overlays are written by our own PNG encoder (one filter, zlib level 1): every pixel comes
    back exactly, through Pillow's decoder and its CRC checks, for RGB and RGBA and rows of one
    pixel; rows that differ by more than 127 wrap modulo 256 as PNG defines."""
    from unet.imaging import encode_png

    rng = np.random.default_rng(sum(shape))
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    arr[::2] = 255 - arr[::2]  # neighbouring rows far apart
    data = encode_png(arr)
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.mode == ("RGB" if shape[2] == 3 else "RGBA") and img.size == (shape[1], shape[0])
    np.testing.assert_array_equal(np.asarray(img), arr)
    view = np.ascontiguousarray(arr[:, ::-1])  # a mirrored copy, and a non-contiguous view alike
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(arr[:, ::-1])))), view)


def test_an_overlay_png_is_no_larger_than_pillows():
    """The one fixed filter costs no size on what the tool writes: a generated wall's overlay."""
    from unet.imaging import encode_png
    from unet.predict import overlay
    from unet.synthetic import damaged_wall

    image, crack, spall = damaged_wall(3, 384, 544)
    pic = overlay(image, crack | spall)
    buf = io.BytesIO()
    Image.fromarray(pic).save(buf, format="PNG", compress_level=1)
    ours = encode_png(pic)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(ours))), pic)
    assert len(ours) <= 1.03 * len(buf.getvalue()), (len(ours), len(buf.getvalue()))
