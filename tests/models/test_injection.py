"""Components injected from the config: the refiner, the optimiser and the LR schedule.

The default path (``refinement`` by name, AdamW + warm-up) must be exactly today's; an
injected component must be built from a ``class_path``, reported in the run's options and
kept in the checkpoint's hyperparameters as plain data.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from jsonargparse import ArgumentParser

from dep_lightning.axes import BY_KEY
from dep_lightning.data.errors import ConfigError
from dep_lightning.models.components import REFINERS, Autoencoder, IdentityRefiner, Refiner, SparseAutoencoder
from dep_lightning.models.dep_module import DEPModule, NoUserControl
from dep_lightning.models.optim import Optimization, WarmupLinearDecay, component_spec

TINY = dict(backbone="tiny", embedding_dim=12, latent_dim=8)


def parsed_module(cls, *args: str):
    """Build ``cls`` from command-line style config values, as LightningCLI does."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "model")
    config = parser.parse_args(["--model.backbone", "tiny", "--model.embedding_dim", "12", *args])
    return parser.instantiate(config).model


# -- refiners --------------------------------------------------------------------------------

def test_the_paper_refiners_satisfy_the_protocol_and_name_the_axis_values():
    axis = set(BY_KEY["refinement"].values)
    assert set(REFINERS) == axis
    for name, cls in REFINERS.items():
        refiner = cls(12)
        assert isinstance(refiner, Refiner) and refiner.name == name
        e = torch.randn(5, 12)
        z, e_hat = refiner(e)
        assert torch.equal(refiner.encode(e), z) and e_hat.shape == e.shape


def test_refinement_by_name_builds_what_it_did_before():
    """The named path: the same classes, sizes and initial weights as the explicit classes under one seed."""
    for name, expected in (("sae", SparseAutoencoder(12, 8, rho=0.05)), ("ae", Autoencoder(12, 8)),
                           ("none", IdentityRefiner(12))):
        model = DEPModule(**TINY, refinement=name)
        assert type(model.refiner) is type(expected) and model.refiner.d_latent == expected.d_latent
        assert model.method_info() == {"method": "dep", "refinement": name}
        assert "refiner" not in model.method_options()


def test_an_injected_refiner_is_built_from_its_class_path_and_recorded():
    model = parsed_module(DEPModule, "--model.refiner",
                          '{"class_path": "dep_lightning.models.components.Autoencoder", "init_args": {"d_latent": 5}}')
    assert type(model.refiner) is Autoencoder and (model.refiner.d_in, model.refiner.d_latent) == (12, 5)
    # The run reports the refiner's own name, whatever `refinement` says (its default is sae).
    assert model.method_info()["refinement"] == "ae" and model.hparams.refinement == "ae"
    spec = {"class_path": "dep_lightning.models.components.Autoencoder", "init_args": {"d_latent": 5}}
    assert model.hparams.refiner == spec and model.method_options()["refiner"] == spec
    # Checkpoint hyperparameters stay plain data (torch.load(weights_only=True) reads them).
    buffer = __import__("io").BytesIO()
    torch.save(dict(model.hparams), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["refiner"] == spec


class _Quantiser(torch.nn.Module):
    """A refiner the refinement axis does not know."""

    name = "vq"

    def __init__(self, d_in: int):
        super().__init__()
        self.d_in = self.d_latent = d_in

    def encode(self, e):
        return e

    def forward(self, e):
        return e, e

    def reconstruction_loss(self, e, e_hat, mask=None):
        return e.new_zeros(())

    def sparsity_loss(self, z, mask=None):
        return z.new_zeros(())


def test_a_refiner_outside_the_axis_or_the_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="not a value of the refinement axis.*axes.py"):
        DEPModule(**TINY, refiner=_Quantiser)
    with pytest.raises(ConfigError, match="Refiner interface"):
        DEPModule(**TINY, refiner=lambda d_in: torch.nn.Linear(d_in, 4))
    with pytest.raises(ConfigError, match="refinement.*pca.*one of"):
        DEPModule(**TINY, refinement="pca")


# -- the no-user control takes DEP's arguments through **kwargs ---------------------------------

def test_the_no_user_control_takes_deps_arguments_from_the_config():
    model = parsed_module(NoUserControl, "--model.lam", "3.5", "--model.per_rank", "false", "--model.max_slots", "3",
                          "--model.refinement", "none")
    assert model.hparams.lam == 3.5 and model.hparams.per_rank is False and model.hparams.max_slots == 3
    assert model.method_info() == {"method": "no_user", "refinement": "none"}
    assert model.slot_table.shape == (2, 1, 12) and model.slot_offsets is None
    assert model.method_options() == {"input_norm": "standardize", "prompt_norm": "token", "prompt_scale": 1.0,
                                      "per_rank": False}


