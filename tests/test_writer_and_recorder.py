"""The two parts of a test run's callback: the PredictionWriter (rows to files) and the
ResultsRecorder (scores, hygiene, metrics.json, manifest.json), each on its own, and
TestMetricsWriter composing them, with real Lightning trainers on a model-free module."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from dep_lightning.callbacks import PredictionWriter, ResultsRecorder, TestMetricsWriter, WrittenPredictions
from dep_lightning.callbacks.recorder import scores_by_uniqueness
from dep_lightning.metrics import score_predictions

HISTORY = "the strings sound warm and bright on this guitar neck"


def rows(n: int = 6) -> list[dict]:
    """Prediction rows as ``test_step`` returns them; every third copies eight history words."""
    categories = ("Books", "CDs_and_Vinyl")
    out = []
    for i in range(n):
        prediction = HISTORY if i % 3 == 0 else f"a fine case number {i} for the price"
        out.append({"sample_id": f"{categories[i % 2]}/test/{i}", "user_id": f"u{i % 4}", "item_id": f"i{i}",
                    "category": categories[i % 2], "reference": f"a fine case for the price and {i} strings",
                    "history": [HISTORY], "prediction": prediction, "generated_tokens": 9, "hit_limit": i == 1})
    return out


class Rows(L.LightningModule):
    """Returns prepared prediction rows from its test / predict steps: no model, no tokenizer."""

    def __init__(self, backbone: str = "none"):
        super().__init__()
        self.save_hyperparameters()

    def test_step(self, batch, batch_idx):
        return [dict(row) for row in batch]

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return [dict(row) for row in batch]


def loader(samples: list[dict], batch_size: int = 4) -> DataLoader:
    return DataLoader(samples, batch_size=batch_size, collate_fn=list)


def trainer(folder: Path, callback: L.Callback, logger=False) -> L.Trainer:
    return L.Trainer(accelerator="cpu", default_root_dir=folder, logger=logger, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=[callback])


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class WordCounts:
    """A PredictionsRecorder that adds each prediction's word count and keeps what it is handed."""

    def __init__(self):
        self.recorded: list[WrittenPredictions] = []

    def annotate(self, stage: str, rows: list[dict]) -> None:
        for row in rows:
            row["words"] = len(row["prediction"].split())

    def record(self, trainer, pl_module, predictions: WrittenPredictions) -> None:
        self.recorded.append(predictions)


# -- the writer ---------------------------------------------------------------------------------------
def test_writer_hands_the_merged_rows_to_its_recorder_before_and_after_writing(tmp_path):
    recorder = WordCounts()
    samples = rows()
    trainer(tmp_path, PredictionWriter(recorder=recorder)).test(Rows(), loader(samples))

    folder = tmp_path / "predictions"
    (written,) = recorder.recorded
    assert written.stage == "test" and written.folder == tmp_path
    assert written.paths == [folder / "test.jsonl", folder / "test-Books.jsonl", folder / "test-CDs_and_Vinyl.jsonl"]
    # The files carry what annotate added; rows are in sample order, one per sample.
    in_file = read(folder / "test.jsonl")
    assert in_file == written.rows
    assert [r["sample_id"] for r in in_file] == sorted((r["sample_id"] for r in samples),
                                                       key=lambda s: (s.split("/")[0], int(s.split("/")[2])))
    assert [r["words"] for r in in_file] == [len(r["prediction"].split()) for r in in_file]
    assert read(folder / "test-Books.jsonl") == [r for r in in_file if r["category"] == "Books"]
    assert not list(folder.glob("*.part"))
    assert json.loads((folder / "test.progress.json").read_text())["final"] is True

    trainer(tmp_path, PredictionWriter(recorder=recorder)).predict(Rows(), loader(samples))
    assert recorder.recorded[-1].stage == "predict" and read(folder / "predict.jsonl") == recorder.recorded[-1].rows


def test_writer_without_a_recorder_writes_the_rows_as_returned(tmp_path):
    samples = rows(3)
    writer = PredictionWriter()
    trainer(tmp_path, writer).test(Rows(), loader(samples, batch_size=2))
    written = read(tmp_path / "predictions" / "test.jsonl")
    assert sorted(written, key=lambda r: r["sample_id"]) == sorted(samples, key=lambda r: r["sample_id"])
    assert writer.rows == written and not (tmp_path / "metrics.json").exists()


