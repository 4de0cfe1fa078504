"""What decides whether earlier work is reused: the digests of a method's state."""

from __future__ import annotations

import torch

from dep_lightning.fingerprints import weights_digest, weights_fingerprint
from dep_lightning.models.dep_module import DEPModule


def test_the_digests_follow_the_checkpointed_state_and_only_the_digest_follows_the_hyperparameters():
    torch.manual_seed(0)
    model = DEPModule(backbone="tiny", embedding_dim=32, latent_dim=16)
    fingerprint, digest = weights_fingerprint(model), weights_digest(model)
    assert (len(fingerprint), len(digest)) == (16, 16)

    torch.manual_seed(0)
    same = DEPModule(backbone="tiny", embedding_dim=32, latent_dim=16)
    assert (weights_fingerprint(same), weights_digest(same)) == (fingerprint, digest)

    # The frozen backbone is not a checkpoint's: changing it changes neither digest.
    with torch.no_grad():
        next(same.backbone.parameters()).add_(1.0)
    assert (weights_fingerprint(same), weights_digest(same)) == (fingerprint, digest)

    # One trainable weight, one ulp apart: both change.
    with torch.no_grad():
        weight = next(p for p in same.parameters() if p.requires_grad)
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(float("inf")))
    assert weights_fingerprint(same) != fingerprint and weights_digest(same) != digest

    # Same weights, another hyperparameter: only the digest (the score cache's key) changes.
    torch.manual_seed(0)
    other = DEPModule(backbone="tiny", embedding_dim=32, latent_dim=16)
    other.hparams["score_note"] = "another setting"
    assert weights_fingerprint(other) == fingerprint and weights_digest(other) != digest
