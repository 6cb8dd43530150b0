"""Limits that must be known before OpenCV is imported (it reads its pixel limit once, when it loads)."""

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: a 10000×10000 scan is fine, a decompression bomb is refused
OPENCV_PIXEL_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
