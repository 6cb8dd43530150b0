"""Preprocessing on constructed images made from real MNIST digits."""

import cv2
import numpy as np
import pytest

from infer.preprocess import PreprocessError, is_mnist_form, preprocess_bytes, to_float, to_mnist
from trainer.data import load_split

MAX = 100_000_000


@pytest.fixture(scope="module")
def digits(data_dir):
    split = load_split(data_dir, train=False).subset(200)
    return split.images.numpy(), split.labels.numpy()


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    m = cv2.moments(image)
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28×28 images: 1 for the same shape."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_mnist_images_pass_through_unchanged(digits):
    images, _ = digits
    for image in images:
        assert np.array_equal(to_mnist(image), image.astype(np.float32) * np.float32(1 / 255))


def test_a_28px_image_not_in_mnist_form_is_still_normalised(digits):
    small = np.zeros((28, 28), np.uint8)
    small[2:12, 1:11] = cv2.resize(digits[0][0], (10, 10), interpolation=cv2.INTER_AREA)  # small, in a corner
    assert not is_mnist_form(small)
    out = to_mnist(small)
    cx, cy = centre_of_mass(out)
    assert abs(cx - 13.5) <= 1 and abs(cy - 13.5) <= 1
    ys, xs = np.nonzero(out)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 >= 19


def test_dark_ink_on_light_paper_is_inverted(digits):
    image = digits[0][0]
    out = to_mnist(255 - image)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out[0].max() == 0 and similarity(out, to_mnist(image)) > 0.99


def test_off_centre_digit_on_large_canvas_is_cropped_scaled_and_centred(digits):
    image = digits[0][1]
    canvas = np.full((900, 1200), 230, np.uint8)
    big = cv2.resize(255 - image, (280, 280), interpolation=cv2.INTER_CUBIC)
    canvas[20:300, 880:1160] = np.minimum(canvas[20:300, 880:1160], big)
    out = to_mnist(canvas)
    cx, cy = centre_of_mass(out)
    assert abs(cx - 14) < 1.0 and abs(cy - 14) < 1.0
    ys, xs = np.nonzero(out > 0.1)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (19, 20, 21)
    assert similarity(out, to_mnist(image)) > 0.8


def test_transparent_background_png_with_dark_strokes(digits):
    image = digits[0][2]
    bgra = np.zeros((120, 120, 4), np.uint8)  # black, fully transparent paper
    bgra[:, :, 3] = cv2.resize(image, (120, 120))  # black strokes drawn with alpha
    ok, png = cv2.imencode(".png", bgra)
    out = to_float(preprocess_bytes(png.tobytes(), MAX))
    assert similarity(out, to_mnist(image)) > 0.9
    assert out.mean() < 0.4  # a digit, not a white square


def test_16_bit_and_colour_images_match_8_bit_grey(digits):
    image = digits[0][3]
    reference = to_mnist(image)
    assert np.allclose(to_mnist(image.astype(np.uint16) * 257), reference, atol=1 / 255)
    ok, png16 = cv2.imencode(".png", image.astype(np.uint16) * 257)
    assert np.allclose(to_float(preprocess_bytes(png16.tobytes(), MAX)), reference, atol=1 / 255)
    colour = cv2.merge([255 - image, np.full_like(image, 255), 255 - image])  # green ink on white paper
    colour[:, :, 1] = 255 - image // 3
    assert similarity(to_mnist(colour), reference) > 0.95


def test_noisy_unevenly_lit_scan_still_finds_the_digit(digits):
    image = digits[0][4]
    rng = np.random.default_rng(0)
    paper = np.linspace(250, 150, 300)[None, :] + rng.normal(0, 8, (300, 300))
    paper[80:220, 80:220] -= cv2.resize(image, (140, 140)).astype(float) * 0.6
    paper[10, 10] = paper[290, 20] = 0  # specks
    out = to_mnist(np.clip(paper, 0, 255).astype(np.uint8))
    assert similarity(out, to_mnist(image)) > 0.8
    assert similarity(out, to_mnist(digits[0][5])) < 0.6  # and not just any digit-like blob


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image_is_an_error_not_a_guess(value):
    with pytest.raises(PreprocessError, match="no ink found"):
        to_mnist(np.full((50, 40), value, np.uint8))


def test_undecodable_and_empty_bytes_are_errors():
    with pytest.raises(PreprocessError, match="empty file"):
        preprocess_bytes(b"", MAX)
    with pytest.raises(PreprocessError, match="not a readable image"):
        preprocess_bytes(b"hello, I am text", MAX)


def test_pixel_limit_refuses_large_images(digits):
    ok, png = cv2.imencode(".png", cv2.resize(digits[0][0], (300, 300)))
    with pytest.raises(PreprocessError, match="over the limit of 10000"):
        preprocess_bytes(png.tobytes(), 10_000)
    assert preprocess_bytes(png.tobytes(), 90_000).shape == (28, 28)


@pytest.mark.parametrize("factor", [2, 3, 5, 8])
def test_pixel_repetition_is_found_and_smoothed(digits, factor):
    """A thumbnail enlarged by repeating pixels is read as the same thumbnail enlarged smoothly; any other
    image (the same enlargement after JPEG, a smooth enlargement) is left as it is."""
    from infer.preprocess import pixel_enlargement_factor, smooth_pixel_enlargement

    images, _ = digits
    thumbnail = cv2.resize(images[0], (12, 12), interpolation=cv2.INTER_AREA)
    blocky = np.kron(thumbnail, np.ones((factor, factor), np.uint8))
    assert pixel_enlargement_factor(blocky) == factor
    smooth = smooth_pixel_enlargement(blocky)
    assert smooth.shape == blocky.shape and pixel_enlargement_factor(smooth) == 1
    assert np.abs(smooth.astype(int) - blocky).mean() < 20  # the same picture, its staircase edges smoothed
    jpeg = cv2.imdecode(cv2.imencode(".jpg", blocky, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_GRAYSCALE)
    cubic = cv2.resize(thumbnail, blocky.shape[::-1], interpolation=cv2.INTER_CUBIC)
    # (8×8 blocks are JPEG's own: they survive it exactly, and are still pixel repetition)
    for other in (cubic, images[1]) + ((jpeg,) if factor != 8 else ()):
        assert smooth_pixel_enlargement(other) is other


def test_large_16_bit_png_is_reduced_in_strips_exactly_as_a_whole_decode(digits):
    """A large 16-bit grey PNG is decoded by Pillow and area-reduced a strip at a time (no second full-size
    buffer): the pixels are exactly those of OpenCV's whole decode shrunk; other images are not taken this way."""
    from infer.decode import WORK_SIDE, decoded_in_strips, shrink
    from infer.imageinfo import read_info

    images, _ = digits
    page = np.full((2300, 2111), 52000, np.uint16)
    page[300:2000, 200:1900] -= (cv2.resize(images[0], (1700, 1700)).astype(np.uint16) * 180)
    page += np.arange(2111, dtype=np.uint16)[None, :]  # light that varies across the page
    data = cv2.imencode(".png", page)[1].tobytes()
    strips = decoded_in_strips(data, read_info(data))
    whole = shrink(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    assert strips is not None and strips.dtype == np.uint16 and max(strips.shape) <= WORK_SIDE
    np.testing.assert_array_equal(strips, whole)
    eight_bit = cv2.imencode(".png", (page >> 8).astype(np.uint8))[1].tobytes()
    assert decoded_in_strips(eight_bit, read_info(eight_bit)) is None
    small = cv2.imencode(".png", page[:900, :900])[1].tobytes()
    assert decoded_in_strips(small, read_info(small)) is None
