"""One error path for every command (issue 20 item 6).

Every input or configuration problem ends in exit 2 and one stderr line,
``dep-lightning: error: <file>[:<line>]: <kind>, field …, value …``; configuration values
are checked before any data is read; anything else (a bug) keeps its traceback.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dep_lightning.cli import main, user_error
from dep_lightning.data.errors import ConfigError, InputError, json_error
from dep_lightning.safety import check_checkpoint_path
from tests.helpers import tiny_override
from tests.results.runs import write_run

ROOT = Path(__file__).resolve().parents[2]


def reviews(n: int = 40) -> bytes:
    return b"".join(json.dumps({"reviewerID": f"U{i % 5}", "asin": f"I{i}", "reviewText": f"review number {i}",
                                "summary": "s", "overall": 4.0, "unixReviewTime": 1393545600 + i}).encode() + b"\n"
                    for i in range(n))


def predictions(n: int = 200) -> bytes:
    return b"".join(json.dumps({"sample_id": i, "prediction": "a b c", "reference": "a b d"}).encode() + b"\n"
                    for i in range(n))


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI entry in-process; it must exit 2 with exactly one stderr line."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dep-lightning: error: "), err
    return lines[0].removeprefix("dep-lightning: error: ")


def truncated_gzip(path: Path, content: bytes) -> Path:
    packed = gzip.compress(content)
    path.write_bytes(packed[: len(packed) // 2])
    return path


def prepare(path) -> list[str]:
    return ["prepare", "--source", "FiveCoreSource", "--source.reviews", str(path)]


# ------------------------------------------------------------------ prepare: file-level faults
def test_prepare_truncated_gzip_names_the_file_and_line(tmp_path, capsys):
    path = truncated_gzip(tmp_path / "reviews_Tools_5.json.gz", reviews(2000))
    message = one_line_error(capsys, prepare(path))
    assert message.startswith(f"{path}:") and ": truncated gzip file, value '" in message


def test_prepare_plain_file_named_gz(tmp_path, capsys):
    path = tmp_path / "reviews_Tools_5.json.gz"
    path.write_bytes(reviews())
    assert one_line_error(capsys, prepare(path)).startswith(f"{path}:1: not a gzip file, value ")


def test_prepare_directory_as_reviews_file(tmp_path, capsys):
    folder = tmp_path / "reviews_Tools_5.json"
    folder.mkdir()
    message = one_line_error(capsys, prepare(folder))
    assert (message.startswith(f"{folder}: is a directory, value ")
            and message.endswith("(expected a file of JSON lines)"))


# ------------------------------------------------------------------ evaluate
def test_evaluate_directory(tmp_path, capsys):
    assert one_line_error(capsys, ["evaluate", str(tmp_path)]).startswith(f"{tmp_path}: is a directory")


def test_evaluate_truncated_gzip_and_binary_file(tmp_path, capsys):
    path = truncated_gzip(tmp_path / "test.jsonl.gz", predictions())
    message = one_line_error(capsys, ["evaluate", str(path)])
    assert re.match(rf"{re.escape(str(path))}:\d+: truncated gzip file, value '\d+ whole line\(s\) read'", message)
    noise = tmp_path / "noise.jsonl"
    noise.write_bytes(b"\xff\xfe\x00binary")
    assert one_line_error(capsys, ["evaluate", str(noise)]).startswith(f"{noise}:1: undecodable bytes")


def test_evaluate_reads_a_whole_gzip_file(tmp_path, capsys):
    path = tmp_path / "test.jsonl.gz"
    path.write_bytes(gzip.compress(predictions(5)))
    main(["evaluate", str(path), "--out", str(tmp_path / "scores.json")])
    assert json.loads((tmp_path / "scores.json").read_text())["input"]["samples"] == 5


# ------------------------------------------------------------------ tables and its error formatter
@pytest.mark.parametrize("name", ["manifest.json", "metrics.json"])
def test_tables_on_a_file_truncated_at_its_end(tmp_path, capsys, name):
    run = write_run(tmp_path / "runs" / "a", {"Books": {"rouge1": 0.3, "meteor": 0.2}}, predictions=None)
    text = json.dumps(json.loads((run / name).read_text()), indent=2)
    (run / name).write_text(text[:-1] + "\n")  # the closing brace lost, a newline kept
    message = one_line_error(capsys, ["tables", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "t"),
                                      "--no-figures"])
    assert message.startswith(f"{run / name}:") and "malformed JSON, value 'end of file'" in message


def test_json_error_formatter_on_every_truncation():
    """Whatever prefix of a JSON document is read, the error names a line the text has or its end."""
    text = json.dumps({"schema": 1, "method": "dep", "ablation": {"k": 4, "with_text": True}}, indent=2) + "\n"
    lines = text.splitlines()
    for cut in range(len(text) - 1):
        part = text[:cut]
        try:
            json.loads(part)
        except json.JSONDecodeError as exc:
            error = json_error("m.json", part, exc)
        else:  # pragma: no cover - only the whole document parses
            continue
        assert isinstance(error, InputError) and error.kind == "malformed JSON" and "\n" not in str(error)
        assert error.value == "end of file" or any(line.startswith(error.value) for line in lines)


# ------------------------------------------------------------------ fit / test --ckpt_path
def test_checkpoint_layouts(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, good)
    check_checkpoint_path(good)  # a torch.save file passes
    for name in ("last", "best", None):
        check_checkpoint_path(name)  # Lightning's own names are left to it
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.ckpt"
    text.write_text('{"a": 1}\n')
    other_zip = tmp_path / "other.ckpt"
    import zipfile

    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    folder = tmp_path / "folder.ckpt"
    folder.mkdir()
    for path in (truncated, text, other_zip, folder):
        with pytest.raises(InputError) as info:
            check_checkpoint_path(path)
        assert (info.value.path, info.value.kind, info.value.field) == (str(path), "not a checkpoint", "ckpt_path")
    with pytest.raises(InputError, match="no such checkpoint"):
        check_checkpoint_path(tmp_path / "missing.ckpt")
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "mp_rank_00_model_states.pt").write_bytes(b"")
    check_checkpoint_path(folder)  # DeepSpeed's layout passes (its contents are checked where read)


def test_fit_with_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    override = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", save_dir=tmp_path / "runs")
    ckpt = tmp_path / "notes.ckpt"
    ckpt.write_text("not a checkpoint\n")
    message = one_line_error(capsys, ["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--config",
                                      str(override), "--ckpt_path", str(ckpt)])
    assert message.startswith(f"{ckpt}: not a checkpoint, field 'ckpt_path'")
    assert not (tmp_path / "embeddings").exists()  # stopped before any data was read or encoded


# ------------------------------------------------------------------ configuration, checked before data
def test_negative_val_size_is_refused_before_any_data_is_read(tmp_path, capsys):
    missing = tmp_path / "not_read.json"  # would be "no such file" if it were read first
    assert one_line_error(capsys, [*prepare(missing), "--val_size", "-3"]) == (
        "configuration: field 'val_size', value -3 (must be an integer >= 0: rows of the merged val splits)")


@pytest.mark.parametrize("option,value,field", [
    ("min_text_chars", "0", "thresholds.min_text_chars"),
    ("min_item_users", "-1", "thresholds.min_item_users"),
    ("max_user_reviews", "2", "thresholds.max_user_reviews"),
    ("max_description_chars", "5", "thresholds.max_description_chars"),
])
def test_invalid_thresholds(tmp_path, capsys, option, value, field):
    argv = [*prepare(tmp_path / "not_read.json"), f"--source.thresholds.{option}", value]
    if option == "max_description_chars":
        argv += ["--source.thresholds.min_description_chars", "10"]
    assert one_line_error(capsys, argv).startswith(f"configuration: field {field!r}, value {value}")


def test_fit_config_error_inside_the_data_module_is_one_line(tmp_path, capsys):
    """jsonargparse wraps the data module's ConfigError in its own ValueError: it is unwrapped."""
    override = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", save_dir=tmp_path / "runs")
    message = one_line_error(capsys, ["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--config",
                                      str(override), "--data.init_args.val_size", "-1"])
    assert message.startswith("configuration: field 'val_size', value -1")


