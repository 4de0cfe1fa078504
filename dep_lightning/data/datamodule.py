"""The LightningDataModule: source -> samples -> retrieval -> vectors -> prompts -> batches.

Everything per sample is computed once in ``setup`` (token ids, slot positions and the
his/diff vectors of exactly the reviews shown), so data loading only pads.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, DistributedSampler

from dep_lightning.data.batching import (
    Collator,
    EvalShardSampler,
    LengthBucketSampler,
    longest_first,
    shared_prefix_length,
)
from dep_lightning.data.conditions import CONDITIONS, apply_condition, check_conditions, mask_slot_vectors
from dep_lightning.data.context import ContextBuilder, user_inputs, user_texts
from dep_lightning.data.errors import ConfigError, ErrorLog
from dep_lightning.data.features import FeatureBuilder, peer_corpus
from dep_lightning.data.preprocess import PreprocessReport
from dep_lightning.data.prompt import DIFF, HIS, PromptBuilder, PromptConfig
from dep_lightning.data.resumable import ResumableDataLoader
from dep_lightning.data.retrieval import EmbeddingRetriever, RecencyRetriever, Retriever
from dep_lightning.data.samples import build_samples, check_val_size
from dep_lightning.data.schema import PreparedData, Sample
from dep_lightning.data.sources import EmbeddedSource, ReviewSource
from dep_lightning.data.types import OPTIONAL_INPUTS, Example
from dep_lightning.embeddings.cache import EmbeddingCache, SentenceEmbedder

Split = Literal["train", "val", "test"]


class DEPDataModule(L.LightningDataModule):
    """Serves DEP samples with their soft-prompt vectors.

    Args:
        source: where reviews come from (any ``ReviewSource``).
        embedder: the frozen sentence embedder whose vectors fill the slots.
        cache_dir: embedding cache folder (default: ``<cache_root>/embeddings``).
        retriever: history retrieval (recency, bm25, random, embedding).
        k: number of history reviews retrieved per sample (paper: up to 8).
        prompt: what the prompt shows (text, embeddings, guidance, token budget).
        tokenizer: backbone name or folder whose tokenizer and chat template render prompts.
        val_size: rows of the merged val splits used for validation (paper: 512).
        seed: seed of the validation sample and the batch order.
        categories: categories to use (default: all in the data).
        limit_train / limit_val / limit_test: keep N samples (quick runs), taken round-robin
            across categories (the first of each category, then the second of each, …; a
            category that runs out is skipped) and kept in the split's order; N at or above
            the split's size keeps it whole. One category: the first N.
        batch_size: training batch size; eval_batch_size: validation/test/generation batch size.
        bucket_by_length: batch training samples of similar length together.
        test_order: ``length`` batches test / predict prompts of similar length together
            (longest first; less left padding to prefill), ``file`` keeps the split's order.
            Either way every sample is generated for once; the outputs differ between the
            two because sampling is seeded per batch.
        val_order: ``file`` keeps the validation split's order, so a capped validation
            generation (``GenerationEvaluator.max_samples``) sees the same first samples
            whatever their length; ``length`` batches samples of similar full length (prompt +
            target) together, longest first: less right padding in the teacher-forced forward
            pass, and ``val/nll`` (a token-weighted mean) equal up to float rounding.
        num_workers: DataLoader worker processes.
        on_error: ``raise`` or ``skip`` bad input records (see ``data/errors.py``).
        context: attach each sample's :class:`~dep_lightning.data.context.SampleContext`
            (retrieved reviews, their items and peers) as ``Batch.context``, for the
            multi-stage prompting baselines (PAG, DPL).
        condition: whose history test / predict prompts show (``data/conditions.py``):
            ``true`` (the user's own), ``swap`` (another user's, a seeded derangement
            within the category), ``none``, ``his_only``, ``diff_only``.
        score_limit: test samples scored by likelihood (``dep-lightning score``);
            ``None`` (default) scores the whole test split, whatever ``limit_test`` is.

    With ``prompt.embeddings: user`` (PPlug) every example also carries the vectors of the
    user's whole history and of the target item (``data/context.py``), which batches
    hold in ``Batch.slots`` as ``user_history``, ``user_history_mask`` and ``target_item``.

    Examples and batches are typed (``data/types.py``). Inputs only some methods read
    (``context``, the user inputs) are built only when configured; :meth:`setup` first
    checks that the attached model's ``inputs`` are among them (:meth:`check_inputs`).
    """

    def __init__(
        self,
        source: ReviewSource | None = None,
        embedder: SentenceEmbedder | None = None,
        cache_dir: str | None = None,
        retriever: Retriever | None = None,
        k: int = 4,
        prompt: PromptConfig = PromptConfig(),
        tokenizer: str = "smollm2-135m-instruct",
        val_size: int = 512,
        seed: int = 0,
        categories: list[str] | None = None,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        batch_size: int = 1,
        eval_batch_size: int = 8,
        bucket_by_length: bool = True,
        test_order: Literal["length", "file"] = "length",
        val_order: Literal["length", "file"] = "file",
        num_workers: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        context: bool = False,
        condition: Literal["true", "swap", "none", "his_only", "diff_only"] = "true",
        score_limit: int | None = None,
    ):
        super().__init__()
        if k < 0:
            raise ConfigError("k", k, "must be >= 0")
        check_val_size(val_size)
        for split, limit in (("train", limit_train), ("val", limit_val), ("test", limit_test)):
            if limit is not None and limit < 0:
                raise ConfigError(f"limit_{split}", limit, "must be >= 0 or null")
        self.source = source if source is not None else EmbeddedSource()
        self.embedder = embedder if embedder is not None else SentenceEmbedder()
        self.cache_dir = cache_dir
        self.retriever = retriever if retriever is not None else RecencyRetriever()
        self.k, self.prompt, self.tokenizer_name = k, prompt, tokenizer
        self.val_size, self.seed, self.categories = val_size, seed, categories
        self.limits = {"train": limit_train, "val": limit_val, "test": limit_test}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.bucket_by_length, self.num_workers, self.on_error = bucket_by_length, num_workers, on_error
        for name, order in (("test_order", test_order), ("val_order", val_order)):
            if order not in ("length", "file"):
                raise ConfigError(name, order, "must be 'length' or 'file'")
        self.test_order, self.val_order = test_order, val_order
        self.context = context
        if condition not in CONDITIONS:
            raise ConfigError("condition", condition, f"must be one of {', '.join(CONDITIONS)}")
        if score_limit is not None and score_limit < 1:
            raise ConfigError("score_limit", score_limit, "must be >= 1 or null")
        self.condition, self.score_limit = condition, score_limit
        #: Set by ``Trainer.score`` (``dep-lightning score``): the test loaders become one
        #: teacher-forced loader per condition, over the scored samples.
        self.scoring_conditions: tuple[str, ...] | None = None
        self.data: PreparedData | None = None
        self.examples: dict[str, list[Example]] = {}
        self.samples: dict[str, list[Sample]] = {}
        self._tokenizer = None
        self._cache: EmbeddingCache | None = None
        self._features: FeatureBuilder | None = None
        self._corpus: list | None = None
        self._contexts: ContextBuilder | None = None

    # -- pieces ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from dep_lightning.models.backbone import load_tokenizer

            # The tiny test backbone shares SmolLM2's tokenizer.
            name = "smollm2-135m-instruct" if self.tokenizer_name == "tiny" else self.tokenizer_name
            self._tokenizer = load_tokenizer(name)
        return self._tokenizer

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            from dep_lightning.assets import cache_root

            root = Path(self.cache_dir) if self.cache_dir else cache_root() / "embeddings"
            self._cache = EmbeddingCache(root, self.embedder)
        return self._cache

    @property
    def embedding_dim(self) -> int:
        """Dimension of the review vectors (the model's input size)."""
        return self.cache.dim

    def load_data(self) -> PreparedData:
        if self.data is None:
            errors = ErrorLog(self.on_error)
            self.data = self.source.load(errors, PreprocessReport())
            # Skipped records and passed-over lines (blank lines, a missing optional field)
            # are both reported: a run never loses input without a word.
            if errors.counts or errors.notes:
                print(errors.report())
        return self.data

    def peer_corpus(self) -> list:
        """The peer corpus of the loaded data, computed once (see ``data/features.py``)."""
        if self._corpus is None:
            self._corpus = peer_corpus(self.load_data())
        return self._corpus

    def _samples(self, split: Split) -> list[Sample]:
        if split not in self.samples:
            samples = build_samples(self.load_data(), split, val_size=self.val_size, seed=self.seed,
                                    categories=self.categories)
            self.samples[split] = self._limit(samples, self.limits[split])
        return self.samples[split]

    @staticmethod
    def _limit(samples: list[Sample], limit: int | None) -> list[Sample]:
        """At most ``limit`` samples, taken round-robin across categories (the first of each
        category in category order, then the second of each, …), kept in the split's order.

        Splits are sorted by category, so the first N alone would cover one category."""
        if limit is None or limit >= len(samples):
            return list(samples)
        by_category: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            by_category.setdefault(s.category, []).append(i)
        queues = [by_category[c] for c in sorted(by_category)]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < limit:
            chosen += [q[depth] for q in queues if depth < len(q)][: limit - len(chosen)]
            depth += 1
        return [samples[i] for i in sorted(chosen)]

    def scored_samples(self) -> list[Sample]:
        """The test samples likelihood scoring covers: the whole split, or ``score_limit`` of them."""
        if "score" not in self.samples:
            samples = build_samples(self.load_data(), "test", val_size=self.val_size, seed=self.seed,
                                    categories=self.categories)
            self.samples["score"] = self._limit(samples, self.score_limit)
        return self.samples["score"]

    def _retrieve(self, samples: list[Sample]) -> list[list]:
        if isinstance(self.retriever, EmbeddingRetriever) and self.retriever.encoder is None:
            self.retriever.attach(self.cache.get)
        return [[s.history[i] for i in self.retriever.select(s, self.k)] for s in samples]

    # -- Lightning hooks ------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Encode every text this run needs (once per node; cached on disk across runs)."""
        splits = ("train", "val", "test")
        histories = [h for split in splits for h in self._retrieve(self._samples(split))]
        extra = user_texts([s for split in splits for s in self._samples(split)]) if self.prompt.user_slot else []
        self.cache.ensure(FeatureBuilder.texts_needed(self.peer_corpus(), histories) + extra)

    def optional_inputs(self) -> frozenset[str]:
        """The optional batch inputs (``data/types.py``) this configuration builds."""
        return frozenset(name for name, (option, value) in OPTIONAL_INPUTS.items() if self._yaml(option) == value)

    def _option(self, option: str) -> Any:
        """The value of ``option``, a dotted path below ``data.init_args`` (``prompt.embeddings``)."""
        return functools.reduce(getattr, option.split("."), self)

    def _yaml(self, option: str) -> str:
        """:meth:`_option` as a YAML file spells it (``true``, ``user``)."""
        value = self._option(option)
        return str(value).lower() if isinstance(value, bool) else str(value)

    def check_inputs(self, model: object) -> None:
        """Refuse ``model`` when it reads an optional input (its ``inputs``) this configuration does not build.

        Runs at the start of :meth:`setup`, before any example is built, so a method run
        with data it cannot use fails at once, with a one-line error that names the input
        and the setting that builds it."""
        wanted = frozenset(getattr(model, "inputs", frozenset()))
        unknown = sorted(wanted - OPTIONAL_INPUTS.keys())
        if unknown:
            raise ValueError(f"{type(model).__name__}.inputs names {unknown}, which are not optional batch "
                             f"inputs (data/types.py OPTIONAL_INPUTS: {sorted(OPTIONAL_INPUTS)})")
        for name in sorted(wanted - self.optional_inputs()):
            option, value = OPTIONAL_INPUTS[name]
            method = getattr(model, "method", type(model).__name__)
            raise ConfigError(option, self._option(option), f"{method} reads the batch input {name!r}, built "
                              f"only with data.init_args.{option}: {value}")

    def setup(self, stage: str | None = None) -> None:
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is not None:
            self.check_inputs(model)
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "val", "test")):
            if split not in self.examples:
                self.examples[split] = self.build_examples(split)

    def build_examples(self, split: Split | Literal["score"], condition: str = "true") -> list[Example]:
        """Examples of ``split`` (``score``: the scored test samples) under ``condition``."""
        base = self.scored_samples() if split == "score" else self._samples(split)
        samples = apply_condition(base, condition, self.k, seed=self.seed)
        histories = self._retrieve(samples)
        # A no-op when prepare_data ran; otherwise (setup without it) encodes what is missing.
        extra = user_texts(samples) if self.prompt.user_slot else []
        self.cache.ensure(FeatureBuilder.texts_needed(self.peer_corpus(), histories) + extra)
        if self._features is None:
            self._features = FeatureBuilder(self.peer_corpus(), self.cache.lookup)
        vectors = self._features.vectors(histories)
        builder = PromptBuilder(self.tokenizer, self.prompt)
        if self.context and self._contexts is None:
            self._contexts = ContextBuilder(self.peer_corpus(), self.load_data(), self.cache.lookup, self.prompt)
        # User and instruction slots (embeddings: user) are filled by the model from the user inputs.
        no_vector = np.zeros(self.embedding_dim, np.float32)
        examples = []
        for sample, history, vecs in zip(samples, histories, vectors):
            # Evaluation prompts are budgeted without looking at the reference (it is hidden).
            encoded = builder.encode(sample, history, self.data.item, blind_budget=split in ("test", "score"))
            slot_vec = [vecs.his[i] if kind == HIS else vecs.diff[i] if kind == DIFF else no_vector
                        for i, kind, _ in encoded.slots]
            # A his slot always has its vector; a diff slot may have no peers (zero vector, mask False).
            slot_peers = [bool(vecs.has_peers[i]) if kind == DIFF else True for i, kind, _ in encoded.slots]
            slot_vec = np.asarray(slot_vec, np.float32).reshape(len(slot_vec), self.embedding_dim)
            slot_vec, slot_peers = mask_slot_vectors(condition, np.asarray([k for _, k, _ in encoded.slots], int),
                                                     slot_vec, np.asarray(slot_peers, bool))
            user_vectors, item_vector = (user_inputs(sample, self.cache.lookup, self.embedding_dim)
                                         if self.prompt.user_slot else (None, None))
            examples.append(Example(
                sample_id=sample.sample_id, category=sample.category, user_id=sample.user_id,
                item_id=sample.item.item_id, reference=sample.target.text,
                input_ids=encoded.input_ids, labels=encoded.labels, prompt_length=encoded.prompt_length,
                slot_pos=[p for _, _, p in encoded.slots], slot_kind=[k for _, k, _ in encoded.slots],
                slot_vec=slot_vec, slot_peers=slot_peers,
                history=[history[i].text for i in encoded.kept],  # shown in the prompt, ascending time
                retrieved=[r.text for r in history],  # the K retrieved, ascending time
                latest=sample.history[-1].text if sample.history else "",  # the user's most recent review
                context=self._contexts.build(sample, history) if self._contexts is not None else None,
                user_vectors=user_vectors, item_vector=item_vector,
            ))
        return examples

    def _replicas(self) -> tuple[int, int]:
        """(number of processes, this process's rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def split_examples(self, split: str, condition: str = "true") -> list[Example]:
        key = split if condition == "true" else f"{split}:{condition}"
        if key not in self.examples:
            self.examples[key] = self.build_examples(split, condition)
        return self.examples[key]

    def _loader(self, split: Split, generation: bool) -> DataLoader:
        """Every loader shards itself across processes (see ``data/batching.py``), so several
        processes need ``trainer.use_distributed_sampler: false`` (configs/trainer/ddp.yaml)."""
        examples = self.split_examples(split, self.condition if split == "test" else "true")
        collate = Collator(self.tokenizer.pad_token_id, self.embedding_dim, generation=generation,
                           prefix_length=shared_prefix_length(examples))
        world, rank = self._replicas()
        if split == "train":
            if self.bucket_by_length:
                sampler = LengthBucketSampler([len(e.input_ids) for e in examples], self.batch_size,
                                              shuffle=True, seed=self.seed, num_replicas=world, rank=rank)
                # Resumable: a run killed mid-epoch continues at the next batch (data/resumable.py).
                loader = ResumableDataLoader(examples, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=self.num_workers)
                if self._train_resume is not None:
                    loader.load_state_dict(self._train_resume)
                    self._train_resume = None
                self._train_loader = loader
                return loader
            if world > 1:
                shard = DistributedSampler(examples, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
                return DataLoader(examples, batch_size=self.batch_size, sampler=shard, collate_fn=collate,
                                  num_workers=self.num_workers)
            return DataLoader(examples, batch_size=self.batch_size, shuffle=True, collate_fn=collate,
                              num_workers=self.num_workers)
        order = None
        if split == "test" and self.test_order == "length":
            order = longest_first([e.prompt_length for e in examples])
        if split == "val" and self.val_order == "length":
            order = longest_first([len(e.input_ids) for e in examples])
        pad = split == "val"  # its steps log a synchronised loss: every process runs as many steps
        if split == "test":
            examples, order = self._unfinished(examples, order)
            pad = self._needs_padding(len(examples), world)
        shard = EvalShardSampler(len(examples), self.eval_batch_size, world, rank, pad=pad, order=order)
        return DataLoader(examples, batch_size=self.eval_batch_size, sampler=shard, collate_fn=collate,
                          num_workers=self.num_workers)

    def _needs_padding(self, n: int, world: int) -> bool:
        """Whether test / predict batches are fewer than the processes (but not none).

        A process without a batch would stop Lightning ("DataLoader within local rank has zero
        length"), and with Lightning's allowance for that it would skip the epoch-end hooks
        whose gather the others wait in. Padded, each such process runs a copy of the first
        batch, at the same time as the process that owns it and with the same seed, so the
        same rows, which the writers collapse by sample id. With at least as many batches as
        processes nothing is padded and every sample is generated once."""
        batches = -(-n // self.eval_batch_size)
        return 0 < batches < world

    # -- resuming test / predict (callbacks/predictions.py) ---------------------------------
    #: Set by the PredictionWriter for one loader build: called on every process (a
    #: collective), it returns the sample ids this run directory already holds predictions for.
    test_resume: Callable[[], set[str]] | None = None

    def _unfinished(self, examples: list[Example], order: list[int] | None) -> tuple[list[Example], list[int] | None]:
        """The test examples (and their order) left after dropping every batch whose samples
        all have predictions already.

        Batches are cut as without resuming and dropped whole, so every remaining batch has
        the same samples, and so the same sampling seed (its first sample id), as in an
        uninterrupted run. Only the last batch can be short and it stays last, so the kept
        examples cut into the same batches again. When every batch is done the last one is
        kept (the shortest prompts with ``test_order: length``): the test loop then still
        runs and its epoch end writes the file and metrics."""
        resume, self.test_resume = self.test_resume, None
        done = resume() if resume is not None else set()
        if not done:
            return examples, order
        sequence = list(order) if order is not None else list(range(len(examples)))
        size = self.eval_batch_size
        batches = [sequence[start:start + size] for start in range(0, len(sequence), size)]
        left = [b for b in batches if not all(examples[i].sample_id in done for i in b)] or batches[-1:]
        return [examples[i] for b in left for i in b], None

    # -- resuming mid-epoch (data/resumable.py) ------------------------------------------------
    # The training loader's position is also kept here: Lightning restores a DataModule's
    # state before it builds the loaders, whereas its own loader-state restore is skipped when
    # the loader was built early (``trainer.estimated_stepping_batches`` in configure_optimizers).
    _train_loader: ResumableDataLoader | None = None
    _train_resume: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        resume = state.get("train_loader")
        if resume is not None and self._train_loader is not None:  # built already (e.g. DeepSpeed order)
            self._train_loader.load_state_dict(resume)
        else:
            self._train_resume = resume

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", generation=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", generation=True)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.scoring_conditions is not None:
            return [self.score_loader(c) for c in check_conditions(self.scoring_conditions)]
        return self._loader("test", generation=True)

    def score_loader(self, condition: str) -> DataLoader:
        """Teacher-forced batches (prompt + reference, right-padded) of the scored samples under
        ``condition``, longest first, each sample once across processes (a process without a
        batch of its own runs a copy of the first, see :meth:`_needs_padding`)."""
        examples = self.split_examples("score", condition)
        collate = Collator(self.tokenizer.pad_token_id, self.embedding_dim, generation=False,
                           prefix_length=shared_prefix_length(examples))
        world, rank = self._replicas()
        order = longest_first([len(e.input_ids) for e in examples])
        pad = self._needs_padding(len(examples), world)  # the ScoreWriter collapses the copies
        shard = EvalShardSampler(len(examples), self.eval_batch_size, world, rank, pad=pad, order=order)
        return DataLoader(examples, batch_size=self.eval_batch_size, sampler=shard, collate_fn=collate,
                          num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", generation=True)

    def describe(self) -> dict[str, Any]:
        """Data-side ablation keys and data identity, for the run's ``manifest.json``."""
        from dep_lightning.data.retrieval import RETRIEVERS

        names = {cls: name for name, cls in RETRIEVERS.items()}
        data = self.load_data()
        described = {"source": self.source.describe(), "categories": self.categories or data.categories,
                     "limits": dict(self.limits),
                     "n": {split: len(self.samples[split]) for split in ("train", "val", "test")
                           if split in self.samples}}
        if self.condition != "true":
            # Test prompts (the generations the metrics score) showed another condition's history:
            # a different configuration, never a seed of the ordinary run. Recorded only when set,
            # so manifests of ordinary runs, older ones included, stay as they were.
            described["condition"] = self.condition
        return {
            "ablation": {"embeddings": self.prompt.embeddings if self.prompt.history or self.prompt.user_slot
                         else "none",
                         "with_text": self.prompt.with_text and self.prompt.history,
                         "guidance": self.prompt.guidance, "history": self.prompt.history, "k": self.k,
                         "retriever": names.get(type(self.retriever), type(self.retriever).__name__)},
            "data": described,
        }

    def uniqueness(self):
        """Per-user uniqueness over the peer corpus (paper RQ4 / figure 3)."""
        if self._features is None:
            self.setup("test")
        return self._features.uniqueness
