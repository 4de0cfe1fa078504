"""DEP's scale choices (input standardisation, token-norm soft prompts) and the collapse diagnostics."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from dep_lightning.data.prompt import DIFF, HIS, PromptConfig
from dep_lightning.data.types import Slots
from dep_lightning.models.dep_module import DEPModule, NoUserControl
from tests.helpers import set_up


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("embeddings"), prompt=PromptConfig(with_text=False, metadata=False))


def module(dm, **kwargs):
    return DEPModule(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16, **kwargs)


def slots_of(kinds: torch.Tensor, ranks: torch.Tensor | None = None, vectors: torch.Tensor | None = None) -> Slots:
    """Slots of the given kinds, ranks (default 0) and vectors (default none), not placed in any prompt:
    what a model's slot inputs are computed from."""
    n = len(kinds)
    return Slots(positions=torch.zeros((n, 2), dtype=torch.long), kinds=kinds,
                 ranks=torch.zeros(n, dtype=torch.long) if ranks is None else ranks,
                 vectors=torch.zeros((n, 0)) if vectors is None else vectors, has_peers=torch.ones(n, dtype=torch.bool))


def test_standardised_training_inputs_have_zero_mean_and_unit_spread(datamodule):
    model = module(datamodule, input_norm="standardize")
    examples = datamodule.split_examples("train")
    model.fit_input_statistics(examples)
    for kind in (HIS, DIFF):
        rows = np.concatenate([ex.slot_vec[(np.asarray(ex.slot_kind) == kind) & ex.slot_peers]
                               for ex in examples])
        slots = slots_of(torch.full((len(rows),), kind), vectors=torch.from_numpy(rows))
        e = model.slot_inputs(slots).double()
        # Statistics in float64, the standardisation in float32: each value carries a rounding
        # error of a few eps32 * |x| / std (the subtraction), so the tolerance scales with that.
        eps = torch.finfo(torch.float32).eps
        tol = 8 * eps * float(np.abs(rows).max() / model.input_std[kind].min())
        torch.testing.assert_close(e.mean(0), torch.zeros(e.shape[1], dtype=torch.float64), atol=tol, rtol=0)
        torch.testing.assert_close(e.std(0, unbiased=False), torch.ones(e.shape[1], dtype=torch.float64),
                                   atol=tol, rtol=0)
    assert not torch.equal(model.input_mean[HIS], model.input_mean[DIFF])


def test_the_paper_form_leaves_inputs_and_prompts_as_they_are(datamodule):
    batch = next(iter(datamodule.val_dataloader()))
    slots = batch.slots
    model = module(datamodule, input_norm="none", prompt_norm="none")  # the paper's form
    assert torch.equal(model.slot_inputs(slots), slots.vectors.float())
    prompts, _ = model.soft_prompts(slots)
    z, _ = model.refiner(slots.vectors.float())
    his = slots.kinds == HIS
    assert torch.equal(prompts[his], model.proj_his(z[his]))


def test_token_norm_soft_prompts_have_the_token_embeddings_scale(datamodule):
    batch = next(iter(datamodule.val_dataloader()))
    model = module(datamodule, prompt_norm="token", prompt_scale=0.5)
    token_norm = model.backbone.get_input_embeddings().weight.float().norm(dim=-1).mean()
    assert model.token_norm == pytest.approx(float(token_norm), rel=1e-6)
    prompts, _ = model.soft_prompts(batch.slots)
    # One division and one multiplication per element in float32.
    torch.testing.assert_close(prompts.norm(dim=-1), torch.full((len(prompts),), 0.5 * model.token_norm),
                               rtol=1e-5, atol=0)
    assert model.diagnostics([model._last])["prompt_norm_ratio"] == pytest.approx(0.5, rel=1e-5)


def test_the_defaults_are_standardised_inputs_and_token_norm_prompts(datamodule):
    for model_class in (DEPModule, NoUserControl):  # the control keeps DEP's scale choices
        model = model_class(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16)
        assert (model.hparams.input_norm, model.hparams.prompt_norm, model.hparams.prompt_scale) == \
            ("standardize", "token", 1.0)


def test_diagnostics_report_a_collapsed_prompt_as_zero_spread(datamodule):
    model = module(datamodule)
    kinds = torch.tensor([HIS, HIS, DIFF, DIFF])
    ranks = torch.tensor([0, 0, 0, 0])
    z = torch.full((4, 16), 0.5)
    prompts = torch.ones(4, model.backbone.config.hidden_size) * 3.0
    collapsed = model.diagnostics([(kinds, ranks, z, prompts)])
    assert collapsed["latent_mean"] == pytest.approx(0.5) and collapsed["latent_spread"] == 0.0
    assert collapsed["prompt_spread"] == 0.0
    norm = 3.0 * prompts.shape[1] ** 0.5
    assert collapsed["prompt_norm_ratio"] == pytest.approx(norm / model.token_norm, rel=1e-6)
    spread = prompts.clone()
    spread[1] = -spread[1]  # two his prompts pointing opposite ways: spread = norm * sqrt(2) / norm
    assert model.diagnostics([(kinds, ranks, z, spread)])["prompt_spread"] == pytest.approx((2 ** 0.5 + 0) / 2,
                                                                                            rel=1e-5)


