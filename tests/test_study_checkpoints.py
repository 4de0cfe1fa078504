"""The checkpoint and early-stopping callbacks of the shipped fit configs (the study's
configs/study/v2.yaml and every config that resumes long fits), run on a tiny model whose
validation metric is scripted: ``last.ckpt`` follows every validation, new best or not, so
an interrupted fit resumes where it stopped while the tested checkpoint stays the best; a
point rerun after early stopping ended its fit trains nothing again."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]


# Every shipped config that sets checkpoint callbacks (each keeps the best and resumes from last.ckpt).
RESUMING = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")
                  if "callbacks.ModelCheckpoint" in p.read_text())


def study_callbacks(dirpath, config="study/v2.yaml", kinds=(".ModelCheckpoint", ".LastCheckpoint", ".EarlyStopping")):
    """The callbacks of ``configs/<config>`` of the ``kinds`` named, checkpoints in ``dirpath``."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import Callback
    from omegaconf import OmegaConf

    specs = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / config).trainer.callbacks)
    parser = ArgumentParser()
    parser.add_argument("--callback", type=Callback)
    built = []
    for spec in specs:
        if spec["class_path"].endswith(kinds):
            if spec["class_path"].endswith(("ModelCheckpoint", "LastCheckpoint")):
                spec["init_args"]["dirpath"] = str(dirpath)
            built.append(parser.instantiate_classes(parser.parse_object({"callback": spec})).callback)
    return built


class Scripted(LightningModule):
    """``metric`` at the N-th validation is ``script[N]``; counts its training steps."""

    def __init__(self, script, metric="val/nll"):
        super().__init__()
        self.script, self.metric = script, metric
        self.layer = torch.nn.Linear(2, 1)
        self.validations = self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log(self.metric, self.script[self.validations])

    def on_validation_epoch_end(self):
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, script, callbacks, max_steps, ckpt_path=None, metric="val/nll"):
    model = Scripted(script, metric)
    trainer = Trainer(max_steps=max_steps, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
                      callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(torch.ones(64, 2)), batch_size=1),
                val_dataloaders=DataLoader(TensorDataset(torch.ones(1, 2))), ckpt_path=ckpt_path)
    return trainer, model


def step_of(path):
    return torch.load(path, weights_only=True)["global_step"]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("config", RESUMING)
def test_last_follows_every_validation_and_best_stays_the_best(tmp_path, config):
    assert "study/v2.yaml" in RESUMING and "quickstart.yaml" in RESUMING
    checkpoints = study_callbacks(tmp_path, config, kinds=(".ModelCheckpoint", ".LastCheckpoint"))
    assert len(checkpoints) == 2
    monitored = checkpoints[0]
    # A best at the second validation, then two that do not improve.
    sign = 1.0 if monitored.mode == "min" else -1.0
    script = [sign * value for value in (3.0, 2.0, 2.5, 2.7)]
    trainer, _ = fit(tmp_path, script, checkpoints, max_steps=8, metric=monitored.monitor)

    assert trainer.checkpoint_callback is monitored  # what `ckpt_path="best"` tests and scores
    assert step_of(monitored.best_model_path) == 4  # the second validation, the best
    assert step_of(tmp_path / "last.ckpt") == 8  # the fourth, not a new best
    # Exactly the best, last and (an unmonitored ModelCheckpoint's top 1) the newest: nothing
    # left from earlier validations.
    newest = {"latest.ckpt" for cb in checkpoints if getattr(cb, "filename", None) == "latest"}
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == sorted(
        {Path(monitored.best_model_path).name, "last.ckpt"} | newest)


@pytest.mark.filterwarnings("ignore")
def test_a_fit_that_early_stopping_ended_is_not_trained_again_when_resumed(tmp_path):
    from dep_lightning.callbacks.resume import StoppedStaysStopped

    # A best at the second validation, three without (patience 3): the fit stops at step 10.
    script = [3.0, 2.0, 2.5, 2.7, 2.8, 2.9, 3.0]
    trainer, _ = fit(tmp_path / "first", script, study_callbacks(tmp_path / "first"), max_steps=40)
    assert trainer.global_step == 10 and step_of(tmp_path / "first" / "last.ckpt") == 10

    for name, extra, steps in (("plain", [], 12), ("kept", [StoppedStaysStopped()], 10)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "last.ckpt").write_bytes((tmp_path / "first" / "last.ckpt").read_bytes())
        resumed, model = fit(folder, script, study_callbacks(folder) + extra, max_steps=40,
                             ckpt_path=folder / "last.ckpt")
        # Lightning alone trains to the next validation and stops there; the callback trains nothing.
        assert (resumed.global_step, model.steps) == (steps, steps - 10), name


@pytest.mark.filterwarnings("ignore")
def test_last_checkpoint_saves_between_validations_and_after_each(tmp_path):
    """LastCheckpoint(every_n_train_steps=3), validating every 2 steps: last.ckpt after the
    validation of step 8 and at step 9 between validations; at step 6, a step save and a
    validation at once, the file holds that validation (early stopping's count of it)."""
    from lightning.pytorch.callbacks import EarlyStopping

    from dep_lightning.callbacks import LastCheckpoint

    class Recorded(LastCheckpoint):
        """Notes the step and early stopping's count of validations without a new best at each save."""

        saves: list

        def _save_checkpoint(self, trainer, filepath):
            stopping = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
            self.saves.append((trainer.global_step, stopping.wait_count))
            super()._save_checkpoint(trainer, filepath)

    last = Recorded(dirpath=str(tmp_path), every_n_train_steps=3)
    last.saves = []
    stopping = EarlyStopping(monitor="val/nll", mode="min", patience=10)
    # Validations at steps 2, 4, 6, 8: the first is the best, then no new best.
    fit(tmp_path, [1.0, 2.0, 3.0, 4.0], [stopping, last], max_steps=9)
    assert last.saves == [(2, 0), (3, 0), (4, 1), (6, 1), (6, 2), (8, 3), (9, 3)]
    assert step_of(tmp_path / "last.ckpt") == 9 and sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt"]
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]
    assert next(v for k, v in state.items() if k.startswith("EarlyStopping"))["wait_count"] == 3
