"""The study's checkpoint callbacks (configs/study/v2.yaml), run on a tiny model whose
validation metric is scripted: ``last.ckpt`` must follow every validation, new best or not,
so an interrupted point resumes where it stopped, while the tested checkpoint stays the best."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule

ROOT = Path(__file__).resolve().parents[1]

# val/nll at each validation: a best at the second, then two that do not improve.
SCRIPT = [3.0, 2.0, 2.5, 2.7]


def study_checkpoints(dirpath):
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import ModelCheckpoint
    from omegaconf import OmegaConf

    callbacks = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "study" / "v2.yaml").trainer.callbacks)
    parser = ArgumentParser()
    parser.add_argument("--callback", type=ModelCheckpoint)
    built = []
    for spec in callbacks:
        if spec["class_path"].endswith(".ModelCheckpoint"):
            spec["init_args"]["dirpath"] = str(dirpath)
            built.append(parser.instantiate_classes(parser.parse_object({"callback": spec})).callback)
    return built


class Scripted(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validations = 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/nll", SCRIPT[self.validations])

    def on_validation_epoch_end(self):
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore")
def test_last_follows_every_validation_and_best_stays_the_best(tmp_path):
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader, TensorDataset

    checkpoints = study_checkpoints(tmp_path)
    assert len(checkpoints) == 2
    data = DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=1)
    trainer = Trainer(max_steps=8, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
                      callbacks=checkpoints, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(Scripted(), train_dataloaders=data, val_dataloaders=DataLoader(TensorDataset(torch.ones(1, 2))))

    assert trainer.checkpoint_callback is checkpoints[0]  # what `ckpt_path="best"` tests and scores
    best = torch.load(checkpoints[0].best_model_path, weights_only=False)
    assert best["global_step"] == 4  # the second validation, the best
    last = tmp_path / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 8  # the fourth, not a new best
    # Exactly the best, the newest and last: nothing left from earlier validations.
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == sorted(
        {Path(checkpoints[0].best_model_path).name, "latest.ckpt", "last.ckpt"})
