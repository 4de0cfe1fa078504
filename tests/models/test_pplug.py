"""PPlug: input-aware attention, the user and instruction slots, what trains."""

from dataclasses import replace

import pytest
import torch

from dep_lightning.data.prompt import INSTRUCTION, USER, PromptConfig
from dep_lightning.models.pplug import InputAwareAttention, PPlugModule
from tests.helpers import set_up, small_datamodule
from tests.tolerances import F32_EPS


def test_weights_sum_to_one_over_the_real_history_and_skip_padding():
    history = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    user, w = InputAwareAttention()(torch.randn(3, 8), history, mask)
    # float32 softmax over <= 5 entries, summed again: a few eps (8 eps allowed).
    torch.testing.assert_close(w[:2].sum(1), torch.ones(2), rtol=0, atol=8 * F32_EPS)
    assert (w[:2] > 0).sum(1).tolist() == [5, 2]
    assert torch.equal(w[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(w[2], torch.zeros(5)) and torch.equal(user[2], torch.zeros(8))  # no history: zero vector
    # 5-term float32 dot products with weights summing to 1, batched as 2 rows here and 3 in
    # the module (another matmul shape): |error| <= ~5 eps * max|history|.
    expected = torch.einsum("bn,bnd->bd", w[:2], history[:2])
    torch.testing.assert_close(user[:2], expected, rtol=0, atol=5 * F32_EPS * float(history.abs().max()))


def test_weights_depend_on_the_target_item():
    history = torch.nn.functional.normalize(torch.randn(1, 6, 16), dim=-1)
    mask = torch.ones(1, 6, dtype=torch.bool)
    attention = InputAwareAttention(temperature=0.1)
    for j in range(6):
        _, w = attention(history[:, j], history, mask)  # the item looks exactly like review j
        assert int(w.argmax()) == j
    _, w1 = attention(history[:, 0], history, mask)
    _, w2 = attention(history[:, 1], history, mask)
    assert not torch.allclose(w1, w2)
    with pytest.raises(ValueError, match="temperature"):
        InputAwareAttention(temperature=0)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("embeddings"), batch_size=2,
                         prompt=PromptConfig(embeddings="user", history=False, with_text=False,
                                             max_target_tokens=16))


def model(dm, **kwargs):
    return PPlugModule(backbone="tiny", embedding_dim=dm.embedding_dim, **kwargs)


def test_each_prompt_has_an_instruction_then_a_user_slot_and_the_whole_history(datamodule):
    batch = next(iter(datamodule.val_dataloader()))
    slots = batch.prompt.slots
    b = batch.input_ids.shape[0]
    assert slots.kinds.tolist() == [INSTRUCTION, USER] * b
    rows, positions = slots.positions[:, 0], slots.positions[:, 1]
    assert rows.tolist() == [i for i in range(b) for _ in range(2)]
    assert torch.equal(positions[1::2], positions[0::2] + 1)  # adjacent, instruction first
    text = datamodule.tokenizer.decode(batch.prompt.input_ids[0])
    assert "<user_token_start>" in text and "[User's Past Reviews]" not in text
    samples = datamodule.samples["val"][:b]
    assert slots.user_history_mask.sum(1).tolist() == [len(s.history) for s in samples]
    vectors = datamodule.cache.lookup([r.text for r in samples[0].history])
    assert torch.equal(slots.user_history[0, :len(vectors)], torch.from_numpy(vectors))


def test_slots_carry_the_instruction_and_the_projected_input_aware_user(datamodule):
    batch = next(iter(datamodule.val_dataloader()))
    prompt = batch.prompt
    pplug = model(datamodule)
    embeds, _ = pplug.input_embeddings(prompt.input_ids, prompt.slots)
    slots = prompt.slots
    rows, positions = slots.positions[:, 0], slots.positions[:, 1]
    user, _ = pplug.user_embedding(slots)
    for k, kind in enumerate(slots.kinds.tolist()):
        got = embeds[rows[k], positions[k]]
        expected = pplug.instruction if kind == INSTRUCTION else pplug.projector(user)[rows[k]]
        # The module runs the same projector on the same float32 batch (the tiny backbone is
        # float32, so splicing casts nothing): the same ops on the same shapes, bit for bit.
        assert torch.equal(got, expected)
    # The tiny embedder's vectors are nearly identical (random weights), so give the history
    # distinct directions: an item like review 0 and an item like review 1 give different prompts.
    history = torch.nn.functional.normalize(torch.randn(slots.user_history.shape), dim=-1)
    spread = replace(slots, user_history=history, user_history_mask=torch.ones(history.shape[:2], dtype=torch.bool))
    user_slots = slots.kinds == USER
    prompts = []
    for j in (0, 1):
        like_j = replace(spread, target_item=history[:, j])
        weights = pplug.user_embedding(like_j)[1]
        assert (weights.argmax(1) == j).all()
        out, _ = pplug.input_embeddings(prompt.input_ids, like_j)
        prompts.append(out[rows[user_slots], positions[user_slots]])
    assert not torch.allclose(prompts[0], prompts[1])


def test_only_the_projector_and_instruction_learn(datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    pplug = model(datamodule)
    trainable = {n for n, p in pplug.named_parameters() if p.requires_grad}
    assert trainable and all(n == "instruction" or n.startswith("projector.") for n in trainable)
    before = {n: p.detach().clone() for n, p in pplug.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in pplug.parameters() if p.requires_grad], lr=3e-2)
    first = pplug.loss(batch).item()
    for _ in range(6):
        optimizer.zero_grad()
        pplug.loss(batch).backward()
        optimizer.step()
    assert pplug.loss(batch).item() < first - 0.1
    for name, param in pplug.named_parameters():
        assert torch.equal(param, before[name]) == (name not in trainable), name


def test_a_prompt_without_user_slots_is_refused(datamodule):
    dm = small_datamodule(datamodule.cache_dir)  # DEP's his+diff slots, same embedding cache
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    with pytest.raises(ValueError, match="embeddings: user"):
        model(dm).input_embeddings(batch.input_ids, batch.slots)
