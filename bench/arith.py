"""The benchmark's arithmetic, kept apart so that it is unit-tested."""

from __future__ import annotations


def rate(count: int, seconds: float) -> float:
    """Items per second; 0 for an empty or instant run rather than a division error."""
    return count / seconds if seconds > 0 and count > 0 else 0.0


def pipeline_limit(decode_rate: float, model_rate: float) -> float:
    """The best a pipeline can do when both stages share the same cores: 1 / (1/decode + 1/model)."""
    if decode_rate <= 0 or model_rate <= 0:
        return 0.0
    return 1.0 / (1.0 / decode_rate + 1.0 / model_rate)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def growth(small: float, large: float) -> float:
    """Relative growth from small to large (0.2 = 20% more)."""
    return large / small - 1.0 if small > 0 else 0.0


def ring_allreduce_bytes(gradient_bytes: int, processes: int) -> float:
    """Bytes each process sends (and receives) to all-reduce `gradient_bytes` over `processes` with a ring, as
    NCCL and gloo do for large tensors: 2(N-1)/N of the gradient, whatever N (0 alone)."""
    return 2 * (processes - 1) / processes * gradient_bytes if processes > 1 else 0.0


def transfer_seconds(count_bytes: float, gbit_per_s: float) -> float:
    """Time to move `count_bytes` at a link speed of `gbit_per_s`, ignoring latency and overlap."""
    return count_bytes * 8 / (gbit_per_s * 1e9)
