"""The native decoder (``models/decoding.py``) generates what the backbone's own ``generate``
generates, row by row, whatever the batch: per-row prefill, the shared-prefix cache, the
preallocated cache and rows leaving the batch change float rounding only.

Greedy tokens are compared exactly, except that a token may differ where the two
candidates' logits are closer than rounding can separate; after such a near-tie the two
continuations are different texts and are not compared further (``assert_same_greedy``).
"""

import math

import pytest
import torch

from dep_lightning.models.decoding import PreallocatedCache, Sampling, decode, next_tokens
from dep_lightning.models.dep_module import DEPModule, GenerationConfig
from tests.helpers import set_up
from tests.tolerances import F32_EPS

NEW_TOKENS = 10


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return set_up("test", tmp_path_factory.mktemp("embeddings"), limit_test=6, eval_batch_size=6)


@pytest.fixture(scope="module")
def batch(datamodule):
    return next(iter(datamodule.test_dataloader()))


@pytest.fixture(scope="module")
def prompt(batch):
    prompt = batch.prompt
    assert (prompt.attention_mask == 0).any(), "the test batch should be left-padded"
    assert prompt.prefix_length > 0, "the test split should share a prefix"
    return prompt


def alone(datamodule, sample_id: str):
    """One sample's prompt as a batch of its own, collated as the test loader collates."""
    example = next(ex for ex in datamodule.examples["test"] if ex.sample_id == sample_id)
    return datamodule.test_dataloader().collate_fn([example]).prompt


@pytest.fixture(scope="module")
def model(datamodule):
    torch.manual_seed(0)
    model = DEPModule(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16,
                      generation=GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False),
                      backbone_options={"generation_backend": "native"}).eval()
    with torch.no_grad():  # soft prompts that matter: larger than the untrained projectors give
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    return model


def row_embeds(model, prompt, row: int) -> torch.Tensor:
    """Row ``row``'s prompt embeddings (soft prompts spliced in) without its padding, (1, L, E)."""
    with torch.no_grad():
        embeds, _ = model.input_embeddings(prompt.input_ids, prompt.slots)
    return embeds[row:row + 1, prompt.attention_mask[row].bool()]


