"""The target-only LM loss equals the Hugging Face ``labels=`` loss, value and gradient."""

import torch

from dep_lightning.data.batching import IGNORE_INDEX
from dep_lightning.models.base import PromptingModule


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
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, ref_grad, rtol=1e-4, atol=1e-7)
    assert fast_grad.abs().sum() > 0


def test_target_only_loss_changes_with_the_labels():
    module = PromptingModule(backbone="tiny")
    ids, mask, labels = _batch(module.backbone.config.vocab_size)
    embeds = module.backbone.get_input_embeddings()(ids)
    other = labels.clone()
    other[:, 8] = (other[:, 8] + 1) % module.backbone.config.vocab_size
    assert not torch.isclose(module.lm_loss(embeds, mask, labels), module.lm_loss(embeds, mask, other))
