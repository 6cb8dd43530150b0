"""digits-infer: classify folders of digit scans from the exported artifacts. Never imports torch itself."""

import os as _os

from infer.limits import DEFAULT_MAX_PIXELS as _DEFAULT_MAX_PIXELS
from infer.limits import OPENCV_PIXEL_LIMIT_ENV as _OPENCV_PIXEL_LIMIT_ENV

# OpenCV reads both once, when it loads, so they are set before any module of this package imports it: its
# decoders refuse images over this many pixels before allocating them (digits-infer sets it from --max-pixels),
# and its own warnings stay out of our stderr (each failure is reported once, in the CSV).
_os.environ.setdefault(_OPENCV_PIXEL_LIMIT_ENV, str(_DEFAULT_MAX_PIXELS))
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
