"""digits-infer: classify folders of digit scans from the exported artifacts. Never imports torch itself."""

import os as _os

from infer.options import MAX_PIXELS_LIMIT as _MAX_PIXELS_LIMIT
from infer.options import OPENCV_PIXEL_LIMIT_ENV as _OPENCV_PIXEL_LIMIT_ENV

# OpenCV reads both once, when it loads, so they are set before any module of this package imports it. The
# pixel limit each run asks for is enforced from the image's header before decoding (infer.imageinfo), so
# OpenCV's own cap only has to allow the largest limit a run may ask for; and OpenCV's warnings stay out of
# our stderr (each failure is reported once, in the CSV).
_os.environ.setdefault(_OPENCV_PIXEL_LIMIT_ENV, str(_MAX_PIXELS_LIMIT))
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
