"""Defaults the CLI needs before anything heavy is imported (OpenCV reads its pixel limit once, when it loads)."""

import os

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: a 10000×10000 scan is fine, a decompression bomb is refused
OPENCV_PIXEL_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"


def default_workers() -> int:
    """Half the cores preprocess, the other half run the model (measured best on 2 cores: README, Benchmarks)."""
    return max(1, (os.cpu_count() or 1) // 2)
