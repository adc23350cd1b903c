"""Writing files so that a reader (or a crash) never sees half of one.

Every file the package writes that someone else reads while it is written (run status,
history, checkpoints, model cards, masks, results) goes through :func:`atomic_path`:
the content goes to a temporary file beside the target, which then replaces the target
in one rename. A failure leaves the old file as it was and no temporary file behind,
and the error names the target, not the temporary file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write; on success it replaces ``path`` atomically.

    Args:
        path: the file to (re)place.
        suffix: ends the temporary name (Keras insists on ``.keras`` when saving).

    Example:
        >>> with atomic_path("model.keras", suffix=".keras") as tmp:
        ...     model.save(tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None or Path(exc.filename) == tmp:
            # Name the file the user knows about, not our temporary one.
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON so readers see the old file or the new one, never half of one."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def csv_text(rows: list[dict], fieldnames: list[str] | None = None, header: bool = True) -> str:
    """Rows as CSV text; columns are ``fieldnames`` then any other keys, in the order seen."""
    keys = list(fieldnames or [])
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    if keys:
        writer = csv.DictWriter(buf, fieldnames=keys)
        if header:
            writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def write_csv_atomic(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Write rows as CSV atomically (see :func:`csv_text` for the column order)."""
    write_text_atomic(path, csv_text(rows, fieldnames))


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when it is missing or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default
