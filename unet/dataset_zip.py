"""A dataset uploaded as a zip, unpacked safely into the data folder.

What a hostile or careless zip can do, and what happens here:

- entries with absolute paths or ``..`` (zip slip), and symbolic links: refused, naming the entry;
- a zip bomb: the uncompressed total is capped (``max_bytes``) and so is the ratio of
  uncompressed to compressed size per entry (:data:`MAX_RATIO`), both read from the
  zip's directory before anything is written, and checked again while writing;
- files that are neither photos, masks nor notes: skipped;
- a half-written dataset: everything goes into a hidden folder first, then one rename
  makes it appear; on any failure that folder is removed;
- a zip of one folder (what "compress" on a folder gives): that folder's contents become the dataset;
- a dataset the scanner cannot use: removed again, with the scan's reasons.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .data import DatasetError, scan_dataset
from .imaging import IMAGE_EXTENSIONS

MAX_RATIO = 200  # uncompressed / compressed size of one entry; photos and masks stay far below
MAX_FILES = 200_000
KEPT_EXTENSIONS = tuple(IMAGE_EXTENSIONS) + (".md", ".txt", ".json", ".csv")


def dataset_name(text: str) -> str:
    """A folder name from what the user typed: letters, digits, '-', '_' (spaces become '-')."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text.strip()).strip("-_")[:60]
    if not name:
        raise DatasetError(f"{text!r}: a dataset name needs letters or digits")
    return name


def unpack_dataset_zip(source: str | Path | BinaryIO, data_dir: str | Path, name: str,
                       max_bytes: int = 4 * 2**30, zip_name: str = "the zip") -> Path:
    """Unpack a zipped dataset into ``data_dir/<name>`` and check that it can be used.

    Args:
        source: the zip (a path or an open binary file, such as an upload).
        data_dir: the data folder; the dataset becomes a folder in it.
        name: the dataset's name (see :func:`dataset_name`).
        max_bytes: the most the unpacked files may take.
        zip_name: how messages call the zip.

    Returns:
        The new dataset folder.

    Raises:
        DatasetError: the zip or an entry is refused, the name is taken, or the unpacked
            folder holds no usable photo/mask pair; nothing is left behind.
    """
    name = dataset_name(name)
    data_dir = Path(data_dir)
    dest = data_dir / name
    if dest.exists():
        raise DatasetError(f"a dataset called {name!r} already exists in {data_dir}; choose another name")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{zip_name}: not a zip file that can be read ({exc})") from None
    with archive:
        members = _checked_members(archive, max_bytes, zip_name)
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".incoming-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            written = 0
            for info, rel in members:
                target = tmp.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:  # the directory lied about the sizes
                            raise DatasetError(f"{zip_name}: unpacks to more than {max_bytes / 2**20:.0f} MB")
                        out.write(chunk)
            scan = scan_dataset(tmp)
            if not scan.samples:
                reasons = "; ".join(str(p) for p in scan.problems[:3]) or "no photo with a matching mask"
                raise DatasetError(f"{zip_name}: no usable photo/mask pair inside ({reasons})")
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _checked_members(archive: zipfile.ZipFile, max_bytes: int,
                     zip_name: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The entries to unpack, with their paths inside the dataset; refuses the whole zip for a bad one."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > MAX_FILES:
        raise DatasetError(f"{zip_name}: {len(infos)} files; the limit is {MAX_FILES}")
    total = 0
    kept = []
    for info in infos:
        raw = info.filename.replace("\\", "/")
        path = PurePosixPath(raw)
        if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or ".." in path.parts:
            raise DatasetError(f"{zip_name}: the entry {raw!r} points outside the dataset folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(f"{zip_name}: the entry {raw!r} is a symbolic link")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 2**20:
            raise DatasetError(f"{zip_name}: the entry {raw!r} expands {info.file_size / info.compress_size:.0f}x "
                               "(a zip bomb?)")
        if path.name.startswith(".") or "__MACOSX" in path.parts or path.suffix.lower() not in KEPT_EXTENSIONS:
            continue
        total += info.file_size
        if total > max_bytes:
            raise DatasetError(f"{zip_name}: unpacks to more than {max_bytes / 2**20:.0f} MB")
        kept.append((info, path))
    if not kept:
        raise DatasetError(f"{zip_name}: holds no photos")
    # A zip of one folder: that folder's contents are the dataset.
    tops = {p.parts[0] for _, p in kept}
    if len(tops) == 1 and all(len(p.parts) > 1 for _, p in kept):
        kept = [(i, PurePosixPath(*p.parts[1:])) for i, p in kept]
    return kept
