"""One line per fact a run's log needs: what is trained, why fit stopped, which checkpoint is tested.

Lightning reports these facts in its own words (a model-summary table, "Seed set to 0",
"`Trainer.fit` stopped: …", "Restoring states from the checkpoint path at …"), which
``quiet.py`` drops from ``dep-lightning`` runs; :class:`RunSummary` prints them instead as
(one line each; the first is wrapped here)

    [fit] DEPModule, seed 0: 1.2 M trainable parameters (refiner 197 K, proj_his 480 K, proj_diff 480 K);
          134 M frozen (backbone, float32)
    [fit] stopped: max_epochs=1 reached after 6 steps; best val/loss 2.5440: runs/…/epoch=0-step=6.ckpt
    [test] checkpoint runs/…/epoch=0-step=6.ckpt          ([score] … when scoring)
    [fit] resuming from runs/…/last.ckpt

``DEPLightningCLI`` adds it to every trainer (``trainer_defaults``).
"""

from __future__ import annotations

import lightning as L
import torch


def count(n: int) -> str:
    """``1234567`` → ``1.2 M``; ``197000`` → ``197 K``."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return str(n)


def parameter_line(model: torch.nn.Module) -> str:
    """Trainable and frozen parameter counts, split by top-level child."""
    trainable, frozen, dtypes = [], [], []
    for name, child in model.named_children():
        params = list(child.parameters())
        if not params:
            continue
        n_train = sum(p.numel() for p in params if p.requires_grad)
        n_frozen = sum(p.numel() for p in params if not p.requires_grad)
        if n_train:
            trainable.append((name, n_train))
        if n_frozen:
            frozen.append((name, n_frozen))
            dtypes.append(str(params[0].dtype).removeprefix("torch."))
    line = f"{count(sum(n for _, n in trainable))} trainable parameters"
    line += f" ({', '.join(f'{name} {count(n)}' for name, n in trainable)})" if trainable else ""
    line += f"; {count(sum(n for _, n in frozen))} frozen"
    return line + (f" ({', '.join(f'{name}, {dtype}' for (name, _), dtype in zip(frozen, dtypes))})" if frozen else "")


def stop_reason(trainer: L.Trainer) -> str:
    loop = trainer.fit_loop
    if trainer.num_training_batches == 0:
        return "no training batches"
    if loop.max_steps != -1 and trainer.global_step >= loop.max_steps:
        return f"max_steps={loop.max_steps} reached"
    if loop.max_epochs is not None and loop.max_epochs != -1 and trainer.current_epoch >= loop.max_epochs:
        return f"max_epochs={loop.max_epochs} reached"
    stopped = [cb for cb in trainer.callbacks if isinstance(cb, L.pytorch.callbacks.EarlyStopping) and cb.stopped_epoch]
    if stopped:
        return f"early stopping on {stopped[0].monitor} (patience {stopped[0].patience})"
    return "stopped early (trainer.should_stop)"


class RunSummary(L.Callback):
    """Prints the run's header, why fit stopped with the best checkpoint, and the checkpoint a
    test / score loop restored (global rank zero only)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            seed = getattr(pl_module.hparams, "seed", None)
            seeded = f", seed {seed}" if seed is not None else ""
            print(f"[fit] {type(pl_module).__name__}{seeded}: {parameter_line(pl_module)}", flush=True)
            if trainer.ckpt_path:
                print(f"[fit] resuming from {trainer.ckpt_path}", flush=True)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        steps = trainer.global_step
        line = f"[fit] stopped: {stop_reason(trainer)} after {steps} step{'' if steps == 1 else 's'}"
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "best_model_path", ""):
            score = checkpoint.best_model_score
            value = f" {float(score):.4f}" if score is not None else ""
            line += f"; best {checkpoint.monitor}{value}: {checkpoint.best_model_path}" if checkpoint.monitor else \
                f"; checkpoint {checkpoint.best_model_path}"
        print(line, flush=True)

    def on_test_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            stage = "score" if getattr(pl_module, "scoring_conditions", None) else "test"
            print(f"[{stage}] checkpoint {trainer.ckpt_path}" if trainer.ckpt_path else
                  f"[{stage}] the model as built (no checkpoint)", flush=True)
