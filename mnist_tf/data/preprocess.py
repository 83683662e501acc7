"""Image files -> MNIST-style 28x28 digits: the steps LeCun et al. used to build MNIST.

MNIST's digits are white ink on a black background, size-normalised to fit a
20x20 box (keeping the aspect ratio, anti-aliased to grey levels) and placed in
a 28x28 field so that their centre of mass sits at the centre of the field
(LeCun, Bottou, Bengio and Haffner, 1998, and http://yann.lecun.com/exdb/mnist/).
A photo or drawing of a digit has to go through the same steps before the model
can read it; `prepare_file` and `prepare_image` do so:

1. Decode (Pillow: PNG, JPEG and anything else Pillow reads; the first frame of
   an animation) and apply the EXIF orientation that phone cameras record.
2. Greyscale: luma (ITU-R 601, Pillow's "L") in [0, 1]; 16-bit greyscale PNGs
   keep their 16-bit precision (/65535).
3. Transparency: a transparent background carries no colour worth trusting
   (often black with alpha 0), so the image is composited over white when its
   opaque pixels are dark on average and over black when they are light; the
   ink then contrasts with the background either way.
4. Polarity: the background level is the median of the image's outermost ring
   of pixels. If the image's mean is darker than that, the ink is dark on a
   light background (paper) and the image is inverted; otherwise it is already
   light ink on a dark background. Ink is measured from the background level,
   so grey paper becomes 0.
5. Contrast and noise: the ink is scaled so its strongest pixel is 1. An image
   whose strongest ink differs from the background by less than
   `MIN_CONTRAST` (0.1 of full scale) has no ink and is rejected as blank.
   Pixels below `NOISE_THRESHOLD` (0.2 of the strongest ink: JPEG ringing,
   paper texture, faint smudges) are set to 0, as MNIST's background is.
6. Crop to the bounding box of the remaining ink.
7. Scale to fit a 20x20 box, keeping the aspect ratio (the longer side becomes
   20 pixels), with Lanczos resampling, which anti-aliases when shrinking. The
   result is rescaled so its strongest pixel is 1 again (thin pen strokes on
   large images would otherwise fade to grey).
8. Centre by mass: paste the box into a 28x28 black field, shifted by whole
   pixels so that its intensity-weighted centre of mass lands on pixel
   (14, 14) (0-based row, column), where real MNIST's centres of mass are
   (13.99, 14.01 on average over the test set). If that would push ink out of
   the field, the shift is limited so that the whole box stays inside.
9. Quantise to uint8 (round(x * 255)), the dtype MNIST is stored in; the model
   input is then uint8 / 255 flattened to 784 floats, exactly as in training
   (`to_model_input`, through `constants.normalize`).

Works best with one digit per image on a plain background, drawn with a pen
about a tenth of the digit's height wide, like MNIST's.

`to_model_input` is the one way from images to the model's input: image
files and Pillow images through the steps above, arrays of digits checked
against the accepted shapes and pixel rule, all normalised as in training.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_tf import files
from mnist_tf.constants import IMAGE_SIZE, NUM_PIXELS, PIXEL_SCALE, model_input
from mnist_tf.errors import UserError

FIELD_SIZE = IMAGE_SIZE  # MNIST's images are 28x28 ...
BOX_SIZE = 20  # ... with the digit size-normalised to fit 20x20 ...
CENTRE = 14.0  # ... and its centre of mass at pixel (14, 14).
MIN_CONTRAST = 0.1  # Ink weaker than this (fraction of full scale) is no ink at all.
NOISE_THRESHOLD = 0.2  # Ink below this fraction of the strongest ink is noise.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_EIGHT_BIT_MODES = ("L", "LA", "P", "PA", "RGB", "RGBA")  # Pixel values 0..255 (not "1").
# What an array of digits may look like after its leading N (one [28, 28] image is N = 1).
IMAGE_TRAILING_SHAPES = ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1), (NUM_PIXELS,))
IMAGE_SHAPES = "[N, 28, 28], [N, 28, 28, 1], [N, 784] or one [28, 28] image"
PIXEL_RULE = "uint8 (or integer) pixels 0..255, or floats in [0, 1] (pixels / 255)"


class ImageError(UserError):
    """An image file that cannot be used: missing, unreadable, not an image, or blank.

    Attributes:
        path: the file.
        problem: what is wrong with it, without the path.
    """

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class BlankImageError(ValueError):
    """An image with no ink: nothing differs enough from the background."""


class PixelValueError(UserError, ValueError):
    """Pixel values no image can have: NaN or infinite grey levels."""


class BinarisedImagesWarning(UserWarning):
    """Integer digits whose pixels are only 0 and 1: binarised, read as nearly black."""


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_finite(values: np.ndarray, what: str = "pixel values") -> None:
    """Refuses NaN or infinite values, which no step here (nor the model) can use.

    NaN would otherwise reach `place_in_field`'s rounding and crash there, and
    clipping would quietly turn infinity into full ink.

    Raises:
        PixelValueError: saying how many of the values are not finite.
    """
    values = np.asarray(values)
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise PixelValueError(f"the image holds NaN or infinite {what} ({bad} of {values.size}); "
                              "grey levels must be finite numbers in [0, 1]")


def binarised_count(digits: np.ndarray) -> int:
    """How many of the integer digits [N, ...] hold only 0 and 1 (with some 1s).

    Integer pixels are 0..255, so such a digit (e.g. `x > 127` stored as
    uint8) is read as nearly black: it is classified near chance, no error.
    """
    digits = np.asarray(digits)
    if digits.size == 0 or not np.issubdtype(digits.dtype, np.integer):
        return 0
    peaks = digits.reshape(len(digits), -1).max(axis=1)
    return int(np.count_nonzero(peaks == 1))


def warn_if_binarised(digits: np.ndarray) -> None:
    """Warns (`BinarisedImagesWarning`, one line) if integer digits [N, ...] look binarised (0/1).

    The digits are still used as given: 0/1 pixels are legal, only unlikely.
    """
    count = binarised_count(digits)
    if count:
        warnings.warn(f"images: {count} of {len(digits)} integer digits hold only pixel values "
                      "0 and 1, read as 0..255 (nearly black): they look binarised; multiply "
                      "them by 255, or pass floats in [0, 1]", BinarisedImagesWarning,
                      stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The `warnings.warn` stacklevel, for its caller, of the first frame outside this package.

    The warning then names the user's line (a notebook cell, a script), not ours.
    """
    frame, level = sys._getframe(1), 1  # The function that calls warn, level 1.
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def float_range_hint(low: float, high: float) -> str:
    """What float pixels outside [0, 1] most likely are, and how to get [0, 1]; "" if unclear.

    Args:
        low: the smallest pixel value.
        high: the largest pixel value.

    Returns:
        A parenthesised hint such as " (they look like 0..255: divide by 255
        or pass uint8)", or "".
    """
    if 0 <= low and 1 < high <= PIXEL_SCALE:
        return " (they look like 0..255: divide by 255 or pass uint8)"
    if -1 <= low < 0 and high <= 1:
        return " (they look normalised to [-1, 1]: map them back to [0, 1] with (x + 1) / 2)"
    if -10 <= low < 0 and 1 < high <= 10:
        return (" (they look standardised to mean 0 and standard deviation 1: undo it with "
                "x * std + mean, e.g. x * 0.3081 + 0.1307 for MNIST's usual constants)")
    return ""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decodes an image file, applying its EXIF orientation.

    Raises:
        ImageError: if the file is missing, empty, unreadable or not an image.
    """
    path = os.fspath(path)
    problem = files.path_problem(path, "file")
    if problem == "does not exist":
        raise ImageError(path, "no such file")
    if problem:
        raise ImageError(path, problem.replace("not a file", "not an image file"))
    try:
        if os.path.getsize(path) == 0:
            raise ImageError(path, "empty file (0 bytes)")
        with Image.open(path) as image:
            image.load()
            # Phones store JPEGs sideways plus an "orientation" tag; undo it.
            return ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (Pillow cannot identify it; "
                               "PNG or JPEG expected)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"image too large ({e})") from None
    except PermissionError as e:
        raise ImageError(path, f"cannot be read: {e.strerror}") from None
    except (OSError, ValueError, SyntaxError) as e:  # Truncated or corrupt data.
        raise ImageError(path, f"damaged or unsupported image ({e})") from None


def greyscale(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Returns the image's grey levels and alpha, both float64 [H, W] in [0, 1].

    Alpha is None when the image has no transparency (or is fully opaque).
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit greyscale PNGs decode to these integer modes.
        grey = np.asarray(image, dtype=np.float64) / 65535.0
        return np.clip(grey, 0.0, 1.0), None
    if image.mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        check_finite(grey)
        return np.clip(grey, 0.0, 1.0), None
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        grey_alpha = np.asarray(image.convert("RGBA").convert("LA"), dtype=np.float64) / PIXEL_SCALE
        grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1]
        return grey, (None if alpha.min() == 1.0 else alpha)
    if image.mode not in ("1", "L"):
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.float64) / PIXEL_SCALE, None


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.sum()
    if weight == 0:
        raise BlankImageError("no ink: the image is fully transparent")
    opaque_mean = (grey * alpha).sum() / weight
    background = 1.0 if opaque_mean < 0.5 else 0.0
    return grey * alpha + background * (1.0 - alpha)


def _border(grey: np.ndarray) -> np.ndarray:
    if min(grey.shape) <= 2:
        return grey.ravel()
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def ink_map(grey: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Turns grey levels into ink: bright ink on a 0 background, strongest ink 1.

    Steps 3-5 of the module docstring: composite transparency, decide the
    polarity from the border, measure ink from the background, drop noise.

    Args:
        grey: float [H, W] grey levels in [0, 1].
        alpha: optional float [H, W] opacity in [0, 1].

    Returns:
        float64 [H, W] ink in [0, 1]; pixels below `NOISE_THRESHOLD` are 0.

    Raises:
        BlankImageError: if the image has no ink.
        PixelValueError: if a grey level or alpha is NaN or infinite.
    """
    grey = np.asarray(grey, dtype=np.float64)
    if grey.ndim != 2 or grey.size == 0:
        raise ValueError(f"expected a non-empty [H, W] array, got shape {grey.shape}")
    check_finite(grey)
    if alpha is not None:
        alpha = np.asarray(alpha, dtype=np.float64)
        check_finite(alpha, "alpha values")
        grey = _composite(grey, alpha)
    background = float(np.median(_border(grey)))
    if grey.mean() < background:  # Dark ink on light paper: invert.
        ink = background - grey
    else:
        ink = grey - background
    ink = np.clip(ink, 0.0, None)
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise BlankImageError(f"no ink: the image is blank (its strongest ink differs from "
                              f"the background by {contrast:.2f} < {MIN_CONTRAST})")
    ink /= contrast
    # The margin keeps float round-off from deciding pixels exactly at the threshold,
    # so an image and its inverse give the same digit.
    ink[ink < NOISE_THRESHOLD - 1e-9] = 0.0
    return ink


