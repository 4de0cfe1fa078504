"""DPL (paper table 1): the LLM compares the user with representative peers, then profiles the user.

For each retrieved history review whose item has peers (other users' reviews of it in the
peer corpus, which holds no val or test target):

1. *representatives* — the peers' cached embedding vectors are clustered with seeded
   k-means (``embeddings/representatives.py``; the seed comes from the run seed and the
   item id) and the review nearest each centroid is kept;
2. stage ``analysis`` — the LLM writes how the user's review differs from those
   representatives in writing style, emotional tone and semantics.

Stage ``summary``: from the user's recent reviews and the analyses, the LLM writes a
profile of what sets the user apart. Final prompt: the recent reviews as text (RAG's
prompt) plus ``[User Profile]: <summary>``. Nothing is trained; analyses and summaries are
cached on disk (see ``models/staged.py``). Reviews without peers get no analysis.

    dep-lightning fit --config configs/quickstart.yaml --config configs/baselines/dpl.yaml
"""

from __future__ import annotations

from typing import Sequence

from dep_lightning.data.context import SampleContext
from dep_lightning.data.schema import Review
from dep_lightning.embeddings.representatives import representatives as pick_representatives
from dep_lightning.methods import MethodSpec, register
from dep_lightning.models.backbone import BackboneOptions
from dep_lightning.models.generation import GenerationConfig, stable_seed
from dep_lightning.models.staged import Messages, StagedPromptingModule, clip, recent_reviews, review_block

ANALYSIS_SYSTEM = "You compare how different people review the same item."
ANALYSIS_REQUEST = (
    "[Item Title]: {title}\n[Item Description]: {description}\n\n{user}\n\n[Other Users' Reviews]:\n{others}\n\n"
    "Compare the target user's review with the other users' reviews of the same item. Describe how the target "
    "user differs in:\n1. Writing style (length, structure, vocabulary, punctuation);\n2. Emotional tone;\n"
    "3. Semantics (which aspects they focus on and what they think of the item).\n"
    "Answer with the three points only.")
SUMMARY_SYSTEM = "You write short profiles of reviewers from the product reviews they wrote."
SUMMARY_REQUEST = (
    "[User's Recent Reviews]:\n{reviews}\n\n[Difference Analyses]:\n{analyses}\n\n"
    "Each analysis compares one of the user's reviews with other users' reviews of the same item. Summarize what "
    "distinguishes this user from other reviewers — writing style, emotional tone and semantics — into a short "
    "profile. Answer with the profile only.")


def analysis_messages(context: SampleContext, review: Review, peers: Sequence[Review], max_chars: int) -> Messages:
    """The difference-analysis prompt for one of the user's reviews (stage ``analysis``)."""
    item = context.item(review.item_id, review.category)
    others = "\n\n".join(review_block(f"Other Review {n}", p, None, max_chars) for n, p in enumerate(peers, 1))
    request = ANALYSIS_REQUEST.format(title=item.title, description=clip(item.description, max_chars),
                                      user=review_block("Target User's Review", review, None, max_chars),
                                      others=others)
    return [{"role": "system", "content": ANALYSIS_SYSTEM}, {"role": "user", "content": request}]


def summary_messages(context: SampleContext, analyses: Sequence[tuple[int, str]], max_chars: int) -> Messages:
    """The profile prompt of one sample (stage ``summary``); ``analyses`` are ``(retrieved index, text)``."""
    newest_first = len(context.retrieved)
    blocks = [f"[Analysis of Review {newest_first - i}]:\n{text}" for i, text in sorted(analyses, reverse=True)]
    request = SUMMARY_REQUEST.format(reviews=recent_reviews(context, max_chars),
                                     analyses=("\n\n".join(blocks) if blocks
                                               else "(no other users reviewed these items)"))
    return [{"role": "system", "content": SUMMARY_SYSTEM}, {"role": "user", "content": request}]


@register(MethodSpec("dpl", "DPL", order=40))
class DPLModule(StagedPromptingModule):
    """Difference-aware personalization by prompting.

    Args:
        representatives: peer reviews kept per history item (k-means clusters).
        (all other arguments as :class:`~dep_lightning.models.staged.StagedPromptingModule`)
    """

    stage_names = ("analysis", "summary")

    def __init__(self, backbone: str = "smollm2-135m-instruct", backbone_dtype: str = "auto",
                 embedding_dim: int = 384, generation: GenerationConfig = GenerationConfig(), seed: int = 0,
                 stage_generation: GenerationConfig = GenerationConfig(max_new_tokens=128, do_sample=False),
                 stage_batch_size: int = 8, stage_cache_dir: str | None = None, max_review_chars: int = 1000,
                 representatives: int = 3,
                 backbone_options: BackboneOptions = BackboneOptions()):
        super().__init__(self.method, backbone, backbone_dtype, embedding_dim, generation, seed, stage_generation,
                         stage_batch_size, stage_cache_dir, max_review_chars, backbone_options)
        if representatives < 1:
            raise ValueError(f"representatives must be >= 1, got {representatives}")
        self.representatives = representatives
        self.save_stage_hyperparameters()

    def representative_peers(self, context: SampleContext, index: int) -> list[Review]:
        """Representative peers of the ``index``-th retrieved review (empty without peers)."""
        peers = context.peers[index]
        if not peers.reviews:
            return []
        seed = stable_seed(self.hparams.seed, peers.reviews[0].item_id)
        return [peers.reviews[i] for i in pick_representatives(peers.vectors, self.representatives, seed=seed)]

    def profiles(self, contexts: Sequence[SampleContext]) -> list[str]:
        owners, conversations = [], []
        for s, context in enumerate(contexts):
            for i, review in enumerate(context.retrieved):
                chosen = self.representative_peers(context, i)
                if chosen:
                    owners.append((s, i))
                    conversations.append(analysis_messages(context, review, chosen, self.max_review_chars))
        analyses: list[list[tuple[int, str]]] = [[] for _ in contexts]
        for (s, i), text in zip(owners, self.run_stage("analysis", conversations)):
            analyses[s].append((i, text))
        return self.run_stage("summary", [summary_messages(c, a, self.max_review_chars)
                                          for c, a in zip(contexts, analyses)])
