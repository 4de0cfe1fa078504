"""A tiny randomly initialised sentence-transformers model for fast tests and smoke runs.

Two BERT layers of width 32 with the real MiniLM tokenizer: it runs the whole embedding
path (cache, predict loop, pooling, normalisation) in milliseconds. Its vectors carry no
meaning; select it with ``SentenceEmbedder(model="tiny")``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from dep_lightning import assets
from dep_lightning.atomic import atomic_folder

TINY = "tiny"


def tiny_sentence_model(dim: int = 32, seed: int = 0, root: Path | None = None) -> Path:
    """Folder of the tiny model (built once, atomically, under the cache root)."""
    folder = (root or assets.cache_root() / "embedders") / f"tiny-bert-{dim}-seed{seed}"
    if (folder / "modules.json").is_file():
        return folder
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder.parent.mkdir(parents=True, exist_ok=True)
    # The BERT folder is only the input of the sentence-transformers save: kept apart from
    # the published folder. Losing a race to a builder that finished is fine (its modules.json).
    with (atomic_folder(folder, done="modules.json") as target,
          tempfile.TemporaryDirectory(dir=folder.parent, prefix=".tmp-tiny-") as scratch):
        tokenizer = AutoTokenizer.from_pretrained(str(assets.minilm_path()), local_files_only=True)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=dim, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=2 * dim, max_position_embeddings=512)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            bert = BertModel(config)
        bert.save_pretrained(Path(scratch) / "bert")
        tokenizer.save_pretrained(Path(scratch) / "bert")
        transformer = models.Transformer(str(Path(scratch) / "bert"), max_seq_length=256)
        model = SentenceTransformer(modules=[transformer, models.Pooling(dim, pooling_mode="cls")], device="cpu")
        model.save(str(target))
    return folder
