"""Two CPU processes (gloo) compute TextMetrics over a DistributedSampler's shards.

Run by ``test_text_metrics.py`` as a subprocess (``ddp_spawn`` inside pytest is flaky):

    python tests/metrics/ddp_metrics_script.py PAIRS.json OUT_DIR

PAIRS.json: ``{"ids": [...], "preds": [...], "refs": [...]}``. Each rank takes its shard
from ``DistributedSampler(shuffle=False)``; with an odd number of pairs the sampler pads
the last shard by repeating the first sample, so one sample is seen twice. Each rank
updates in small batches, computes (which syncs), and writes ``OUT_DIR/rank<r>.json``
with the synced values, once with sample ids and once (ROUGE-1 only) without.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

WORLD_SIZE = 2
BATCH = 4


def run(rank: int, pairs_path: str, out_dir: str, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        from dep_lightning.metrics import Rouge1, TextMetrics

        data = json.loads(Path(pairs_path).read_text())
        shard = list(DistributedSampler(range(len(data["ids"])), num_replicas=WORLD_SIZE, rank=rank, shuffle=False))
        metrics = TextMetrics(bertscore=True)
        rouge_without_ids = Rouge1()
        for start in range(0, len(shard), BATCH):
            batch = shard[start : start + BATCH]
            preds = [data["preds"][i] for i in batch]
            refs = [data["refs"][i] for i in batch]
            metrics.update(preds, refs, ids=[data["ids"][i] for i in batch])
            rouge_without_ids.update(preds, refs)
        values = {name: float(value) for name, value in metrics.compute().items()}
        values["rouge1_without_ids"] = float(rouge_without_ids.compute())
        # compute() restores the local state afterwards: the local records are this shard only
        values["local_records"] = len(metrics["rouge1"].records)
        values["shard"] = shard
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(values))
        # Neither rank tears the group down while the other may still be finishing the last
        # collective (a peer closing its gloo pairs mid-receive aborts the process).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main() -> None:
    pairs_path, out_dir = sys.argv[1], sys.argv[2]
    init_file = os.path.join(out_dir, "dist_init")
    mp.spawn(run, args=(pairs_path, out_dir, init_file), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main()