# -- optimisation --------------------------------------------------------------------------------

def _parameters():
    return [torch.nn.Parameter(torch.ones(3))]


def test_the_default_is_adamw_with_linear_warmup_and_decay():
    config = Optimization(lr=0.1, weight_decay=0.02, warmup_ratio=0.25).configure(_parameters(), total_steps=8)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["weight_decay"] == 0.02
    assert config["lr_scheduler"]["interval"] == "step" and type(scheduler) is WarmupLinearDecay
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # warm-up ceil(0.25 * 8) = 2 steps: 1/2, 2/2 of the rate; then (8 - step) / 6.
    expected = [0.1 * f for f in (1 / 2, 2 / 2, 6 / 6, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert Optimization(0.1, 0.0, 0.01).describe() == {}


def test_an_injected_optimizer_and_schedule_replace_the_default_and_are_recorded():
    sgd = functools.partial(torch.optim.SGD, lr=0.5, momentum=0.9)
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4)
    optimization = Optimization(0.1, 0.0, 0.01, optimizer=sgd, lr_scheduler=cosine)
    config = optimization.configure(_parameters(), total_steps=100)
    assert type(config["optimizer"]) is torch.optim.SGD and config["optimizer"].defaults["lr"] == 0.5
    assert type(config["lr_scheduler"]["scheduler"]) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert optimization.describe() == {
        "optimizer": {"class_path": "torch.optim.sgd.SGD", "init_args": {"lr": 0.5, "momentum": 0.9}},
        "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": 4}}}


def test_a_schedule_that_takes_total_steps_gets_the_runs_steps_unless_the_config_sets_them():
    auto = Optimization(0.1, 0.0, 0.01, lr_scheduler=functools.partial(WarmupLinearDecay, warmup_ratio=0.5))
    assert auto.configure(_parameters(), total_steps=10)["lr_scheduler"]["scheduler"].total_steps == 10
    fixed = Optimization(0.1, 0.0, 0.01, lr_scheduler=functools.partial(WarmupLinearDecay, total_steps=4))
    scheduler = fixed.configure(_parameters(), total_steps=10)["lr_scheduler"]["scheduler"]
    assert (scheduler.total_steps, scheduler.warmup_steps) == (4, math.ceil(0.01 * 4))


def test_an_optimizer_from_the_config_reaches_the_module():
    model = parsed_module(DEPModule, "--model.optimizer",
                          '{"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01}}')
    config = model.optimization.configure(model.trainable_parameters(), total_steps=5)
    assert type(config["optimizer"]) is torch.optim.SGD
    assert {id(p) for p in config["optimizer"].param_groups[0]["params"]} == \
        {id(p) for p in model.parameters() if p.requires_grad}
    assert model.method_options()["optimizer"]["class_path"] == "torch.optim.sgd.SGD"
    assert model.hparams.optimizer == model.method_options()["optimizer"]


def test_component_spec_of_a_plain_class():
    assert component_spec(torch.optim.AdamW) == {"class_path": "torch.optim.adamw.AdamW", "init_args": {}}
    assert component_spec(None) is None


@pytest.mark.parametrize("cls, args", [
    (DEPModule, ["--model.refiner", '{"class_path": "dep_lightning.models.components.Autoencoder", '
                                    '"init_args": {"d_latent": 5}}',
                 "--model.optimizer", '{"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01}}']),
    (NoUserControl, ["--model.per_rank", "false"]),
], ids=["dep-injected", "no_user"])
def test_checkpoint_hyperparameters_parse_back_as_the_classs_arguments(cls, args):
    """LightningCLI parses a checkpoint's hyperparameters into the model's arguments
    (``--ckpt_path``), so they must be exactly arguments the class accepts, as plain data."""
    from jsonargparse import ArgumentParser

    model = parsed_module(cls, *args)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(DEPModule, "model")
    path = f"{cls.__module__}.{cls.__qualname__}"
    config = parser.parse_object({"model": {"class_path": path, "init_args": {"backbone": "tiny"}}})
    config = parser.parse_object({"model": dict(model.hparams)}, config)
    rebuilt = parser.instantiate(config).model
    assert type(rebuilt) is cls and dict(rebuilt.hparams) == dict(model.hparams)
    assert type(rebuilt.refiner) is type(model.refiner)