def plain_logits(model, embeds: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Logits of each generation step, by one plain forward pass (no cache, no padding) over
    the prompt followed by ``tokens``: (len(tokens), V)."""
    with torch.no_grad():
        new = model.backbone.get_input_embeddings()(torch.tensor([tokens]))
        logits = model.backbone(inputs_embeds=torch.cat([embeds, new], dim=1)).logits[0]
    return logits[embeds.shape[1] - 1:-1]


def tie_tolerance(logits: torch.Tensor, length: int) -> float:
    """How far rounding can move a logit between two float32 evaluations of the tiny 2-layer
    model: its attention sums over up to ``length`` positions and its matmuls over 128 terms
    per layer; errors of such sums grow like sqrt(terms) eps per layer (tests/tolerances.py),
    relative to the logits' scale; 4x headroom for the kernels' blocking. Measured on AMD EPYC
    (AVX2): at most 15 eps * scale against the 200 allowed; a padding position left unmasked
    moves them by ~6,000."""
    return 4 * math.sqrt(2 * (length + 128)) * F32_EPS * float(logits.abs().max())


def assert_same_greedy(model, embeds: torch.Tensor, got: list[int], expected: list[int]) -> None:
    if got == expected:
        return
    shorter = min(len(got), len(expected))
    step = next((i for i in range(shorter) if got[i] != expected[i]), shorter)
    assert step < shorter, f"one output stops early: {got} vs {expected}"
    logits = plain_logits(model, embeds, expected[:step + 1])[step]
    top2 = logits.topk(2).values
    margin = float(top2[0] - top2[1])
    tol = tie_tolerance(logits, embeds.shape[1] + step)
    assert margin <= tol, (f"step {step}: {got[step]} instead of {expected[step]}, but the plain forward "
                           f"separates them by {margin:.3g} > {tol:.3g}")


def hf_alone(model, embeds: torch.Tensor, new_tokens: int) -> list[int]:
    """The backbone's own greedy ``generate`` on one unpadded row, stop tokens ignored."""
    with torch.no_grad():
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        out = model.backbone.generate(inputs_embeds=embeds, attention_mask=mask,
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                      temperature=None, top_p=None, top_k=None,
                                      pad_token_id=model.tokenizer.pad_token_id)
    return out[0].tolist()


def native(model, prompt, new_tokens: int = NEW_TOKENS, stop_ids=(), prefix: bool = True, **kwargs):
    with torch.no_grad():
        embeds, _ = model.input_embeddings(prompt.input_ids, prompt.slots)
        return decode(model, embeds, prompt.attention_mask, max_new_tokens=new_tokens, stop_ids=stop_ids,
                      input_ids=prompt.input_ids, prefix_length=prompt.prefix_length if prefix else 0, **kwargs)


def test_each_row_of_a_padded_batch_gets_what_generate_gives_it_alone(model, prompt):
    got = native(model, prompt)
    rows = prompt.attention_mask.shape[0]
    assert [len(r) for r in got] == [NEW_TOKENS] * rows
    distinct = {tuple(r) for r in got}
    assert len(distinct) > 1, "the rows should generate different texts (the comparison would be weak)"
    for row in range(rows):
        embeds = row_embeds(model, prompt, row)
        assert_same_greedy(model, embeds, got[row], hf_alone(model, embeds, NEW_TOKENS))


def test_every_steps_logits_are_those_of_a_plain_forward_pass(model, prompt):
    """Stronger than equal tokens: a masking or position error that leaves the argmax in place
    still moves the logits."""
    scores = []
    got = native(model, prompt, scores=scores)
    for row, tokens in enumerate(got):
        embeds = row_embeds(model, prompt, row)
        reference = plain_logits(model, embeds, tokens)
        tol = tie_tolerance(reference, embeds.shape[1] + len(tokens))
        torch.testing.assert_close(torch.stack(scores[row]), reference, rtol=0, atol=tol)


def test_the_shared_prefix_cache_changes_nothing_but_rounding(model, prompt):
    with_prefix, without = native(model, prompt), native(model, prompt, prefix=False)
    for row, (a, b) in enumerate(zip(with_prefix, without)):
        assert_same_greedy(model, row_embeds(model, prompt, row), a, b)


def test_a_prefix_that_rows_do_not_share_is_not_read_from_the_cache(model, prompt):
    """A wrong ``prefix_length`` claim (rows differ inside it) falls back to running the rows
    whole instead of giving them another prompt's keys and values."""
    model.__dict__.pop("_prefix_kv", None)
    width = prompt.attention_mask.shape[1]
    starts = (width - prompt.attention_mask.sum(1)).tolist()
    differ = next(n for n in range(1, width) if len({tuple(prompt.input_ids[i, s:s + n].tolist())
                                                      for i, s in enumerate(starts)}) > 1)
    claimed = type(prompt)(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask, slots=prompt.slots,
                           prefix_length=differ)
    assert native(model, claimed) == native(model, prompt, prefix=False)
    assert "_prefix_kv" not in model.__dict__


def test_finished_rows_leave_the_batch_and_the_others_go_on(model, prompt):
    full = native(model, prompt)
    stop = full[0][2]  # row 0 stops at its third token; other rows may stop at it too, or never
    expected = [row[:row.index(stop) + 1] if stop in row else row for row in full]
    assert any(len(e) == NEW_TOKENS for e in expected), "some row should outlive the first to stop"
    got = native(model, prompt, stop_ids=[stop])
    for row, (a, b) in enumerate(zip(got, expected)):
        assert_same_greedy(model, row_embeds(model, prompt, row), a, b)
    assert len(got[0]) == 3 and got[0][-1] == stop


def test_generate_outputs_cuts_at_the_stop_token_and_records_the_limit(model, prompt):
    outs = model.generate_outputs(prompt, key="k")
    assert all(o.tokens <= NEW_TOKENS for o in outs)
    assert all(o.hit_limit == (o.tokens == NEW_TOKENS) for o in outs)


def test_sampled_rows_do_not_depend_on_their_batch(model, datamodule, batch, prompt):
    seeds = list(range(11, 11 + prompt.attention_mask.shape[0]))
    sampling = Sampling(temperature=0.8, top_p=0.95)

    def gens(chosen):
        return [torch.Generator().manual_seed(s) for s in chosen]

    together = native(model, prompt, sampling=sampling, generators=gens(seeds))
    assert together == native(model, prompt, sampling=sampling, generators=gens(seeds)), "not reproducible"
    assert together != native(model, prompt), "sampling at temperature 0.8 should leave the greedy path somewhere"
    # Each row alone, with its own seed: the same draws. The probabilities differ by float
    # rounding only, which changes a draw only when its uniform variate falls within that
    # rounding of a cumulative-probability boundary: ~ sqrt(vocabulary) eps = 3e-5 per draw.
    for row, sample_id in enumerate(batch.sample_id):
        one = alone(datamodule, sample_id)
        assert native(model, one, sampling=sampling, generators=gens(seeds[row:row + 1])) == [together[row]]


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([next_tokens(logits, Sampling(temperature=1.0, top_p=0.8), [g]) for _ in range(4000)])
    assert set(draws.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.8; 0.15 and 0.05 are cut
    share = float((draws == 0).float().mean())
    # Binomial(4000, 0.625): standard deviation 0.0077; 5 of them.
    assert abs(share - 0.5 / 0.8) < 5 * math.sqrt(0.625 * 0.375 / 4000)
    assert next_tokens(logits, Sampling(temperature=1.0, top_p=0.3), [g]).item() == 0  # the top token always stays
    assert next_tokens(logits, None, []).item() == 0


def test_the_cache_refuses_more_positions_than_it_holds():
    cache = PreallocatedCache([torch.zeros(1, 1, 4, 2)], [torch.zeros(1, 1, 4, 2)], length=3)
    cache.update(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2), 0)
    assert cache.get_seq_length() == 4
    with pytest.raises(RuntimeError, match="do not fit"):
        cache.update(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2), 0)


def test_auto_decodes_natively_on_cpu_and_with_generate_on_gpus(datamodule, model, prompt):
    auto = DEPModule(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16,
                     generation=GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False)).eval()
    assert auto.backbone_options.generation_backend == "auto"
    assert auto.generation_backend("cpu") == "native" and auto.generation_backend("cuda") == "hf"
    auto.load_state_dict(model.state_dict())
    # On this CPU, auto is the native decoder itself: the same computation, bit for bit.
    assert auto.generate_outputs(prompt, key="k") == model.generate_outputs(prompt, key="k")
