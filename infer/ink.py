"""Finding the digit's ink in a grey image: which side is ink, where the light is uneven, what is frame, rule,
speck or dust, and whether exactly one digit is there.

Every decision comes from measurements of the image itself (extents, stroke widths, shares of the border),
not from fixed pixel sizes, so it holds from a 28-px thumbnail to a 1000-px page:
- Light: the image less a median far wider than any stroke, kept only when that separates ink from paper
  better (a bold digit that fills its frame is left alone). Photographed pages whose "ink" came out as paper
  (a sheet on a desk, a shadow across the page) are read again against paper found by filling every dark
  region that does not reach the picture's border.
- Frames: long, thin, straight runs that make up most of their component (box, comb cell, underline, ruled
  line), and bands along an image edge (scanner margins), are not ink.
- Polarity: paper is what the border of the picture shows once frames are set aside; a border that is half
  ink (a bold digit cropped to its ink) means dark ink on light paper, the common case.
- Digit: the largest stroke with its nearby parts. Specks and dust are compact, not strokes; several
  digit-sized groups side by side are several digits.
Analysis runs on a copy of at most ANALYSIS_SIDE px (strokes kept by area coverage); the digit's ink is then
cut from the full working image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from infer.decode import PreprocessError

ANALYSIS_SIDE = 256
MIN_CONTRAST = 12  # grey levels between the darkest and brightest smoothed pixel below which nothing is there
LIGHT_GAIN = 0.05  # levelling the light must raise Otsu's separability by this much to be used
PAPER_BREADTH = 5.0  # "ink" this many pen widths broad is as wide as a digit is tall: paper or shade, not a stroke
DIGIT_SLIMNESS = 0.3  # a digit is over 1/0.3 of its pen widths tall; broader is a blob (the hole of a blurred 8)
LINE_SPAN = 0.5  # a frame line runs over at least this share of the image's width or height
LINE_DEPTH = 0.1  # ... and is thinner than this share of the other side
LINE_SHARE = 0.6  # a component mostly of such line pixels is frame if a line runs over FRAME_SPAN of the picture
FRAME_SPAN = 0.8
FRAME_HOLE = 0.5  # a closed frame's hole spans at least this share of the picture both ways ...
HELD_DIGIT = 0.3  # ... and holds a stroke at least this share of the hole's height: box, not a "0"
PURE_LINES = 0.9  # a component (almost) only of line pixels is frame: a box, a comb cell, an underline, a rule
EDGE_SPAN, EDGE_DEPTH = 0.6, 0.2  # a band touching an edge along ≥60% of it, ≤20% deep: a scanner margin
BORDER_DECISIVE = 0.65  # share of the border one class needs to be called paper
MIN_STROKE_LENGTH = 2.6  # area / width²: a stroke is longer than wide (a disc is 1.8, a square 2.3)
DIGIT_SIZE = 0.3  # ... or spans this share of the image's longer side: a blurred digit is still a digit
DASH_ASPECT = 3.0  # ink several times wider than tall is a dash or a rule, not a digit
MIN_EXTENT = 5  # pixels (analysis copy): anything smaller is dust
MIN_DIGIT = 0.03  # ... and so is anything under 3% of the image's longer side (a digit on a page is larger)
LARGE_PART = 0.25  # strokes at least this share of the largest belong to the digit wherever they are
PART_SHARE = 0.05  # smaller strokes belong to it only within BROKEN_GAP stroke widths of it; smaller is dust
BROKEN_GAP = 1.5
DIGIT_HEIGHT_SHARE = 0.7  # another digit is nearly as tall as the tallest component ...
DIGIT_AREA_SHARE = 0.2  # ... and has a fair share of the largest one's ink (a "1" beside an "8" has about 30%)
SEPARATION = 0.15  # groups further apart than this share of the height are separate digits


@dataclass(frozen=True)
class Ink:
    """The digit cut from the working image: coverage (0 paper … 255 stroke core) and its binary mask."""

    coverage: np.ndarray
    mask: np.ndarray


def no_ink() -> PreprocessError:
    return PreprocessError("no ink found")


# --- grey -------------------------------------------------------------------------------------------------

def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 with 1–4 channels → one grey channel in which ink and paper differ as much as they can."""
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 1:
        return image[:, :, 0]
    if channels == 2:
        return flatten_alpha(np.ascontiguousarray(image[:, :, 0]), np.ascontiguousarray(image[:, :, 1]))
    grey = colour_to_grey(np.ascontiguousarray(image[:, :, :3]))
    return grey if channels == 3 else flatten_alpha(grey, np.ascontiguousarray(image[:, :, 3]))


