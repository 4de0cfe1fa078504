"""Atomic writes (dep_lightning/atomic.py): old or new content, never a part; no temporary
file left behind; fsync before the rename; concurrent writers never share a temporary file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import dep_lightning
from dep_lightning.atomic import atomic_folder, atomic_open, atomic_path, atomic_write

OLD, NEW = b"old content\n" * 100, b"new content, longer than the old one\n" * 1000


class Boom(Exception):
    pass


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def fail_replace(monkeypatch) -> None:
    def replace(src, dst):
        raise OSError("simulated: rename failed")

    monkeypatch.setattr(os, "replace", replace)


@pytest.fixture
def events(monkeypatch):
    """Records fsyncs (inode and size at the time) and renames, in order."""
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        log.append(("fsync", info.st_ino, info.st_size))
        real_fsync(fd)

    def replace(src, dst):
        log.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


# --- old or new, never a part -------------------------------------------------------------


def test_atomic_write_replaces_the_content(tmp_path):
    target = tmp_path / "file.json"
    atomic_write(target, OLD)
    atomic_write(target, "ünïcode\n")
    assert target.read_bytes() == "ünïcode\n".encode("utf-8")
    assert names(tmp_path) == ["file.json"]


@pytest.mark.parametrize("existed", [True, False])
def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_temporary(tmp_path, existed):
    target = tmp_path / "rows.jsonl"
    if existed:
        target.write_bytes(OLD)
    with pytest.raises(Boom):
        with atomic_open(target, "wb") as handle:
            handle.write(NEW[: len(NEW) // 2])
            handle.flush()  # half the new content is on disk, under the temporary name
            raise Boom
    assert (target.read_bytes() if existed else None) == (OLD if existed else None)
    assert target.exists() == existed
    assert names(tmp_path) == (["rows.jsonl"] if existed else [])


def test_a_library_writer_that_raises_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.parquet"
    target.write_bytes(OLD)
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(NEW[:100])
            raise Boom
    assert target.read_bytes() == OLD
    assert names(tmp_path) == ["table.parquet"]


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_open", "atomic_path"])
def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, writer):
    target = tmp_path / "metrics.json"
    target.write_bytes(OLD)
    fail_replace(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        if writer == "atomic_write":
            atomic_write(target, NEW)
        elif writer == "atomic_open":
            with atomic_open(target, "wb") as handle:
                handle.write(NEW)
        else:
            with atomic_path(target) as tmp:
                tmp.write_bytes(NEW)
    assert target.read_bytes() == OLD
    assert names(tmp_path) == ["metrics.json"]


def test_atomic_path_hands_out_a_fresh_file_beside_the_target(tmp_path):
    target = tmp_path / "data.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert tmp.read_bytes() == b""  # claimed (created), nothing in it
        tmp.write_bytes(NEW)
    assert target.read_bytes() == NEW


@pytest.mark.parametrize("mode", ["r", "a", "rb+"])
def test_atomic_open_refuses_modes_that_do_not_write_anew(tmp_path, mode):
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "x", mode):
            pass
    assert names(tmp_path) == []


# --- durability ---------------------------------------------------------------------------


def test_the_file_is_fsynced_with_its_content_before_the_rename_then_the_folder(tmp_path, events):
    target = tmp_path / "manifest.json"
    atomic_write(target, NEW)
    file_ino, folder_ino = target.stat().st_ino, tmp_path.stat().st_ino  # os.replace keeps the inode
    assert events == [("fsync", file_ino, len(NEW)), ("replace", "manifest.json"),
                      ("fsync", folder_ino, tmp_path.stat().st_size)]


def test_a_path_written_by_a_library_is_fsynced_after_it_is_written(tmp_path, events):
    target = tmp_path / "table.parquet"
    with atomic_path(target) as tmp:
        tmp.write_bytes(NEW)  # the library writes and closes; nothing of it is synced yet
        assert events == []
    assert events[:2] == [("fsync", target.stat().st_ino, len(NEW)), ("replace", "table.parquet")]


def test_a_failed_write_is_not_renamed(tmp_path, events):
    with pytest.raises(Boom):
        with atomic_open(tmp_path / "x", "w"):
            raise Boom
    assert [e for e in events if e[0] == "replace"] == []


# --- concurrent writers -------------------------------------------------------------------


def test_two_writers_of_one_target_each_publish_their_own_complete_file(tmp_path):
    target = tmp_path / "predictions.jsonl"
    first_text, second_text = "first writer\n" * 500, "second writer\n" * 300
    with atomic_open(target, "w") as first:
        first.write(first_text[:100])
        with atomic_open(target, "w") as second:
            assert first.name != second.name
            second.write(second_text)
        assert target.read_text() == second_text  # the second finished first
        first.write(first_text[100:])
    assert target.read_text() == first_text  # not interleaved, not truncated by the other
    assert names(tmp_path) == ["predictions.jsonl"]


def test_a_writer_that_fails_does_not_remove_another_writers_temporary(tmp_path):
    target = tmp_path / "entry.json"
    with atomic_open(target, "wb") as survivor:
        with pytest.raises(Boom):
            with atomic_open(target, "wb") as failing:
                failing.write(b"doomed")
                raise Boom
        survivor.write(NEW)
    assert target.read_bytes() == NEW


# --- permissions --------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_path"])
def test_the_new_file_has_the_permissions_of_a_plain_write(tmp_path, writer):
    plain, target = tmp_path / "plain", tmp_path / "atomic"
    old_umask = os.umask(0o027)
    try:
        plain.write_bytes(NEW)
        if writer == "atomic_write":
            atomic_write(target, NEW)
        else:
            with atomic_path(target) as tmp:
                tmp.write_bytes(NEW)
    finally:
        os.umask(old_umask)
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o640


# --- folders ------------------------------------------------------------------------------


def fill(folder: Path, marker: str = "done.json") -> None:
    (folder / "weights.bin").write_bytes(NEW)
    (folder / "sub").mkdir()
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / marker).write_text("{}")


def test_atomic_folder_publishes_the_folder_and_fsyncs_its_files(tmp_path, events):
    target = tmp_path / "model"
    with atomic_folder(target, done="done.json") as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and names(tmp) == []
        fill(tmp)
    assert names(target) == ["done.json", "sub", "weights.bin"] and names(tmp_path) == ["model"]
    synced = {e[1] for e in events if e[0] == "fsync"}
    for path in (target / "weights.bin", target / "sub" / "tokenizer.json", target / "sub", target, tmp_path):
        assert path.stat().st_ino in synced, path


def test_atomic_folder_that_raises_publishes_nothing_and_leaves_nothing(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(Boom):
        with atomic_folder(target, done="done.json") as tmp:
            fill(tmp)
            raise Boom
    assert names(tmp_path) == []


def test_atomic_folder_keeps_a_concurrent_winners_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target, done="done.json") as tmp:
        fill(tmp)
        target.mkdir()  # another process finished first
        (target / "done.json").write_text('{"winner": true}')
        (target / "weights.bin").write_bytes(OLD)
    assert json.loads((target / "done.json").read_text()) == {"winner": True}
    assert (target / "weights.bin").read_bytes() == OLD and names(tmp_path) == ["model"]


def test_atomic_folder_over_an_unfinished_folder_is_an_error(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "leftover.bin").write_bytes(OLD)  # not a finished folder: no done.json
    with pytest.raises(OSError):
        with atomic_folder(target, done="done.json") as tmp:
            fill(tmp)
    assert names(target) == ["leftover.bin"] and names(tmp_path) == ["model"]


# --- the package's writers use it ---------------------------------------------------------


def test_the_package_writers_keep_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    from dep_lightning.atomic import write_json
    from dep_lightning.callbacks.predictions import write_jsonl
    from dep_lightning.models.staged import StageCache

    cache = StageCache(tmp_path / "stages")
    key = cache.key("prompt", "tiny@abc", {})
    metrics, predictions = tmp_path / "run" / "metrics.json", tmp_path / "predictions" / "test.jsonl"
    cases = [(metrics, lambda: write_json(metrics, {"n": 1})),
             (predictions, lambda: write_jsonl(predictions, [{"sample_id": "a/b/1"}])),
             (cache.path(key), lambda: cache.put(key, {"output": "a profile"}))]
    for path, _ in cases:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(OLD)
    fail_replace(monkeypatch)
    for path, write in cases:
        with pytest.raises(OSError, match="simulated"):
            write()
        assert path.read_bytes() == OLD
        assert names(path.parent) == [path.name], path


def test_no_hand_written_rename_outside_the_helper():
    """Every temporary-file-then-rename goes through dep_lightning/atomic.py."""
    root = Path(dep_lightning.__file__).parent
    pattern = re.compile(r"\bos\.(replace|rename)\(|\btmp\w*\.(replace|rename)\(|\bmkstemp\(|NamedTemporaryFile")
    offenders = [f"{p.relative_to(root)}:{n}" for p in sorted(root.rglob("*.py")) if p.name != "atomic.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