def fit_to_box(ink: np.ndarray, box_size: int = BOX_SIZE) -> np.ndarray:
    """Crops `ink` to its bounding box and scales it to fit `box_size`, keeping the aspect ratio.

    Returns:
        float64 [h, w] with max(h, w) == box_size and the strongest pixel 1.
    """
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise BlankImageError("no ink: the image is blank")
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = crop.shape
    scale = box_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    box = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)  # Lanczos overshoots.
    peak = box.max()
    return box / peak if peak > 0 else box


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """Returns the intensity-weighted (row, column) centre of a 2-D array, 0-based."""
    image = np.asarray(image, dtype=np.float64)
    total = image.sum()
    if total == 0:
        raise ValueError("the centre of mass of an all-zero image is undefined")
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def place_in_field(box: np.ndarray, field_size: int = FIELD_SIZE,
                   centre: float = CENTRE) -> np.ndarray:
    """Pastes `box` into a black field, its centre of mass on (centre, centre) to the pixel.

    Returns:
        float64 [field_size, field_size].
    """
    height, width = box.shape
    row, col = centre_of_mass(box)
    # Whole-pixel shifts (no resampling blur), limited so the box stays inside.
    top = min(max(math.floor(centre - row + 0.5), 0), field_size - height)
    left = min(max(math.floor(centre - col + 0.5), 0), field_size - width)
    field = np.zeros((field_size, field_size))
    field[top:top + height, left:left + width] = box
    return field


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantises [0, 1] floats to uint8 0..255 with round-half-up."""
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def prepare_array(grey: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Runs steps 3-9 on grey levels in [0, 1] (and optional alpha).

    Returns:
        uint8 [28, 28]: the digit as MNIST stores it (bright ink on black).

    Raises:
        BlankImageError: if the image has no ink.
        PixelValueError: if a grey level or alpha is NaN or infinite.
    """
    return to_uint8(place_in_field(fit_to_box(ink_map(grey, alpha))))


