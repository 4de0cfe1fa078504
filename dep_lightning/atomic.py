"""Atomic writes: a reader of a path sees its old content or its new content, never a part.

The files that a later run reads back as complete (metrics, predictions, stage texts,
embedding shards and their manifest, prepared DPL splits, converted models) are written
through here, so that a crash, a kill or a full disk mid-write cannot leave a truncated
file in their place. The recipe:

1. write a temporary file beside the target (same directory, so the rename below stays
   on one file system); its name is unique to this writer (``.<name>.tmp-<pid>-<random>``,
   created with ``O_EXCL``), so concurrent writers of one target never share it;
2. flush it and ``fsync`` it: without this a crash soon after the rename can leave the
   new name pointing at empty or partial data;
3. ``os.replace`` it onto the target (atomic on a POSIX file system);
4. ``fsync`` the directory, so the rename itself survives a crash (POSIX only: elsewhere
   a directory cannot be opened for it).

If anything raises before the rename, the temporary file is removed and the error goes
on; the target keeps its old content (or stays absent). A writer killed outright leaves
its hidden ``.tmp-`` file behind; no reader looks at such names.

* :func:`atomic_write` writes ``str`` (UTF-8) or ``bytes``.
* :func:`atomic_open` yields a file object, for writers that stream.
* :func:`atomic_path` yields the temporary path, for libraries that want a path
  (``pyarrow.parquet.write_table``...). Hand it only to writers that keep the name as
  given: ``np.save`` and ``np.savez`` append ``.npy`` / ``.npz`` to a path that lacks it,
  so give them the file object from :func:`atomic_open` instead.
* :func:`atomic_folder` does the same for a whole folder (a saved model), published once.
* :func:`write_json` writes a JSON object (indented), creating the folder.

Files are created with mode ``0o666`` minus the umask, like ``open(path, "w")``, so a
replaced target gets the permissions a plain write would have given it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_folder", "atomic_open", "atomic_path", "atomic_write"]


def atomic_write(target: str | os.PathLike, data: str | bytes) -> None:
    """Replace ``target`` with ``data`` (a ``str`` is written as UTF-8), atomically."""
    with atomic_open(target, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON atomically, creating the folder: an interrupted run
    leaves the old file or none."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(payload, indent=2) + "\n")


@contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open`` a temporary file for writing; on a clean exit it replaces ``target``.

    ``mode`` must write from scratch (``"w"``, ``"wb"``...); ``kwargs`` go to ``open``
    (``encoding``, ``newline``...). The file is flushed and fsynced before the rename."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes a new file: mode must contain 'w', got {mode!r}")
    with _replacing(Path(target)) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path (an empty file) to write; on a clean exit it is fsynced and replaces ``target``."""
    with _replacing(Path(target)) as tmp:
        yield tmp
        _fsync(tmp)


@contextmanager
def atomic_folder(target: str | os.PathLike, done: str) -> Iterator[Path]:
    """A temporary empty folder to fill; on a clean exit it is fsynced and renamed to ``target``.

    For folders built once and then only read (a converted model). A folder cannot be
    renamed onto a non-empty one: if ``target`` already holds the file ``done``, another
    process published it first and this copy is dropped; otherwise the error goes on.
    The temporary folder is removed in every case."""
    target = Path(target)
    tmp = _temp_name(target)
    tmp.mkdir()  # fails if the name exists: never someone else's folder
    try:
        yield tmp
        _fsync_tree(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / done).is_file():
                raise
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """Claim a temporary file beside ``target``; rename it onto ``target`` when the block ends
    cleanly, remove it when it raises."""
    tmp = _temp_name(target)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after the rename


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:16]}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where a directory can be opened and fsynced)."""
    if os.name == "posix":
        _fsync(folder)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``, contents before the folders naming them."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync_dir(Path(folder))