# -- the recorder -------------------------------------------------------------------------------------
def test_recorder_annotates_every_row_with_its_scores_and_hygiene():
    annotated = rows()
    ResultsRecorder(copy_n=8).annotate("predict", annotated)
    for row in annotated:
        assert set(row["scores"]) == {"rouge1", "meteor"}
        assert row["copied"] is (row["longest_copy"] >= 8) and row["echo"] is False
    assert [row["copied"] for row in annotated] == [i % 3 == 0 for i in range(6)]
    # The per-sample values are those whose means metrics.json reports.
    overall = score_predictions(annotated, bertscore=False)["overall"]
    assert sum(r["scores"]["rouge1"] for r in annotated) / len(annotated) == pytest.approx(overall["rouge1"])


def test_recorder_writes_the_registry_files_of_a_test_epoch(tmp_path, capsys):
    recorder = ResultsRecorder(copy_n=8)
    annotated = rows()
    recorder.annotate("test", annotated)
    predictions = WrittenPredictions("test", tmp_path, annotated, [tmp_path / "predictions" / "test.jsonl"])
    logger = CSVLogger(tmp_path / "logs", name="", version="")
    recorder.record(trainer(tmp_path, PredictionWriter(), logger=logger), Rows(backbone="tiny"), predictions)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["overall", "categories", "hygiene", "uniqueness", "backbone", "config_hash",
                             "predictions"]
    assert metrics["overall"]["n"] == 6 and sorted(metrics["categories"]) == ["Books", "CDs_and_Vinyl"]
    longest = sum(row["longest_copy"] for row in annotated) / 6
    assert metrics["hygiene"] == {"n": 6, "copy_n": 8, "copy_rate": 2 / 6, "mean_longest_copy": longest,
                                  "limit_rate": 1 / 6, "echo_rate": 0.0}
    assert metrics["uniqueness"] is None  # no DataModule to ask
    assert metrics["backbone"] == "tiny" and metrics["predictions"] == str(predictions.paths[0])
    assert recorder.report == metrics
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["method"] == "Rows" and manifest["backbone"] == "tiny"
    assert manifest["config_hash"] == metrics["config_hash"]
    logger.save()
    logged = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"test/rouge1", "test/meteor", "test/bleu", "test/hygiene/copy_rate"} <= set(logged)
    printed = capsys.readouterr().out
    assert "| overall | 6 |" in printed and "hygiene: 33.3% copied >= 8 words" in printed


def test_recorder_records_nothing_for_predict_or_an_empty_epoch(tmp_path):
    recorder = ResultsRecorder()
    run = trainer(tmp_path, PredictionWriter())
    recorder.record(run, Rows(), WrittenPredictions("predict", tmp_path, rows(), []))
    recorder.record(run, Rows(), WrittenPredictions("test", tmp_path, [], []))
    assert not (tmp_path / "metrics.json").exists() and recorder.report is None


def test_uniqueness_halves_split_rows_by_user():
    annotated = rows()
    halves = scores_by_uniqueness(annotated, unique_users={"u0", "u1"})
    assert halves["unique"] == score_predictions([r for r in annotated if r["user_id"] in ("u0", "u1")],
                                                 bertscore=False)["overall"]
    assert halves["non_unique"]["n"] == sum(r["user_id"] not in ("u0", "u1") for r in annotated)
    assert scores_by_uniqueness(annotated, unique_users=set())["unique"] == {"n": 0}


# -- composed -----------------------------------------------------------------------------------------
def test_test_metrics_writer_is_the_writer_with_a_results_recorder(tmp_path):
    writer = TestMetricsWriter(copy_n=8)
    assert writer.recorder is writer.results
    trainer(tmp_path, writer).test(Rows(), loader(rows()))
    in_file = read(tmp_path / "predictions" / "test.jsonl")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all("scores" in row and "longest_copy" in row for row in in_file)
    assert metrics == writer.results.report and metrics["overall"]["n"] == len(in_file) == 6
    assert metrics["predictions"] == str(tmp_path / "predictions" / "test.jsonl")
