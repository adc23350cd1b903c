"""A dataset uploaded as a zip: unpacked whole or not at all, and never outside its folder."""

import io
import stat
import zipfile

import pytest

from unet.data import DatasetError, scan_dataset
from unet.dataset_zip import unpack_dataset_zip


def _zip_of(folder, prefix="", extra=()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, prefix + f.relative_to(folder).as_posix())
        for name, data in extra:
            z.writestr(name, data)
    return buf.getvalue()


def test_a_zipped_dataset_folder_becomes_a_dataset(tmp_path, sample_dir):
    data = tmp_path / "data"
    blob = _zip_of(sample_dir, prefix="walls/", extra=[("walls/__MACOSX/._x.png", b"junk"),
                                                        ("walls/notes.exe", b"MZ")])
    dest = unpack_dataset_zip(io.BytesIO(blob), data, "site visit 3")
    assert dest == data / "site-visit-3"
    assert len(scan_dataset(dest).samples) == len(scan_dataset(sample_dir).samples)  # the one top folder is dropped
    assert not list(dest.rglob("*.exe")) and not list(dest.rglob("__MACOSX"))
    with pytest.raises(DatasetError, match="already exists"):
        unpack_dataset_zip(io.BytesIO(blob), data, "site-visit-3")


@pytest.mark.parametrize("entry, why", [("../evil.png", "outside"), ("/etc/evil.png", "outside"),
                                        ("a/../../evil.png", "outside"), ("C:/evil.png", "outside")])
def test_entries_that_point_outside_are_refused_and_nothing_is_written(tmp_path, sample_dir, entry, why):
    data = tmp_path / "data"
    blob = _zip_of(sample_dir, extra=[(entry, b"x")])
    with pytest.raises(DatasetError, match=why):
        unpack_dataset_zip(io.BytesIO(blob), data, "bad")
    assert not (tmp_path / "evil.png").exists() and not (data.exists() and any(data.iterdir()))


def test_links_bombs_junk_and_empty_zips_are_refused(tmp_path, sample_dir):
    data = tmp_path / "data"
    link = zipfile.ZipInfo("images/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        unpack_dataset_zip(io.BytesIO(buf.getvalue()), data, "links")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images/a.png", b"\0" * (50 * 2**20))
    with pytest.raises(DatasetError, match="zip bomb"):
        unpack_dataset_zip(io.BytesIO(bomb.getvalue()), data, "bomb")
    with pytest.raises(DatasetError, match="more than"):
        unpack_dataset_zip(io.BytesIO(_zip_of(sample_dir)), data, "big", max_bytes=10_000)
    with pytest.raises(DatasetError, match="not a zip"):
        unpack_dataset_zip(io.BytesIO(b"PK not really"), data, "junk")
    photos_only = io.BytesIO()
    with zipfile.ZipFile(photos_only, "w") as z:
        z.writestr("x.png", b"not even a png")
    with pytest.raises(DatasetError, match="no usable photo/mask pair"):
        unpack_dataset_zip(io.BytesIO(photos_only.getvalue()), data, "nomasks")
    assert not (data.exists() and any(data.iterdir()))  # nothing half-written stays