def colour_to_grey(bgr: np.ndarray) -> np.ndarray:
    """Luma for grey-looking images; otherwise the projection on the colours' principal axis, so red ink on
    green paper of the same brightness still separates. Oriented like luma (darker ink stays darker)."""
    luma = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    sample = cv2.resize(bgr, (64, 64), interpolation=cv2.INTER_AREA)  # averages JPEG's chroma noise away
    blue, green, red = cv2.split(sample)
    spread = max(cv2.minMaxLoc(cv2.absdiff(blue, green))[1], cv2.minMaxLoc(cv2.absdiff(green, red))[1])
    if spread < 24:
        return luma  # the channels move together: a grey image stored as colour
    _, vectors = cv2.PCACompute(sample.reshape(-1, 3).astype(np.float32), mean=None, maxComponents=1)
    axis = vectors[0] if np.dot(vectors[0], [0.114, 0.587, 0.299]) >= 0 else -vectors[0]  # BGR luma weights
    projected = cv2.transform(bgr.astype(np.float32), axis.reshape(1, 3))
    return cv2.normalize(projected, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)


def flatten_alpha(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite over white when the visible strokes are dark, over black when they are light."""
    if alpha.min() == 255:
        return grey
    visible = alpha > 127
    strokes_dark = not visible.any() or grey[visible].mean() < 128
    paper = np.full_like(grey, 255 if strokes_dark else 0)
    weight = alpha.astype(np.float32) / 255.0
    return cv2.convertScaleAbs(grey * weight + paper * (1.0 - weight))


# --- light and threshold ----------------------------------------------------------------------------------

def smoothed(grey: np.ndarray) -> np.ndarray:
    """A light blur for thresholding: texture, noise and JPEG blocks averaged away, strokes kept."""
    side = min(grey.shape)
    if side <= 32:
        return grey
    k = max(3, (side // 40) | 1)
    return cv2.GaussianBlur(grey, (k, k), 0)


def separability(image: np.ndarray) -> tuple[float, float]:
    """Otsu's threshold and how well it splits the image: between-class over total variance (0..1)."""
    threshold, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    histogram = cv2.calcHist([image], [0], None, [256], [0, 256]).ravel()
    levels = np.arange(256, dtype=np.float64)
    total = histogram.sum()
    mean = (histogram * levels).sum() / total
    variance = (histogram * (levels - mean) ** 2).sum() / total
    upper = levels > threshold
    share = histogram[upper].sum() / total
    if variance == 0 or share in (0.0, 1.0):
        return threshold, 0.0
    high = (histogram[upper] * levels[upper]).sum() / histogram[upper].sum()
    low = (histogram[~upper] * levels[~upper]).sum() / histogram[~upper].sum()
    return threshold, share * (1 - share) * (high - low) ** 2 / variance


def light_field(smooth: np.ndarray) -> tuple[np.ndarray | None, float]:
    """The slowly varying light (a median far wider than strokes, on a 64-px copy), or None when taking it
    away does not separate ink from paper clearly better (even light; a bold digit that fills its frame);
    with Otsu's threshold of the image that is kept."""
    threshold, plain = separability(smooth)
    small = unevenly_lit_copy(smooth)
    if small is None:
        return None, threshold
    k = max(5, int(0.4 * min(small.shape)) | 1)
    light = cv2.resize(cv2.medianBlur(small, k), smooth.shape[::-1], interpolation=cv2.INTER_LINEAR)
    levelled_threshold, levelled = separability(level(smooth, light))
    return (light, levelled_threshold) if levelled > plain + LIGHT_GAIN else (None, threshold)


def unevenly_lit_copy(smooth: np.ndarray) -> np.ndarray | None:
    """The image at 64 px on its longer side, where the light is estimated; None when it is evenly lit (or
    too small to tell)."""
    height, width = smooth.shape
    if min(height, width) < 24:
        return None
    factor = max(height, width) / 64
    small = cv2.resize(smooth, (max(8, round(width / factor)), max(8, round(height / factor))),
                       interpolation=cv2.INTER_AREA)
    return None if evenly_lit(small) else small


def filled_holes(image: np.ndarray) -> np.ndarray:
    """Grey-scale hole filling: each pixel raised to the lowest level of a path from it to the border that
    it must climb over (reconstruction by erosion from the border). Iterated from the same fill of a
    block-max copy at most 32 px wide, which lies above the answer and near it, so few full-size passes remain."""
    height, width = image.shape
    block = -(-max(height, width) // 32)
    if block > 1:
        rows, cols = -(-height // block), -(-width // block)
        padded = cv2.copyMakeBorder(image, 0, rows * block - height, 0, cols * block - width, cv2.BORDER_REPLICATE)
        pooled = padded.reshape(rows, block, cols, block).max(axis=(1, 3))
        filled = np.repeat(np.repeat(filled_holes(pooled), block, 0), block, 1)[:height, :width]
        filled = cv2.max(filled, image)
    else:
        filled = np.full_like(image, 255)
    filled[0, :], filled[-1, :], filled[:, 0], filled[:, -1] = image[0, :], image[-1, :], image[:, 0], image[:, -1]
    neighbours = np.ones((3, 3), np.uint8)  # 8-connected: a ring broken at a diagonal is open
    for _ in range(image.size):  # converges within the longest path to the border; bounded all the same
        lower = cv2.max(cv2.erode(filled, neighbours), image)
        if np.array_equal(lower, filled):
            break
        filled = lower
    return filled


def evenly_lit(small: np.ndarray) -> bool:
    """The paper is even when, over a 4×4 grid, the brightest (or, for light ink, the darkest) level of every
    cell is about the same: paper shows in every cell, and its level does not move."""
    height, width = small.shape
    cells = small[: height - height % 4, : width - width % 4].reshape(4, height // 4, 4, width // 4)
    brightest, darkest = cells.max(axis=(1, 3)), cells.min(axis=(1, 3))
    contrast = int(small.max()) - int(small.min())
    return min(np.ptp(brightest), np.ptp(darkest)) <= 0.1 * contrast


def level(image: np.ndarray, light: np.ndarray | None, shade: bool = False) -> np.ndarray:
    """The image less the light field, around mid-grey; with `shade`, divided by it (paper at 128): a shadow
    dims ink and paper alike, so ink keeps its depth in the shade."""
    if light is None:
        return image
    return cv2.divide(image, light, scale=128.0) if shade else cv2.addWeighted(image, 1.0, light, -1.0, 128.0)


def analysis_copy(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """The grey image reduced by a whole factor (area averaging: its fast path) to at most ANALYSIS_SIDE px on
    the longer side, and the scale."""
    height, width = grey.shape
    factor = -(-max(height, width) // ANALYSIS_SIDE)
    if factor == 1:
        return grey, 1.0
    size = (max(1, width // factor), max(1, height // factor))
    return cv2.resize(grey[: size[1] * factor, : size[0] * factor], size, interpolation=cv2.INTER_AREA), 1 / factor


# --- frames -----------------------------------------------------------------------------------------------

def line_pixels(mask: np.ndarray, framed_edge: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of long, thin, straight runs: (horizontal, vertical). Long and deep runs are bars, not lines.
    With `framed_edge` (a frame drawn along the image's very edge) the outside counts as paper, so a line
    along the edge stays a line rather than a bar that runs on beyond the image."""
    outside = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0} if framed_edge else {}
    height, width = mask.shape
    found = []
    for length, across, horizontal in ((width, height, True), (height, width, False)):
        if length < 8:  # too short for a line (and OpenCV's border rule would keep every pixel)
            found.append(np.zeros_like(mask))
            continue
        run = int(LINE_SPAN * length)
        deep = max(3, int(LINE_DEPTH * across) + 1)  # lines are thinner than LINE_DEPTH of the other side
        long_runs = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((1, run) if horizontal else (run, 1), np.uint8))
        bars = cv2.morphologyEx(long_runs, cv2.MORPH_OPEN, np.ones((deep, 1) if horizontal else (1, deep), np.uint8),
                                **outside)
        found.append(cv2.subtract(long_runs, bars))
    return found[0], found[1]


@dataclass(frozen=True)
class Cleaned:
    mask: np.ndarray  # without frames
    verticals: np.ndarray | None = None  # straight vertical lines taken out whole: a "1" if nothing else is there
    components: tuple | None = None  # connectedComponentsWithStats of `mask`, when already known


def longest_line(lines: np.ndarray, labels: np.ndarray, count: int, extent: int) -> np.ndarray:
    """Per component of `labels`, the longest of its line segments (width or height, by `extent`)."""
    segments, segment_labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    longest = np.zeros(count, np.int64)
    if segments > 1:
        on = segment_labels > 0
        np.maximum.at(longest, labels[on], stats[segment_labels[on], extent])
    return longest


def crossing_rules(labels: np.ndarray, lines: np.ndarray, lines_across: np.ndarray, horizontal: bool,
                   skip: np.ndarray) -> tuple[np.ndarray, int]:
    """Pixels of ruled lines that run through a digit: a straight line across FRAME_SPAN of the picture that
    runs on beyond the rest of its component on both sides (notebook rules, a margin line); and the rules'
    thickness. A digit's own bar (a 7's, a 4's, a 5's) ends where the digit does on at least one side."""
    height, width = labels.shape
    span = width if horizontal else height
    count, segment_labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    found, thickness = np.zeros_like(lines), 0
    start, extent = (cv2.CC_STAT_LEFT, cv2.CC_STAT_WIDTH) if horizontal else (cv2.CC_STAT_TOP, cv2.CC_STAT_HEIGHT)
    beyond = max(2, int(0.05 * span))
    long_segments = np.flatnonzero(stats[:, extent] >= FRAME_SPAN * span)
    long_segments = long_segments[long_segments > 0]
    if not len(long_segments):
        return found, thickness
    not_rules = ~np.isin(segment_labels, long_segments) & (lines_across == 0)  # several rules may cross one digit
    for segment in long_segments:
        on = segment_labels == segment
        owner = int(np.bincount(labels[on]).argmax())
        if owner == 0 or skip[owner]:
            continue
        rest = ((labels == owner) & not_rules).astype(np.uint8)
        x, y, w, h = cv2.boundingRect(rest)
        if w == 0:
            continue
        rest_start, rest_end = (x, x + w) if horizontal else (y, y + h)
        first, last = stats[segment, start], stats[segment, start] + stats[segment, extent]
        if first <= rest_start - beyond and last >= rest_end + beyond:
            found[on] = 255
            thickness = max(thickness, -(-stats[segment, cv2.CC_STAT_AREA] // stats[segment, extent]))
    return found, thickness


def rejoined(cleaned: np.ndarray, removed: np.ndarray, horizontal: bool, thickness: int) -> np.ndarray:
    """Strokes a removed rule cut, joined again where ink lies directly on both sides of it."""
    kernel = np.ones((thickness + 2, 1) if horizontal else (1, thickness + 2), np.uint8)
    closed = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, kernel)
    return cv2.bitwise_or(cleaned, cv2.bitwise_and(closed, removed))


def enclosing_frames(mask: np.ndarray, labels: np.ndarray, stats: np.ndarray, thin_held: bool) -> np.ndarray:
    """Per component: a closed frame of any angle or corner (a box scanned askew, rounded, drawn twice): thin,
    and its hole spans most of the picture and holds a digit-sized stroke of its own. A "0" or a loop holds
    no other stroke; a digit touching its box is one component with it and is left to the line rules.
    `thin_held`: while the class may still be paper, what the hole holds must be thin too; else the paper's
    thin margin around a bold digit cropped tight, holding the digit's loops, would look like a box."""
    found = np.zeros(len(stats), bool)
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return found
    height, width = mask.shape
    thin = max(3, int(LINE_DEPTH * min(height, width)) + 1)
    x, y, w, h = (stats[:, i] for i in range(4))
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0], strict=True):
        if parent < 0:
            continue  # an outer boundary; holes have a parent
        hx, hy, hw, hh = cv2.boundingRect(contour)
        if hw < FRAME_HOLE * width or hh < FRAME_HOLE * height:
            continue
        px, py = contours[parent][0, 0]
        owner = labels[py, px]
        if owner == 0 or found[owner]:
            continue
        held = (x >= hx) & (y >= hy) & (x + w <= hx + hw) & (y + h <= hy + hh) & (h >= HELD_DIGIT * hh)
        held[[0, owner]] = False
        if thin_held:
            for index in np.flatnonzero(held):
                held[index] = component_width(labels, stats, index) <= thin
        if held.any():
            found[owner] = component_width(labels, stats, owner) <= thin
    return found


def component_width(labels: np.ndarray, stats: np.ndarray, index: int) -> float:
    x, y, w, h = stats[index, :4]
    return stroke_width((labels[y : y + h, x : x + w] == index).astype(np.uint8))


def without_closed_frames(cleaned: Cleaned) -> Cleaned:
    """The ink class, once known, without the closed frames that hold bold digits too."""
    count, labels, stats, _ = cleaned.components or cv2.connectedComponentsWithStats(cleaned.mask, connectivity=8)
    if count <= 2:  # a frame needs something inside it
        return cleaned
    frames = enclosing_frames(cleaned.mask, labels, stats, thin_held=False)
    if not frames.any():
        return cleaned
    frames[0] = False
    mask = cleaned.mask.copy()
    mask[frames[labels]] = 0
    return Cleaned(mask, cleaned.verticals)


def remove_frames(mask: np.ndarray, framed_edge: bool = False) -> Cleaned:
    """The mask without frame lines, underlines, ruled lines and scanner edges (`framed_edge`: line_pixels)."""
    height, width = mask.shape
    components = cv2.connectedComponentsWithStats(mask, connectivity=8)
    count, labels, stats, _ = components
    x, y, w, h, area = (stats[:, i] for i in range(5))
    edge = (((y == 0) | (y + h == height)) & (w >= EDGE_SPAN * width) & (h <= EDGE_DEPTH * height)) | \
           (((x == 0) | (x + w == width)) & (h >= EDGE_SPAN * height) & (w <= EDGE_DEPTH * width))
    long_rows = cv2.reduce(mask, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).max() >= 255 * LINE_SPAN * width
    long_cols = cv2.reduce(mask, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).max() >= 255 * LINE_SPAN * height
    edge[0] = False
    if count <= 1:
        return Cleaned(mask, None, components)
    edge |= enclosing_frames(mask, labels, stats, thin_held=True)  # taken out whole, as edge bands are
    if not (edge.any() or long_rows or long_cols):
        return Cleaned(mask, None, components)  # no run is long enough to be a line: nothing to remove
    horizontal, vertical = line_pixels(mask, framed_edge)
    on_h = np.bincount(labels[horizontal > 0], minlength=count)
    on_v = np.bincount(labels[vertical > 0], minlength=count)
    share = (on_h + on_v) / np.maximum(area, 1)
    spans_frame = (longest_line(horizontal, labels, count, cv2.CC_STAT_WIDTH) >= FRAME_SPAN * width) | \
                  (longest_line(vertical, labels, count, cv2.CC_STAT_HEIGHT) >= FRAME_SPAN * height)
    # Frame: (almost) nothing but lines, or mostly lines that run across most of the picture (a digit touching
    # its box). A digit drawn with straight strokes (a 7's bar and stem) is mostly lines too, but they are its
    # own size, not the picture's.
    frame = ~edge & ((share >= PURE_LINES) | ((share >= LINE_SHARE) & spans_frame))
    if not edge.any() and not frame.any() and not spans_frame.any():
        return Cleaned(mask, None, components)
    # A component with horizontal lines (box, comb cell, underline, rule; a digit touching its box) loses its
    # line pixels; one that is only a vertical line goes whole, or comes back whole as a "1" when nothing else
    # is there (select_digit), since cutting a straight stroke's edges would leave two slivers.
    vertical_only = frame & (on_h <= 0.1 * area)
    cleaned = mask.copy()
    cleaned[(edge | vertical_only)[labels]] = 0
    cleaned[(frame & ~vertical_only)[labels] & ((horizontal | vertical) > 0)] = 0
    verticals = vertical_only[labels].astype(np.uint8) * 255 if vertical_only.any() else None
    for lines, across, is_horizontal in ((horizontal, vertical, True), (vertical, horizontal, False)):
        rules, thickness = crossing_rules(labels, lines, across, is_horizontal, edge | frame)
        if thickness:
            cleaned = rejoined(cv2.subtract(cleaned, rules), rules, is_horizontal, thickness)
    return Cleaned(cleaned, verticals)


# --- polarity ---------------------------------------------------------------------------------------------

def ring_share(mask: np.ndarray, depth: int) -> float:
    """Share of ink-class (255) pixels on the rectangle `depth` pixels inside the image's edge."""
    height, width = mask.shape
    if min(height, width) <= 2 * depth + 1:
        return 0.5
    inner = mask[depth : height - depth, depth : width - depth]
    ring = np.concatenate([inner[0], inner[-1], inner[1:-1, 0], inner[1:-1, -1]])
    return cv2.countNonZero(ring) / ring.size


def frame_depth(bright_mask: np.ndarray) -> int:
    """How deep a frame line can reach into the image: just past LINE_DEPTH of its longer side."""
    return int(LINE_DEPTH * max(bright_mask.shape)) + 1


def plainly_dark_ink(bright_mask: np.ndarray) -> bool | None:
    """True/False when the image's edge, a ring a little inside it and a ring past any frame line are all
    almost all bright (dark ink) or all dark (bright ink); None when they are not (a frame, perhaps drawn
    at the very edge; an edge band; a tight crop)."""
    inner = max(2, min(bright_mask.shape) // 20)
    outer, deeper = ring_share(bright_mask, 0), ring_share(bright_mask, inner)
    depth = frame_depth(bright_mask)
    deepest = ring_share(bright_mask, depth) if inner < depth and 2 * depth + 1 < min(bright_mask.shape) else deeper
    if outer >= 0.95 and deeper >= 0.9 and deepest >= 0.9:
        return True
    if outer <= 0.05 and deeper <= 0.1 and deepest <= 0.1:
        return False
    return None


def edge_frame_class(bright_mask: np.ndarray) -> bool | None:
    """Which class (True: bright) draws a frame on the image's very edge: the edge is mostly that class and,
    no deeper than a frame line reaches, a ring is all the other class (clean paper inside a box, comb cell
    or underline cropped to its lines) that does not give way to a clean ring of the edge's class again (a
    frame inside a margin). A bold digit cropped with a thin margin is not one: the rings inside the margin
    cross both ink and paper. None when no frame lies on the edge."""
    edge_bright = ring_share(bright_mask, 0) >= 0.5
    inside_found = False
    for depth in range(1, min(frame_depth(bright_mask), (min(bright_mask.shape) - 2) // 2) + 1):
        share = ring_share(bright_mask, depth)
        clean_bright, clean_dark = share >= 0.95, share <= 0.05
        if not inside_found:
            inside_found = clean_dark if edge_bright else clean_bright
        elif clean_bright if edge_bright else clean_dark:
            return None
    return edge_bright if inside_found else None


def ink_is_bright(bright: Cleaned, dark: Cleaned) -> bool:
    """Paper is what the border of the picture shows, frames set aside: the ring of the region that frames
    and edge bands leave. A border that is neither mostly bright nor mostly dark (ink cropped tight) means
    dark ink on light paper."""
    kept = cv2.bitwise_or(bright.mask, dark.mask)
    x, y, w, h = cv2.boundingRect(kept)
    if w == 0 or h == 0:
        return False
    ring = np.zeros(kept.shape, np.uint8)
    cv2.rectangle(ring, (x, y), (x + w - 1, y + h - 1), 255, 1)
    on_bright = cv2.countNonZero(cv2.bitwise_and(ring, bright.mask))
    on_dark = cv2.countNonZero(cv2.bitwise_and(ring, dark.mask))
    if on_bright + on_dark == 0:
        return False
    return on_dark >= BORDER_DECISIVE * (on_bright + on_dark)


# --- the digit --------------------------------------------------------------------------------------------

def mean_distance(mask: np.ndarray, edge_is_paper: bool = False) -> float:
    """Mean distance of the mask's pixels to the rest: a quarter of the stroke width for strokes. The image's
    edge counts as paper only when asked (a stroke's width); otherwise regions touching it are deep."""
    count = cv2.countNonZero(mask)
    if count == 0:
        return 0.0
    if edge_is_paper:
        mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return float(cv2.sumElems(cv2.distanceTransform(mask, cv2.DIST_L2, 3))[0]) / count


def stroke_width(mask: np.ndarray) -> float:
    """Width of the mask's strokes: a stroke w pixels wide has a mean distance to its edge of w/4 + 1/2."""
    return max(1.0, 4 * mean_distance(mask, edge_is_paper=True) - 2)


def is_stroke(labels: np.ndarray, index: int, stat: np.ndarray, shape: tuple[int, int]) -> bool:
    """Drawn with a pen: longer than wide (a speck, a dot or a blot is not), or as large as a digit."""
    x, y, w, h, area = stat
    if max(w, h) < max(MIN_EXTENT, MIN_DIGIT * max(shape)):
        return False
    if max(w, h) >= DIGIT_SIZE * max(shape):
        return True
    width = stroke_width((labels[y : y + h, x : x + w] == index).astype(np.uint8))
    return area >= MIN_STROKE_LENGTH * width * width


def side_by_side_groups(stats: np.ndarray, strokes: list[int]) -> list[list[int]]:
    """Stroke components merged where they overlap or nearly touch horizontally. Only components nearly as tall
    as the tallest, and not much smaller than the largest, can stand for a digit of their own, so a digit's
    detached parts (a hook, a bar, a broken stroke) never look like another digit."""
    tallest = max(stats[i, cv2.CC_STAT_HEIGHT] for i in strokes)
    largest = max(stats[i, cv2.CC_STAT_AREA] for i in strokes)
    tall = sorted((i for i in strokes if stats[i, cv2.CC_STAT_HEIGHT] >= DIGIT_HEIGHT_SHARE * tallest
                   and stats[i, cv2.CC_STAT_AREA] >= DIGIT_AREA_SHARE * largest),
                  key=lambda i: stats[i, cv2.CC_STAT_LEFT])
    groups: list[list[int]] = []
    group_right = 0
    for i in tall:
        left, right = stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH]
        if groups and left <= group_right + SEPARATION * tallest:
            groups[-1].append(i)
            group_right = max(group_right, right)
        else:
            groups.append([i])
            group_right = right
    return groups


def select_digit(cleaned: Cleaned) -> np.ndarray:
    """The digit's components as a mask of the analysis copy: the largest stroke; other strokes that are large
    or lie within a gap of it that a broken stroke leaves; and blobs inside their box. PreprocessError when
    there is no digit, or several side by side."""
    mask = cleaned.mask
    count, labels, stats, _ = cleaned.components or cv2.connectedComponentsWithStats(mask, connectivity=8)
    strokes = [i for i in range(1, count) if is_stroke(labels, i, stats[i], mask.shape)]
    if not strokes and cleaned.verticals is not None:
        return select_digit(Cleaned(cleaned.verticals))  # straight vertical strokes and nothing else: a "1"
    if not strokes:
        raise no_ink()  # a lone speck, a dot, dust, or only frame
    strokes.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    main = strokes[0]
    largest = stats[main, cv2.CC_STAT_AREA]
    gap = BROKEN_GAP * stroke_width(cv2.compare(labels, main, cv2.CMP_EQ))
    parts = [i for i in strokes if stats[i, cv2.CC_STAT_AREA] >= LARGE_PART * largest]
    x0, y0, x1, y1 = box_of(stats, parts)
    for i in strokes:  # small pieces, nearest first: each may bring the next within reach
        x, y, w, h, area = stats[i]
        if i in parts or area < PART_SHARE * largest:
            continue
        if x <= x1 + gap and x + w >= x0 - gap and y <= y1 + gap and y + h >= y0 - gap:
            parts.append(i)
            x0, y0, x1, y1 = box_of(stats, parts)
    groups = side_by_side_groups(stats, parts)
    if len(groups) > 1:
        raise PreprocessError(f"several digits found ({len(groups)})")
    if x1 - x0 > DASH_ASPECT * (y1 - y0):
        raise no_ink()  # a dash or a rule: no digit is several times wider than tall
    x, y, w, h, area = (stats[:, i] for i in range(5))
    keep = (x >= x0) & (y >= y0) & (x + w <= x1) & (y + h <= y1) & (area >= PART_SHARE * largest)
    keep[parts] = True
    keep[0] = False
    return keep[labels].astype(np.uint8) * 255


def box_of(stats: np.ndarray, indices: list[int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) around the given components."""
    chosen = stats[indices]
    return (int(chosen[:, 0].min()), int(chosen[:, 1].min()), int((chosen[:, 0] + chosen[:, 2]).max()),
            int((chosen[:, 1] + chosen[:, 3]).max()))


def cut_out(grey: np.ndarray, light: np.ndarray | None, threshold: float, bright: bool,
            selected: np.ndarray, frames: np.ndarray, scale: float, shade: bool = False) -> Ink:
    """The selected ink at the working resolution: its mask and its coverage (paper 0, stroke cores 255).

    Thresholded again at this resolution, so fine strokes keep their detail, with hysteresis: fainter ink
    (above halfway from paper to Otsu's threshold) joins where it touches the selected strokes, so the grey
    ends of a blurred or enlarged thumbnail are not cut off. Frame pixels (`frames`) never join.
    """
    height, width = grey.shape
    x, y, w, h = cv2.boundingRect(selected)
    if w == 0 or h == 0:
        raise no_ink()
    margin = max(2, int(0.15 * max(w, h)))  # analysis pixels around the selection where faint ink may join
    ax0, ay0 = max(0, x - margin), max(0, y - margin)
    ax1, ay1 = min(selected.shape[1], x + w + margin), min(selected.shape[0], y + h + margin)
    x0, y0 = int(ax0 / scale), int(ay0 / scale)
    x1, y1 = min(width, int(np.ceil(ax1 / scale))), min(height, int(np.ceil(ay1 / scale)))
    size = (x1 - x0, y1 - y0)

    def to_working(mask: np.ndarray) -> np.ndarray:
        part = mask[ay0:ay1, ax0:ax1]
        if scale != 1.0:
            part = cv2.resize(cv2.dilate(part, np.ones((3, 3), np.uint8)), size, interpolation=cv2.INTER_NEAREST)
        return part

    if light is not None:
        light = light[ay0:ay1, ax0:ax1]
        light = light if scale == 1.0 else cv2.resize(light, size, interpolation=cv2.INTER_LINEAR)
    levelled = level(grey[y0:y1, x0:x1], light, shade)
    if not bright:
        levelled, threshold = cv2.bitwise_not(levelled), 255 - threshold
    strong = cv2.threshold(levelled, threshold, 255, cv2.THRESH_BINARY)[1]
    seeds = cv2.bitwise_and(strong, to_working(selected))
    if not cv2.countNonZero(seeds):
        raise no_ink()
    paper = cv2.mean(levelled, mask=cv2.bitwise_not(strong))[0] if cv2.countNonZero(strong) < strong.size else 0.0
    faint = cv2.threshold(levelled, (paper + threshold) / 2, 255, cv2.THRESH_BINARY)[1]
    faint = cv2.bitwise_and(faint, cv2.bitwise_not(to_working(frames)))
    count, labels = cv2.connectedComponents(faint, connectivity=8)
    joined = np.zeros(count, bool)
    joined[np.unique(labels[seeds > 0])] = True
    joined[0] = False
    keep = cv2.bitwise_or(seeds, joined[labels].astype(np.uint8) * 255)
    bx, by, bw, bh = cv2.boundingRect(keep)
    keep, levelled = keep[by : by + bh, bx : bx + bw], levelled[by : by + bh, bx : bx + bw]
    ink_mean, ink_std = cv2.meanStdDev(levelled, mask=cv2.bitwise_and(keep, strong[by : by + bh, bx : bx + bw]))
    ink = min(float(ink_mean[0, 0] + ink_std[0, 0]), float(levelled.max()))
    if ink - paper < MIN_CONTRAST / 2:
        raise no_ink()
    stretched = cv2.convertScaleAbs(levelled, alpha=255.0 / (ink - paper), beta=-paper * 255.0 / (ink - paper))
    edge = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))  # anti-aliased edges
    return Ink(cv2.bitwise_and(stretched, edge), keep)


def ink_and_digit(bright_mask: np.ndarray) -> tuple[bool, Cleaned, np.ndarray]:
    """Which class is ink, that class without frames, and the digit's selected components. A frame along the
    image's edge is only a hypothesis: when no digit lies inside it (a bold stroke cropped with a thin
    margin looks the same), the image is judged again without it."""
    dark_ink = plainly_dark_ink(bright_mask)
    if dark_ink is not None:
        chosen = without_closed_frames(remove_frames(bright_mask if not dark_ink else cv2.bitwise_not(bright_mask)))
        return not dark_ink, chosen, select_digit(chosen)
    framed = edge_frame_class(bright_mask)
    while True:
        bright = remove_frames(bright_mask, framed_edge=framed is True)
        dark = remove_frames(cv2.bitwise_not(bright_mask), framed_edge=framed is False)
        is_bright = ink_is_bright(bright, dark)
        chosen = without_closed_frames(bright if is_bright else dark)
        try:
            return is_bright, chosen, select_digit(chosen)
        except PreprocessError:
            if framed is None:
                raise
            framed = None


@dataclass(frozen=True)
class Reading:
    """One reading of the analysis copy: the light taken away, the threshold, which class is ink, that class
    without frames, and the digit's components."""

    light: np.ndarray | None
    threshold: float
    bright_mask: np.ndarray
    is_bright: bool
    chosen: Cleaned
    selected: np.ndarray
    shade: bool = False  # light divided out, not subtracted (infer.ink.level)


def read_ink(smooth: np.ndarray, light: np.ndarray | None, threshold: float, shade: bool = False) -> Reading:
    bright_mask = cv2.threshold(level(smooth, light, shade), threshold, 255, cv2.THRESH_BINARY)[1]
    return Reading(light, threshold, bright_mask, *ink_and_digit(bright_mask), shade)


def paper_was_read(smooth: np.ndarray, plain: Reading) -> Reading | None:
    """The digit read as dark ink against the paper found by hole filling, when the plain reading took paper
    for ink: a sheet lying on a darker desk, or the shaded part of a page. Taken only when that reading is dark
    ink clearly darker than its paper, does not share the plain reading's ink, is drawn with a pen at least
    PAPER_BREADTH times thinner than the plain "ink", and is a digit rather than a blob. None otherwise: the
    plain reading stands."""
    if not plain.is_bright and not touches_border(plain.selected):
        return None  # dark ink with paper all round: hole filling would fill it, and read the same ink again
    breadth = stroke_width(plain.selected)
    if breadth < PAPER_BREADTH:  # no pen is thinner than a pixel
        return None
    # The paper's level beneath dark ink: every dark region that does not reach the border is filled up to the
    # level around it. A shadow or the desk reaches the border and stays; pen strokes of any width are filled.
    paper = filled_holes(smooth)
    levelled = level(smooth, paper, shade=True)
    threshold, _ = separability(levelled)
    try:
        reading = read_ink(smooth, paper, threshold, shade=True)
    except PreprocessError:
        return None
    if reading.is_bright or cv2.mean(cv2.subtract(paper, smooth), mask=reading.selected)[0] < MIN_CONTRAST:
        return None  # light ink, or "ink" hardly darker than its paper: noise on a flat page
    shared = cv2.countNonZero(cv2.bitwise_and(reading.selected, plain.selected))
    if shared >= 0.5 * cv2.countNonZero(cv2.bitwise_or(reading.selected, plain.selected)):
        return None  # the same ink: the plain reading was right
    pen = stroke_width(reading.selected)
    if breadth < PAPER_BREADTH * pen:
        return None
    if pen > DIGIT_SLIMNESS * max(cv2.boundingRect(reading.selected)[2:]):
        return None
    return reading


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def find_digit(grey: np.ndarray) -> Ink:
    """Grey image → the digit's ink; PreprocessError when there is no ink, no digit, or several digits."""
    small, scale = analysis_copy(grey)
    smooth = smoothed(small)
    low, high, _, _ = cv2.minMaxLoc(smooth)
    if high - low < MIN_CONTRAST:
        raise no_ink()
    reading = read_ink(smooth, *light_field(smooth))
    if reading.light is None:
        reading = paper_was_read(smooth, reading) or reading
    ink_class = reading.bright_mask if reading.is_bright else cv2.bitwise_not(reading.bright_mask)
    # Frame and edge pixels taken out of the ink class, and their blurred edges: none joins the digit as faint ink.
    frames = cv2.dilate(cv2.subtract(ink_class, reading.chosen.mask), np.ones((3, 3), np.uint8))
    return cut_out(grey if scale != 1.0 else small, reading.light, reading.threshold, reading.is_bright,
                   reading.selected, frames, scale, reading.shade)
