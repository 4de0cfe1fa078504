"""RunSummary's lines: the run header, why fit stopped with the best checkpoint, and the
checkpoint a test restores — from a real (tiny) fit and test."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dep_lightning.callbacks.summary import RunSummary, count, parameter_line


class Tiny(L.LightningModule):
    def __init__(self, seed: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Linear(100, 50)  # 5,050 frozen parameters
        self.backbone.requires_grad_(False)
        self.adapter = nn.Linear(50, 1)  # 51 trainable

    def loss(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.adapter(self.backbone(x)).squeeze(-1), y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.adapter.parameters(), lr=0.1)


def loader():
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 100, generator=generator), torch.randn(8, generator=generator)),
                      batch_size=4)


def trainer(tmp_path, **settings):
    return L.Trainer(accelerator="cpu", default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, callbacks=[
                         RunSummary(), L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/loss")],
                     **settings)


def test_counts_read_like_the_model_summary():
    assert [count(n) for n in (51, 1_234, 197_000, 1_234_567, 134_515_008, 7_600_000_000)] == \
        ["51", "1.2 K", "197 K", "1.2 M", "135 M", "7.6 B"]
    assert parameter_line(Tiny()) == "51 trainable parameters (adapter 51); 5.0 K frozen (backbone, float32)"


def test_fit_and_test_lines(tmp_path, capsys):
    model = Tiny()
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(model, loader(), loader())
    best = fit.checkpoint_callback.best_model_path
    fit.test(model, loader(), ckpt_path="best", weights_only=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    score = float(fit.checkpoint_callback.best_model_score)
    assert lines == [
        "[fit] Tiny, seed 3: 51 trainable parameters (adapter 51); 5.0 K frozen (backbone, float32)",
        f"[fit] stopped: max_epochs=2 reached after 4 steps; best val/loss {score:.4f}: {best}",
        f"[test] checkpoint {best}",
    ]


@pytest.mark.parametrize("settings, reason", [
    (dict(max_steps=3), "max_steps=3 reached after 3 steps"),
    (dict(max_epochs=5, callbacks_extra="early"), "early stopping on val/loss (patience 0)"),
])
def test_stop_reasons_and_resume(tmp_path, capsys, settings, reason):
    extra = settings.pop("callbacks_extra", None)
    fit = trainer(tmp_path, **settings)
    if extra:  # a validation loss that never improves after the first epoch stops at the second
        fit.callbacks.append(L.pytorch.callbacks.EarlyStopping("val/loss", patience=0, divergence_threshold=None,
                                                                check_finite=False, min_delta=1e9))
    fit.fit(Tiny(), loader(), loader())
    out = capsys.readouterr().out
    assert f"[fit] stopped: {reason}" in out
    last = fit.checkpoint_callback.best_model_path
    resumed = trainer(tmp_path / "again", max_epochs=fit.current_epoch + 1)
    resumed.fit(Tiny(), loader(), loader(), ckpt_path=last, weights_only=True)
    assert f"[fit] resuming from {last}\n" in capsys.readouterr().out
