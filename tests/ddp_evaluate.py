"""Run under torchrun by tests/test_distributed.py: every rank evaluates one checkpoint on the first N MNIST test
images through trainer.train.evaluate() over all ranks, and writes what it got to OUT/rank-R.json.

    torchrun --standalone --nproc-per-node 2 -m tests.ddp_evaluate CHECKPOINT N BATCH OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from trainer.checkpoint import load_checkpoint
from trainer.data import load_split, resolve_data_dir, to_float
from trainer.distributed import World, process_group
from trainer.train import evaluate


def main(checkpoint: str, count: str, batch_size: str, out: str) -> None:
    world = World.from_env()
    model, _ = load_checkpoint(Path(checkpoint))
    split = load_split(resolve_data_dir(), train=False, download=False).subset(int(count))
    with process_group(world, torch.device("cpu")) as backend:
        result = evaluate(model, to_float(split.images), split.labels, int(batch_size), world=world)
    mine = world.share(len(split))
    document = {"rank": world.rank, "world_size": world.size, "backend": backend, "accuracy": result.accuracy,
                "loss": result.loss, "predictions": result.predictions.tolist(), "share": mine.stop - mine.start}
    Path(out, f"rank-{world.rank}.json").write_text(json.dumps(document))


if __name__ == "__main__":
    main(*sys.argv[1:])
