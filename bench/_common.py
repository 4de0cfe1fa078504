"""What the training-speed benches share: the real Musical Instruments prompts, timing, tables.

The prompts are built by the DataModule exactly as in training (k history reviews with
text and his/diff slots, guidance, 2,048-token budget). The slot vectors come from the
tiny sentence model: the speed of a step does not depend on their values, and the real
embedder would first spend ~10 minutes embedding the corpus on 2 cores (the adapters'
cost, a few small matmuls, is the same to within microseconds).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "reviews_Musical_Instruments_5.json.gz"


def musical_instruments(k: int = 4, batch_size: int = 1, eval_batch_size: int = 8, data: Path = DATA,
                        embedder: str = "tiny", limit_test: int | None = 64):
    """A set-up DEPDataModule over the 5-core Musical Instruments reviews (configs/prepare/musical_instruments.yaml)."""
    from dep_lightning.data.datamodule import DEPDataModule
    from dep_lightning.data.sources import FiveCoreSource
    from dep_lightning.embeddings.embedder import SentenceEmbedder

    if not Path(data).is_file():
        raise SystemExit(f"review data not found: {data} (pass --data)")
    dm = DEPDataModule(source=FiveCoreSource(str(data)), embedder=SentenceEmbedder(model=embedder), k=k,
                       tokenizer="smollm2-135m-instruct", batch_size=batch_size, eval_batch_size=eval_batch_size,
                       limit_val=8, limit_test=limit_test)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def length_stats(examples) -> str:
    lengths = np.array([len(e["input_ids"]) for e in examples])
    return (f"{len(lengths)} samples, tokens per sample mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
            f"p90 {np.percentile(lengths, 90):.0f}, max {lengths.max()}")


def load_smollm2(embedding_dim: int, seed: int = 0, dtype: str = "float32"):
    from dep_lightning.models.dep_module import DEPModule

    return DEPModule(backbone="smollm2-135m-instruct", backbone_dtype=dtype, embedding_dim=embedding_dim, seed=seed)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_note() -> str:
    import os

    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {os.cpu_count()} CPUs"
