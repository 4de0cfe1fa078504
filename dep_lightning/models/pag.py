"""PAG (paper table 1): RAG plus a profile the LLM first writes from the user's recent reviews.

Stage ``profile``: the frozen LLM summarises the K retrieved (most recent) reviews into a
short profile of the user as a reviewer. Final prompt: RAG's prompt (the same reviews as
text) plus ``[User Profile]: <profile>``. Nothing is trained; profiles are cached on disk
(see ``models/staged.py``).

    dep-lightning fit --config configs/quickstart.yaml --config configs/baselines/pag.yaml
"""

from __future__ import annotations

from typing import Sequence

from dep_lightning.data.context import SampleContext
from dep_lightning.methods import MethodSpec, register
from dep_lightning.models.backbone import BackboneOptions
from dep_lightning.models.generation import GenerationConfig
from dep_lightning.models.staged import Messages, StagedPromptingModule, recent_reviews

PROFILE_SYSTEM = "You write short profiles of reviewers from the product reviews they wrote."
PROFILE_REQUEST = ("Here are a user's most recent reviews, newest first.\n\n{reviews}\n\n"
                   "Write a short profile of this user as a reviewer: what they care about, what they like and "
                   "dislike, how they usually rate, and how they write (length, tone, vocabulary, habits). "
                   "Answer with the profile only.")


def profile_messages(context: SampleContext, max_chars: int) -> Messages:
    """The summarisation prompt of one sample (stage ``profile``)."""
    return [{"role": "system", "content": PROFILE_SYSTEM},
            {"role": "user", "content": PROFILE_REQUEST.format(reviews=recent_reviews(context, max_chars))}]


@register(MethodSpec("pag", "PAG", order=30))
class PAGModule(StagedPromptingModule):
    """Profile-augmented generation. Arguments as :class:`~dep_lightning.models.staged.StagedPromptingModule`."""

    stage_names = ("profile",)

    def __init__(self, backbone: str = "smollm2-135m-instruct", backbone_dtype: str = "auto",
                 embedding_dim: int = 384, generation: GenerationConfig = GenerationConfig(), seed: int = 0,
                 stage_generation: GenerationConfig = GenerationConfig(max_new_tokens=128, do_sample=False),
                 stage_batch_size: int = 8, stage_cache_dir: str | None = None, max_review_chars: int = 1000,
                 backbone_options: BackboneOptions = BackboneOptions()):
        super().__init__(self.method, backbone, backbone_dtype, embedding_dim, generation, seed, stage_generation,
                         stage_batch_size, stage_cache_dir, max_review_chars, backbone_options)
        self.save_stage_hyperparameters()

    def profiles(self, contexts: Sequence[SampleContext]) -> list[str]:
        return self.run_stage("profile", [profile_messages(c, self.max_review_chars) for c in contexts])