def prepare_image(image: Image.Image) -> np.ndarray:
    """Prepares a decoded Pillow image (any mode) as an MNIST digit.

    Returns:
        uint8 [28, 28]: bright ink on black, as MNIST stores its digits.

    Raises:
        BlankImageError: if the image has no ink; if its 8-bit pixels are
            only 0 and 1, the message says it looks binarised.
        PixelValueError: if a float image holds NaN or infinite values.
    """
    try:
        return prepare_array(*greyscale(image))
    except BlankImageError as e:
        if image.mode in _EIGHT_BIT_MODES and binarised_count(np.asarray(image.convert("L"))[None]):
            raise BlankImageError(f"{e}; its pixels are only 0 and 1, so it looks binarised: "
                                  "save it with 0 and 255") from None
        raise


def prepare_file(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file and prepares it as an MNIST digit (all steps of the docstring).

    The result can be saved (e.g. `mnist_tf.images.write_png`) to see what the
    model sees.

    Returns:
        uint8 [28, 28]: bright ink on black, as MNIST stores its digits.

    Raises:
        ImageError: if the file is missing, empty, not an image, blank, or
            holds NaN or infinite pixel values.
    """
    image = load_image(path)
    try:
        return prepare_image(image)
    except (BlankImageError, PixelValueError) as e:
        raise ImageError(os.fspath(path), str(e)) from None


def to_model_input(images) -> np.ndarray:
    """Turns images into the model's float32 [N, 784] in [0, 1]: the one way in.

    Image files and Pillow images are prepared as MNIST digits first
    (`prepare_file`, `prepare_image`: what `python -m mnist_tf.predict`
    does). Arrays are taken as digits already (white ink on black, centred)
    and checked. The rule for their pixel values: integers are pixels 0..255
    (MNIST's uint8, as `keras.datasets.mnist.load_data()` gives them);
    floats are taken as already normalised and must lie in [0, 1] (what
    notebooks get from `x / 255`). Floats are never rescaled by guessing from
    their values: a batch of faint digits in 0..255 would look normalised, so
    floats outside [0, 1] are refused instead.

    Every path normalises through `constants.model_input` (integers through
    `constants.normalize`'s lookup), the normalisation the traced training
    and evaluation steps and the exported SavedModel use, so an image gives
    the model the same input bit for bit wherever it comes from.

    Args:
        images: an image file path (str or os.PathLike), a Pillow image, or a
            list of them; or an array (or nested list) of shape
            [N, 28, 28], [N, 28, 28, 1], [N, 784], or one [28, 28] image (N = 1).

    Returns:
        float32 [N, 784] in [0, 1].

    Raises:
        ImageError: for an image file that cannot be used.
        UserError: for a blank Pillow image, or an array of another shape, a
            non-numeric dtype, or values outside the rule above; the one-line
            message says what to pass instead.

    Warns:
        BinarisedImagesWarning: for integer digits holding only 0 and 1.
        UserWarning: for arrays that are mostly bright (dark ink on paper).
    """
    digits = prepare_digits(images)
    if digits is not None:
        return _normalised(digits)
    return _warn_if_dark_on_light(_normalised(check_images(images)))


def prepare_digits(images) -> np.ndarray | None:
    """Prepares a file path, a Pillow image, or a list of them; None for anything else.

    Returns:
        uint8 [N, 28, 28] digits, or None when `images` is not paths or Pillow images.

    Raises:
        ImageError: for an image file that cannot be used.
        UserError: for a blank or non-finite Pillow image, or a list mixing
            paths or Pillow images with arrays.
    """
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return _prepare_one(images, "images")[None]
    if not isinstance(images, (list, tuple)):
        return None
    prepared = [isinstance(item, (str, os.PathLike, Image.Image)) for item in images]
    if not any(prepared):
        return None
    if not all(prepared):
        raise UserError("images: a list mixes image files or Pillow images with arrays; pass "
                        "one kind: paths and Pillow images, or arrays of digits")
    return np.stack([_prepare_one(item, f"images[{i}]") for i, item in enumerate(images)])


def _prepare_one(item, name: str) -> np.ndarray:
    """`prepare_file` for a path, `prepare_image` for a Pillow image (called `name` in errors)."""
    if not isinstance(item, Image.Image):
        return prepare_file(item)
    try:
        return prepare_image(item)
    except (BlankImageError, PixelValueError) as e:
        raise UserError(f"{name}: {e}") from None


def check_images(images) -> np.ndarray:
    """Checks an array of digits against the shapes and the pixel rule of `to_model_input`.

    Returns:
        The pixels as a numpy array with a leading N (one [28, 28] image gets N = 1),
        integer or float, unchanged otherwise.

    Raises:
        UserError: for another shape, a non-numeric dtype, or values outside the rule.
    """
    try:
        array = np.asarray(images)
    except (ValueError, TypeError) as e:  # Ragged nested lists, mostly.
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"images: cannot be read as one array ({problem}); pass a numpy "
                        f"array of shape {IMAGE_SHAPES}") from None
    if array.shape == (IMAGE_SIZE, IMAGE_SIZE):
        array = array[None]
    elif array.shape[1:] not in IMAGE_TRAILING_SHAPES:
        raise UserError(f"images: shape {list(array.shape)} is not {IMAGE_SHAPES}; resize the "
                        "digits to 28x28 first, or pass the image files' paths")
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > PIXEL_SCALE):
            raise UserError(f"images: integer pixels must lie in 0..255, got {array.min()} to "
                            f"{array.max()}; pass {PIXEL_RULE}")
        return array
    if not np.issubdtype(array.dtype, np.floating):  # bool, complex, str...
        raise UserError(f"images: dtype {array.dtype} is not pixel data; pass {PIXEL_RULE}")
    if not np.isfinite(array).all():
        raise UserError("images: contains NaN or infinite values; pass finite pixels "
                        f"({PIXEL_RULE})")
    if array.size and (array.min() < 0 or array.max() > 1):
        hint = float_range_hint(array.min(), array.max())
        raise UserError(f"images: float pixels must lie in [0, 1], got {array.min():g} to "
                        f"{array.max():g}{hint}; pass {PIXEL_RULE}")
    return array


def _normalised(array: np.ndarray) -> np.ndarray:
    """Checked digits [N, ...] -> float32 [N, 784]: `constants.model_input`'s rule.

    Integers are uint8 pixels (checked to lie in 0..255), looked up as in
    training, with a warning for digits binarised to 0/1; floats are already
    in [0, 1] and only flattened.
    """
    if np.issubdtype(array.dtype, np.integer):
        warn_if_binarised(array)
        array = array.astype(np.uint8)
    else:
        array = array.astype(np.float32).reshape(-1, NUM_PIXELS)
    return model_input(array).numpy()


def _warn_if_dark_on_light(pixels: np.ndarray) -> np.ndarray:
    """Warns about images that are mostly bright: dark ink on paper, not MNIST's white on black.

    Such an image gets a confident but meaningless answer; a warning (rather
    than a silent guess) tells the caller to invert it or to pass the file,
    which `prepare_file` inverts.
    """
    bright = (pixels > 0.5).mean(axis=1) > 0.5 if len(pixels) else np.zeros(0, bool)
    if bright.any():
        warnings.warn(f"images: {int(bright.sum())} of {len(pixels)} images are mostly bright "
                      "(dark digits on a light background?); the model expects white digits "
                      "on black as in MNIST: pass 255 - images (or 1 - images), or the image "
                      "file's path", UserWarning, stacklevel=_caller_stacklevel())
    return pixels