def test_prompts_that_differ_only_by_slot_rank_have_no_user_spread(datamodule):
    model = module(datamodule)
    hidden = model.backbone.config.hidden_size
    kinds, ranks = torch.tensor([HIS, HIS, HIS, HIS]), torch.tensor([0, 1, 0, 1])
    z = torch.rand(4, 16)
    by_rank = torch.stack([torch.ones(hidden), -torch.ones(hidden)])[ranks]  # two samples, two positions
    out = model.diagnostics([(kinds, ranks, z, by_rank)])
    # Across all four slots the prompts point two ways; within a rank they are identical.
    assert out["prompt_spread"] == pytest.approx(1.0 * (4 / 3) ** 0.5, rel=1e-5)
    assert out["prompt_user_spread"] == 0.0
    by_user = by_rank.clone()
    by_user[2] = -by_user[2]  # sample 2's rank-0 prompt differs from sample 0's
    assert model.diagnostics([(kinds, ranks, z, by_user)])["prompt_user_spread"] == pytest.approx(2 ** 0.5 / 2,
                                                                                                   rel=1e-5)


def test_slot_offset_starts_at_zero_and_learns_per_kind_and_rank(datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    slots = batch.slots
    plain = module(datamodule)
    offset = module(datamodule, slot_offset=True, max_slots=8)
    assert plain.slot_offsets is None and offset.slot_offsets.shape == (2, 8, plain.backbone.config.hidden_size)
    offset.load_state_dict(plain.state_dict(), strict=False)  # same adapters; the offsets stay zero
    # Zero offsets: the very same prompts as DEP without them (x + 0 is exact).
    assert torch.equal(offset.soft_prompts(slots)[0], plain.soft_prompts(slots)[0])
    loss = offset.losses(batch)["loss"]
    loss.backward()
    grad = offset.slot_offsets.grad
    used = {(int(k), int(r)) for k, r in zip(slots.kinds, slots.ranks)}
    for k in range(2):
        for r in range(8):
            # Each (kind, rank) present in the batch gets a gradient, the others none.
            assert bool(grad[k, r].abs().sum() > 0) == ((k, r) in used), (k, r)
    with torch.no_grad():
        offset.slot_offsets[HIS, 0] += 1.0
    moved = offset.soft_prompts(slots)[0]
    changed = ~torch.isclose(moved, plain.soft_prompts(slots)[0]).all(dim=-1)
    assert torch.equal(changed, (slots.kinds == HIS) & (slots.ranks == 0))
    too_many = replace(slots, ranks=torch.full_like(slots.ranks, 8))
    with pytest.raises(ValueError, match="max_slots=8"):
        offset.soft_prompts(too_many)


def test_statistics_are_kept_in_the_checkpoint_state(datamodule):
    model = module(datamodule, input_norm="standardize")
    model.fit_input_statistics(datamodule.split_examples("train"))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    assert "input_mean" in state and "input_std" in state
    assert "input_mean" in model.trainable_state_keys()
    fresh = module(datamodule, input_norm="standardize")
    fresh.load_state_dict(state, strict=False)
    assert torch.equal(fresh.input_mean, model.input_mean) and torch.equal(fresh.input_std, model.input_std)


def test_no_user_control_starts_in_the_standardised_space(datamodule):
    control = NoUserControl(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16,
                            input_norm="standardize")
    table = control.slot_table.detach()
    # 2 * 8 * d draws from N(0, 1): the sample std is 1 within a few percent.
    assert float(table.std()) == pytest.approx(1.0, abs=0.1)
    plain = NoUserControl(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16, input_norm="none")
    torch.testing.assert_close(plain.slot_table.detach().norm(dim=-1), torch.ones(2, 8), rtol=1e-6, atol=0)


def test_no_user_control_without_per_rank_gives_every_slot_of_a_kind_one_input(datamodule):
    control = NoUserControl(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16,
                            per_rank=False)
    assert control.slot_table.shape == (2, 1, datamodule.embedding_dim)
    kinds = torch.tensor([0, 0, 0, 1, 1, 1])
    slots = slots_of(kinds, ranks=torch.tensor([0, 1, 5, 0, 2, 30]))  # any rank, even past max_slots
    inputs = control.slot_inputs(slots)
    assert torch.equal(inputs[:3], control.slot_table[0, 0].expand(3, -1))
    assert torch.equal(inputs[3:], control.slot_table[1, 0].expand(3, -1))
    assert not torch.equal(inputs[0], inputs[3])
    ranked = NoUserControl(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16)
    assert not torch.equal(ranked.slot_inputs(replace(slots, ranks=torch.tensor([0, 1, 2, 0, 1, 2])))[0],
                           ranked.slot_inputs(replace(slots, ranks=torch.tensor([0, 1, 2, 0, 1, 2])))[1])