# ------------------------------------------------------------------ bugs keep their traceback
def test_a_bug_is_not_taken_for_bad_input(tmp_path, monkeypatch):
    assert user_error(KeyError("x")) is None and user_error(ValueError("a bug")) is None
    wrapped = ValueError("union")
    wrapped.__cause__ = ConfigError("k", -1, "must be >= 0")
    assert user_error(wrapped) is wrapped.__cause__
    handled = RuntimeError("bug while reporting")  # raised while handling an input error: still a bug
    handled.__context__ = InputError("f", 1, None, "v", "malformed JSON")
    assert user_error(handled) is None

    import functools

    import dep_lightning.evaluate

    @functools.wraps(dep_lightning.evaluate.evaluate)  # its options are evaluate's
    def broken(*args, **kwargs):
        """Stands in for evaluate."""
        raise KeyError("a programming error")

    monkeypatch.setattr("dep_lightning.evaluate.evaluate", broken)
    path = tmp_path / "p.jsonl"
    path.write_bytes(predictions(1))
    with pytest.raises(KeyError):
        main(["evaluate", str(path)])


# ------------------------------------------------------------------ the installed command, as a user runs it
@pytest.mark.parametrize("case", ["prepare truncated gzip", "evaluate directory"])
def test_subprocess_prints_one_line_and_exits_2(tmp_path, case):
    if case == "prepare truncated gzip":
        path = truncated_gzip(tmp_path / "reviews_Tools_5.json.gz", reviews(2000))
        argv = prepare(path)
    else:
        path = tmp_path
        argv = ["evaluate", str(path)]
    done = subprocess.run([sys.executable, "-m", "dep_lightning", *argv], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dep-lightning: error: {path}"), done.stderr
    assert "Traceback" not in done.stderr
