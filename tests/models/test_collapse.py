"""The collapse of DEP's user signal and what fixes it, pinned on planted data.

On the embedded data with 4 style groups (user_signal 1.0), the tiny backbone and the tiny
embedder reproduce what SmolLM2 showed in the paper form (docs/personalization.md): after
45 optimizer steps the SAE latent is nearly constant across test slots and every soft
prompt is one vector (prompt spread ~1e-4 of its norm; SmolLM2: 0.002–0.004). Standardising
the refiner's inputs (``input_norm: standardize``) is what keeps users apart (spread ~0.35;
SmolLM2: 0.14); the token-norm output scale alone does not. The thresholds sit far from
both measured sides: a collapsed form stays under 1 % spread, a working one above 5 %."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from dep_lightning.data.prompt import PromptConfig
from dep_lightning.data.sources import EmbeddedSource
from dep_lightning.models.dep_module import DEPModule, GenerationConfig
from tests.helpers import set_up

FORMS = {
    "paper": {"input_norm": "none", "prompt_norm": "none"},
    "token_norm_only": {"input_norm": "none", "prompt_norm": "token"},
    "standardize_only": {"input_norm": "standardize", "prompt_norm": "none"},
    "standardize_and_token_norm": {"input_norm": "standardize", "prompt_norm": "token"},  # the default
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    source = EmbeddedSource(num_users=60, num_items=36, seed=0, style_groups=4, user_signal=1.0,
                            review_sentences=[2, 5])
    return set_up("fit", tmp_path_factory.mktemp("planted"), source=source, k=4, batch_size=4, limit_train=None,
                         limit_val=8, limit_test=16,
                         prompt=PromptConfig(with_text=False, metadata=False, max_target_tokens=64))


def trained_diagnostics(dm, **form) -> dict[str, float]:
    model = DEPModule(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=32, lr=1e-3,
                      generation=GenerationConfig(max_new_tokens=4), **form)
    L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0).fit(model, dm)
    parts = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            model.soft_prompts(batch.prompt.slots)
            parts.append(model._last)
    return model.diagnostics(parts)


@pytest.mark.slow
def test_standardised_inputs_keep_users_apart_where_the_paper_form_collapses(planted):
    seen = {name: trained_diagnostics(planted, **form) for name, form in FORMS.items()}
    spread = {name: d["prompt_spread"] for name, d in seen.items()}
    for name in ("paper", "token_norm_only"):
        assert spread[name] < 0.01, seen  # one vector for every user
    for name in ("standardize_only", "standardize_and_token_norm"):
        assert spread[name] > 0.05, seen
        assert seen[name]["latent_spread"] > 5 * seen["paper"]["latent_spread"], seen
    # The output scale: token-norm prompts sit at the token embeddings' norm (one float32 rescale).
    assert seen["standardize_and_token_norm"]["prompt_norm_ratio"] == pytest.approx(1.0, rel=1e-5)
