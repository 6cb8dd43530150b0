"""torch.distributed plumbing for fit(), so the training loop reads the same with one process or many.

A run under torchrun (any form: `--standalone --nproc-per-node N`, or `--nnodes` with a rendezvous) finds
WORLD_SIZE, RANK and LOCAL_RANK in its environment and joins a process group: NCCL on CUDA, gloo on the CPU.
Without them it is one process and every helper here does nothing, so single-process runs keep their numbers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

PAUSE_ENV = "DIGITS_TRAIN_PAUSE"  # test hook, "RANK:STEP:FILE": see pause_hook()


class PeerLost(Exception):
    """A collective failed because another process of the job died or vanished: one line, no traceback."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank `rank` of `size` processes, `local_rank` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in the environment; one process when it describes none."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints progress and writes the outputs."""
        return self.rank == 0

    def device(self, kind: str) -> torch.device:
        """'cpu' or 'cuda' (from infer.devices.torch_device) → this process's device: its own GPU on the node."""
        if kind == "cuda" and self.size > 1:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device(kind)

    def share(self, count: int) -> slice:
        """This rank's contiguous share of `count` items: shares differ by at most one and cover every item
        exactly once (no padding, no duplicates), so sums over ranks are exact."""
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's part of one global batch of the epoch's permutation (the same on every rank)."""
        return batch[self.share(len(batch))]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[str | None]:
    """Join the job's process group for the duration (yields the backend; None when alone) and leave it even
    when training fails, so a failing rank exits at once and torchrun ends the others."""
    if world.size == 1:
        yield None
        return
    backend = backend_for(device)
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield backend
    except RuntimeError as exc:
        if not _is_communication_failure(exc):
            raise
        raise PeerLost(f"rank {world.rank} of {world.size} lost the other processes ({_first_sentence(exc)}); "
                       "see the failing rank's own output") from None
    finally:
        dist.destroy_process_group()


def _is_communication_failure(exc: RuntimeError) -> bool:
    """torch.distributed's own errors (NCCL, store, timeouts) or gloo's transport errors, which arrive as plain
    RuntimeErrors naming gloo's source file; any other RuntimeError is a bug and keeps its traceback."""
    return isinstance(exc, dist.DistError) or "gloo/transport" in str(exc)


def _first_sentence(exc: Exception) -> str:
    text = re.sub(r"\[[^\]\s]*\.(cc|cpp|h):\d+\]", "", " ".join(str(exc).split())).strip()
    return text.split(". ")[0].rstrip(".") or type(exc).__name__


def leave_together(world: World, timeout_s: float = 30.0) -> None:
    """Wait until every rank has reached this point, for an error that each rank meets before training (no CUDA
    for --device cuda): torchrun ends the whole job as soon as one rank exits, which would cut the others off
    before they say why. Call it after printing. A rank that never comes (the error was not everywhere) only
    delays the exit by `timeout_s`."""
    if world.size == 1 or dist.is_initialized():
        return
    try:
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        dist.barrier()
    except (RuntimeError, ValueError):  # the others are gone or never came: we are leaving anyway
        pass
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def generators(seed: int, world: World) -> tuple[torch.Generator, torch.Generator]:
    """(order, augmentation) generators. The permutation uses the same seed on every rank, so the ranks agree
    on each epoch's order; augmentation draws from a generator of its own per rank, so ranks do not repeat each
    other's warps. One process keeps the single shared generator it always had (same seed, same numbers)."""
    order = torch.Generator().manual_seed(seed)
    if world.size == 1:
        return order, order
    return order, torch.Generator().manual_seed(seed * 1_000_003 + world.rank + 1)


def reseed_per_rank(seed: int, world: World) -> None:
    """Reseed the global RNG, which dropout draws from, per rank once the model is built: every rank seeded the
    same to build the same weights, and would otherwise drop the same units for different images. One process
    keeps its seed's stream, so its numbers do not change. Counted down from the seed's block where `generators`
    counts up, so no rank's dropout repeats another rank's augmentation."""
    if world.size > 1:
        torch.manual_seed(seed * 1_000_003 - world.rank - 1)


def shard_loss(log_probs: torch.Tensor, labels: torch.Tensor, global_count: int, world: World) -> torch.Tensor:
    """This rank's term of the global batch's mean NLL. DDP averages gradients over ranks, so each rank's mean
    is weighted by world × its images / the global batch: the step is the global batch's mean even when the
    batch does not divide evenly, and exactly the plain mean (weight 1.0) in one process. A final batch
    smaller than the world leaves some ranks no images; they contribute zero but still join the all-reduce."""
    if len(labels) == 0:
        return log_probs.sum()
    return F.nll_loss(log_probs, labels) * (world.size * len(labels) / global_count)


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum `tensor` over ranks in place (nothing to do alone); every rank gets the total."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def pause_hook(world: World) -> Callable[[], None] | None:
    """A test hook: with DIGITS_TRAIN_PAUSE=RANK:STEP:FILE, rank RANK writes its pid to FILE when it finishes
    training step STEP (counted from 1 over the whole run; the hook is called once per step) and waits there,
    so a test can kill it or interrupt the job at a point it controls instead of racing a timer. None (no cost)
    when unset or for the other ranks."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return None
    rank, step, path = spec.split(":", 2)
    if int(rank) != world.rank:
        return None
    steps = itertools.count(1)

    def pause() -> None:
        if next(steps) != int(step):
            return
        ready = Path(path)
        partial = ready.with_name(ready.name + ".tmp")
        partial.write_text(str(os.getpid()))
        os.replace(partial, ready)  # the test sees the whole pid or nothing
        while True:
            time.sleep(0.1)

    return pause
