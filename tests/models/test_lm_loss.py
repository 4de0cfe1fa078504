"""The target-only LM loss equals the Hugging Face ``labels=`` loss, value and gradient."""

import torch

from dep_lightning.data.batching import IGNORE_INDEX
from dep_lightning.models.base import PromptingModule
from tests.tolerances import F32_EPS

# The target-only loss computes the head's logits for fewer rows than the full loss, and the
# cached prefix runs the prompt in two pieces: other matmul shapes, other float32 summation
# orders. The loss is a mean of log-softmax terms over the 49k-token vocabulary: 84 eps
# relative (1e-5) covers a summation error of ~log2(49152) = 16 eps with room. Gradients
# are sums over the vocabulary and both layers whose terms reach the gradient's largest
# element: their error scales with that, not with each element (an element near 0 keeps an
# absolute error of a few eps * scale). Measured: losses equal; gradients <= 4 eps * scale
# with the AVX-512 and AVX2 kernels, 25 eps * scale with the default (unvectorised) ones,
# whose reductions sum sequentially; 84 eps * scale allowed.
LOSS_RTOL = 84 * F32_EPS


def grad_atol(reference: torch.Tensor) -> float:
    return 84 * F32_EPS * float(reference.abs().max())


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding on one row
    labels = ids.clone()
    labels[:, :7] = IGNORE_INDEX  # prompt
    labels[0, :4] = IGNORE_INDEX
    labels[2, 10:] = IGNORE_INDEX  # right padding / ignored tail
    return ids, mask, labels


def test_target_only_loss_equals_full_logits_loss_and_gradient():
    module = PromptingModule(backbone="tiny")
    ids, mask, labels = _batch(module.backbone.config.vocab_size)
    embed = module.backbone.get_input_embeddings()
    grads = []
    for fast in (True, False):
        embeds = embed(ids).detach().requires_grad_(True)
        if fast:
            loss = module.lm_loss(embeds, mask, labels)
        else:
            loss = module.backbone(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        loss.backward()
        grads.append((loss.detach(), embeds.grad))
    (fast_loss, fast_grad), (ref_loss, ref_grad) = grads
    torch.testing.assert_close(fast_loss, ref_loss, rtol=LOSS_RTOL, atol=0)  # see LOSS_RTOL
    torch.testing.assert_close(fast_grad, ref_grad, rtol=0, atol=grad_atol(ref_grad))  # see LOSS_RTOL
    assert fast_grad.abs().sum() > 0


def test_target_only_loss_changes_with_the_labels():
    module = PromptingModule(backbone="tiny")
    ids, mask, labels = _batch(module.backbone.config.vocab_size)
    embeds = module.backbone.get_input_embeddings()(ids)
    other = labels.clone()
    other[:, 8] = (other[:, 8] + 1) % module.backbone.config.vocab_size
    assert not torch.isclose(module.lm_loss(embeds, mask, labels), module.lm_loss(embeds, mask, other))


def test_shared_prefix_from_the_cache_gives_the_same_loss_and_gradient():
    module = PromptingModule(backbone="tiny")
    ids, mask, labels = _batch(module.backbone.config.vocab_size, seed=1)
    mask[0, :4] = 1  # training batches are right-padded: the shared prefix starts every row
    labels[0, :4] = IGNORE_INDEX
    ids[:, :5] = ids[0, :5]  # 5 shared leading tokens
    embed = module.backbone.get_input_embeddings()
    results = []
    for prefix in (0, 5, 5):  # no cache; cache built; cache reused
        embeds = embed(ids).detach().requires_grad_(True)
        loss = module.lm_loss(embeds, mask, labels, ids, prefix)
        loss.backward()
        results.append((loss.detach(), embeds.grad))
    assert len(module._prefix_kv) == 1
    (ref_loss, ref_grad), *cached = results
    for loss, grad in cached:
        torch.testing.assert_close(loss, ref_loss, rtol=LOSS_RTOL, atol=0)  # see LOSS_RTOL
        torch.testing.assert_close(grad[:, 5:], ref_grad[:, 5:], rtol=0, atol=grad_atol(ref_grad))
        assert float(grad[:, :5].abs().sum()) == 0  # the prefix is not recomputed, so gets no gradient
    # Rows that do not share the prefix fall back to the full computation.
    ids[1, 0] = (ids[1, 0] + 1) % module.backbone.config.vocab_size
    embeds = embed(ids).detach()
    # The fallback is the very same full computation on the same tensors: bit-identical.
    assert torch.equal(module.lm_loss(embeds, mask, labels, ids, 5), module.lm_loss(embeds, mask, labels))


def test_shared_prefix_length_stops_at_the_first_difference_and_the_first_slot():
    from dataclasses import replace

    import numpy as np

    from dep_lightning.data.batching import shared_prefix_length
    from dep_lightning.data.types import Example

    def example(ids: list[int], slot_pos: list[int]) -> Example:  # a 5-token prompt, the rest its target
        return Example(sample_id="s", category="c", user_id="u", item_id="i", reference="", input_ids=ids,
                       labels=[-100] * 5 + ids[5:], prompt_length=5, slot_pos=slot_pos, slot_kind=[0] * len(slot_pos),
                       slot_vec=np.zeros((len(slot_pos), 1), np.float32), slot_peers=np.ones(len(slot_pos), bool),
                       history=[], retrieved=[], latest="")

    a = example([1, 2, 3, 4, 5, 6], slot_pos=[4])
    b = example([1, 2, 3, 9, 5, 6], slot_pos=[4])
    assert shared_prefix_length([a, b]) == 3
    assert shared_prefix_length([a, a]) == 4  # the slot at 4 holds a trainable vector
    assert shared_prefix_length([a, replace(a, slot_pos=[1])]) == 1
    assert shared_prefix_length([]) == 0
