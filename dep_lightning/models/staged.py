"""Multi-stage prompting: the frozen LLM first writes about the user, then writes the review.

PAG (``models/pag.py``) and DPL (``models/dpl.py``) generate intermediate texts — a profile,
difference analyses, a summary — before the final generation. Those texts depend only on
their stage prompt, the backbone and the decoding settings, so each is generated once and
kept in a :class:`StageCache`: one JSON file per text, named by the sha256 of
``(rendered stage prompt, backbone fingerprint, decoding settings)`` — never by a user or
item id — and written atomically (temporary file + rename). A rerun generates nothing it
has already generated, and an interrupted run resumes where it stopped.

Stage decoding defaults to greedy, which makes a stage text a function of its prompt; with
sampling the cache keeps the first sample drawn for a key.

Stage prompts are batched: every uncached prompt of a test batch (deduplicated) is
generated in left-padded batches of ``stage_batch_size``. The final prompt is the
DataModule's prompt (the same :class:`~dep_lightning.data.prompt.PromptBuilder` and
settings, carried by each sample's context) plus a ``[User Profile]`` section.

Each test run writes ``analysis/stages.json`` into the run directory (a scoring run
``analysis/stages_score.json``): per stage, how many texts came from the cache and how many
were generated.

Likelihood scoring (``dep-lightning score``, ``fit --score_after_fit``) scores the reference
after the same final prompt, its profile written from the history of the condition: the
user's own (``true``), another user's (``swap``: the profile moves with the reviews) or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import torch

from dep_lightning.atomic import atomic_write
from dep_lightning.data.batching import IGNORE_INDEX, pad_rows
from dep_lightning.data.context import SampleContext
from dep_lightning.data.prompt import EncodedPrompt, PromptBuilder, PromptConfig
from dep_lightning.data.schema import Item, Review
from dep_lightning.data.types import Batch, PromptBatch, Slots
from dep_lightning.fingerprints import update_digest
from dep_lightning.models.backbone import BackboneOptions
from dep_lightning.models.base import PromptingModule
from dep_lightning.models.generation import GenerationConfig, as_generation_config, prediction_rows

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


class StageCache:
    """Generated stage texts on disk, one JSON file per key (``<root>/<key[:2]>/<key>.json``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(prompt: str, backbone: str, generation: dict[str, Any]) -> str:
        payload = json.dumps({"prompt": prompt, "backbone": backbone, "generation": generation}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None when absent. An unreadable entry (a disk fault: writes
        are atomic) is reported and treated as absent, so it is generated and replaced."""
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            log.warning("stage cache entry %s is unreadable (%s); generating it again", path, error)
            return None
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("output"), str):
            log.warning("stage cache entry %s does not hold key %s; generating it again", path, key)
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({**record, "key": key}, ensure_ascii=False, indent=1))


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters at a word boundary, marked with an ellipsis."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut + " ..."


def review_block(label: str, review: Review, item: Item | None, max_chars: int) -> str:
    """One review as the stage prompts show it (the fields of the paper's prompt)."""
    lines = [f"[{label}]:"]
    if item is not None:
        lines.append(f"- [Item Title]: {item.title}")
    lines += [f"- [Review Rating]: {review.rating:.1f}",
              f"- [Review Title]: {review.title}",
              f"- [Review Text]: {clip(review.text, max_chars)}"]
    return "\n".join(lines)


def recent_reviews(context: SampleContext, max_chars: int) -> str:
    """The retrieved reviews, newest first, numbered as in the final prompt."""
    blocks = [review_block(f"Review {n}", r, context.item(r.item_id, r.category), max_chars)
              for n, r in enumerate(reversed(context.retrieved), start=1)]
    return "\n\n".join(blocks) if blocks else "(no past reviews)"


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> PromptBatch:
    """A generation batch of token id rows (left padding), without soft-prompt slots."""
    ids, mask, _ = pad_rows(rows, pad_id, left=True)
    return PromptBatch(input_ids=ids.to(device), attention_mask=mask.to(device), slots=Slots.empty(device))


class StagedPromptingModule(PromptingModule):
    """An untrained method that writes about the user before writing the review.

    Subclasses implement :meth:`profiles` (the texts placed in the final prompt's
    ``[User Profile]`` section) with :meth:`run_stage`. Needs ``data.init_args.context:
    true`` and a text-only prompt (``embeddings: none``).

    Args:
        method: name recorded in the run's manifest.
        stage_generation: decoding of the intermediate stages (default greedy, 128 tokens).
        stage_batch_size: prompts per generation batch in the intermediate stages.
        stage_cache_dir: folder of the stage cache (default ``<cache_root>/stages``).
        max_review_chars: review texts (and item descriptions) in stage prompts are cut to
            this many characters, so K reviews fit the backbone's context.
        (backbone, backbone_dtype, embedding_dim, generation, seed, backbone_options as
        :class:`PromptingModule`)
    """

    inputs = frozenset({"context"})

    def __init__(self, method: str, backbone: str = "smollm2-135m-instruct", backbone_dtype: str = "auto",
                 embedding_dim: int = 384, generation: GenerationConfig = GenerationConfig(), seed: int = 0,
                 stage_generation: GenerationConfig = GenerationConfig(max_new_tokens=128, do_sample=False),
                 stage_batch_size: int = 8, stage_cache_dir: str | None = None, max_review_chars: int = 1000,
                 backbone_options: BackboneOptions = BackboneOptions()):
        super().__init__(method, backbone, backbone_dtype, embedding_dim, generation, seed, backbone_options)
        if stage_batch_size < 1 or max_review_chars < 1:
            raise ValueError(f"stage_batch_size and max_review_chars must be >= 1, got {stage_batch_size} and "
                             f"{max_review_chars}")
        self.stage_generation = as_generation_config(stage_generation)
        self.stage_batch_size, self.max_review_chars = stage_batch_size, max_review_chars
        if stage_cache_dir is None:
            from dep_lightning.assets import cache_root

            stage_cache_dir = str(cache_root() / "stages")
        self.stage_cache = StageCache(stage_cache_dir)
        self.stage_counts: dict[str, Counter] = {}
        self._builders: dict[PromptConfig, PromptBuilder] = {}

    def save_stage_hyperparameters(self) -> None:
        """save_hyperparameters of the subclass ``__init__``, both GenerationConfigs as dicts."""
        import inspect

        self.save_hyperparameters(ignore=["generation", "stage_generation", "backbone_options"],
                                 frame=inspect.currentframe().f_back)
        self.hparams["generation"] = asdict(self.generation)
        self.hparams["backbone_options"] = asdict(self.backbone_options)
        self.hparams["stage_generation"] = asdict(self.stage_generation)

    # -- stages ---------------------------------------------------------------------------
    @cached_property
    def backbone_fingerprint(self) -> str:
        """The backbone's name plus a hash of its config, dtype and a sample of its embedding rows."""
        weight = self.backbone.get_input_embeddings().weight
        step = max(1, weight.shape[0] // 256)
        digest = hashlib.sha256(self.backbone.config.to_json_string().encode())
        digest.update(str(weight.dtype).encode())
        digest.update(weight[::step].detach().float().cpu().numpy().tobytes())
        return f"{self.hparams.backbone}@{digest.hexdigest()[:16]}"

    def _decoding(self) -> dict[str, Any]:
        decoding = asdict(self.stage_generation)
        if self.stage_generation.do_sample:
            decoding["run_seed"] = self.hparams.seed  # sampling also depends on the run's seed
        return decoding

    def stage_prompt(self, messages: Messages) -> str:
        """The rendered stage prompt of one conversation (what the stage cache is keyed by)."""
        # Data text (reviews, earlier stage outputs) must not turn into chat control tokens.
        clean = self._builder(PromptConfig()).clean
        return self.tokenizer.apply_chat_template([{**m, "content": clean(m["content"])} for m in messages],
                                                  tokenize=False, add_generation_prompt=True)

    def stage_key(self, text: str) -> str:
        """The stage cache key of a rendered stage prompt under this backbone and decoding."""
        return self.stage_cache.key(text, self.backbone_fingerprint, self._decoding())

    def run_stage(self, stage: str, conversations: Sequence[Messages]) -> list[str]:
        """Generated text for each conversation (system + user messages), cached on disk."""
        if not conversations:
            return []
        texts = [self.stage_prompt(messages) for messages in conversations]
        decoding = self._decoding()
        keys = [self.stage_key(t) for t in texts]
        counts = self.stage_counts.setdefault(stage, Counter())
        outputs: dict[str, str] = {}
        todo: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key in outputs or key in todo:
                continue
            record = self.stage_cache.get(key)
            if record is None:
                todo[key] = text
            else:
                outputs[key] = record["output"]
                counts["cached"] += 1
        pending = list(todo.items())
        for start in range(0, len(pending), self.stage_batch_size):
            chunk = pending[start:start + self.stage_batch_size]
            ids = [self.tokenizer(text, add_special_tokens=False).input_ids for _, text in chunk]
            prompt = left_padded(ids, self.tokenizer.pad_token_id, self.device)
            generated = self.generate_outputs(prompt, key=chunk[0][0], generation=self.stage_generation)
            for (key, text), out in zip(chunk, generated):
                self.stage_cache.put(key, {"stage": stage, "prompt": text, "output": out.text, "tokens": out.tokens,
                                           "hit_limit": out.hit_limit, "backbone": self.backbone_fingerprint,
                                           "generation": decoding})
                outputs[key] = out.text
                counts["generated"] += 1
        return [outputs[k] for k in keys]

    def profiles(self, contexts: Sequence[SampleContext]) -> list[str]:
        """The ``[User Profile]`` text of each sample."""
        raise NotImplementedError

    # -- the final prompt -----------------------------------------------------------------
    def _builder(self, config: PromptConfig) -> PromptBuilder:
        if config not in self._builders:
            self._builders[config] = PromptBuilder(self.tokenizer, config)
        return self._builders[config]

    def encoded_prompts(self, contexts: Sequence[SampleContext], profiles: Sequence[str]) -> list[EncodedPrompt]:
        """Each sample's final prompt (the DataModule's prompt plus its profile) with its reference
        appended. Which reviews fit is decided blind to the reference (``blind_budget``), so the
        prompt is the one generation sees whatever the reference's length."""
        encoded = []
        for context, profile in zip(contexts, profiles):
            builder = self._builder(context.prompt)
            one = builder.encode(context.sample, context.retrieved, context.item, profile=profile, blind_budget=True)
            if one.slots:
                raise ValueError(f"{self.method} prompts the LLM with text only, but the prompt has soft-prompt "
                                 f"slots: set data.init_args.prompt.embeddings: none")
            encoded.append(one)
        return encoded

    def final_prompts(self, contexts: Sequence[SampleContext], profiles: Sequence[str]):
        """The final prompts, left-padded for generation; and the review texts each shows."""
        encoded = self.encoded_prompts(contexts, profiles)
        rows = [e.input_ids[:e.prompt_length] for e in encoded]  # the budget reserves max_target_tokens
        shown = [[c.retrieved[i].text for i in e.kept] for c, e in zip(contexts, encoded)]
        return left_padded(rows, self.tokenizer.pad_token_id, self.device), shown

    # -- steps ----------------------------------------------------------------------------
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        contexts = self._contexts(batch)
        profiles = self.profiles(contexts)
        prompt, shown = self.final_prompts(contexts, profiles)
        rows = prediction_rows(batch, self.generate_outputs(prompt, key=batch.sample_id[0]))
        for row, profile, history in zip(rows, profiles, shown):
            row["history"] = history  # the reviews the final prompt shows (the profile may displace old ones)
            row["profile"] = profile
        return rows

    def _contexts(self, batch: Batch) -> list[SampleContext]:
        if batch.context is None:
            raise ValueError(f"{self.method} reads each sample's reviews and peers: set data.init_args.context: "
                             f"true (configs/baselines/{self.method}.yaml does)")
        return batch.context

    @torch.no_grad()
    def score_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL and target-token count of each reference under the final prompt, with the
        profile written from the batch's history (under ``swap`` another user's, so the profile
        moves with the reviews; under ``none`` the profile of no reviews).

        The stages run as for generation and share its cache: a profile depends only on its
        stage prompt, so a swapped sample reuses its donor's profile. Rows are right-padded
        and scored in one forward pass (no shared prefix: the system prompt differs from the
        DataModule's once a profile is added).
        """
        contexts = self._contexts(batch)
        encoded = self.encoded_prompts(contexts, self.profiles(contexts))
        ids, mask, _ = pad_rows([e.input_ids for e in encoded], self.tokenizer.pad_token_id, left=False)
        labels, _, _ = pad_rows([e.labels for e in encoded], IGNORE_INDEX, left=False)
        # The final inputs are known only now: batches scored before (an interrupted run of
        # these weights, scoring.ScoreCache) are looked up by them.
        key = None
        if self.scored_inputs is not None:
            digest = hashlib.sha256(b"staged")
            for tensor in (ids, mask, labels):
                update_digest(digest, tensor)
            key = digest.hexdigest()
            if key in self.scored_inputs:
                return self.scored_inputs[key]
        ids, mask, labels = ids.to(self.device), mask.to(self.device), labels.to(self.device)
        scores = self.lm_nll(self.backbone.get_input_embeddings()(ids), mask, labels)
        if key is not None:
            self.scored_inputs[key] = scores
        return scores

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Nothing to validate (Lightning's sanity check still calls this): the method is untrained."""
        return None

    def generate(self, prompt: PromptBatch, key: str = "", generation: GenerationConfig | None = None) -> list[str]:
        # Generation-based validation hands over the DataModule's prompt alone, without the
        # samples' contexts, so it cannot run the stages: evaluate with `test` instead.
        raise RuntimeError(f"method {self.method!r} writes a profile first and is evaluated by `dep-lightning test` "
                           f"(or fit with trainer.max_epochs: 0 and test_after_fit)")

    def on_test_epoch_start(self) -> None:
        self.stage_counts = {}

    def on_predict_epoch_start(self) -> None:
        self.stage_counts = {}

    def on_test_epoch_end(self) -> None:
        self._report_stages()

    def on_predict_epoch_end(self) -> None:
        self._report_stages()

    def _report_stages(self) -> None:
        """Print the stage counts and write them to ``<run>/analysis/stages.json`` (summed over processes)."""
        from dep_lightning.atomic import write_json
        from dep_lightning.callbacks.predictions import run_dir

        trainer = self.trainer
        report = {}
        for stage in self.stage_names:
            counts = self.stage_counts.get(stage, Counter())
            local = torch.tensor([counts["cached"], counts["generated"]], dtype=torch.long, device=self.device)
            total = trainer.strategy.reduce(local, reduce_op="sum") if trainer.world_size > 1 else local
            report[stage] = {"cached": int(total[0]), "generated": int(total[1])}
        if trainer.is_global_zero:
            # Scoring (dep-lightning score) reports its own counts beside the generation's.
            name = "stages.json" if self.scoring_conditions is None else "stages_score.json"
            write_json(Path(run_dir(trainer)) / "analysis" / name,
                       {"method": self.method, "stages": report, "cache": str(self.stage_cache.root)})
            print("stages: " + ", ".join(f"{s} {c['generated']} generated, {c['cached']} from cache"
                                         for s, c in report.items()))

    stage_names: tuple[str, ...] = ()
