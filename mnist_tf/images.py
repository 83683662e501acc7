"""Pictures for people: digit grids with captions and a confusion-matrix heatmap.

Drawn with Pillow (already installed with TensorBoard), returned as uint8
[H, W, 3] arrays so they can go to TensorBoard (`tf.summary.image`) or PNG.
`to_pil` turns one into a PIL image, which Jupyter shows inline; a `Picture`
shows itself inline too. The matplotlib figures are in `mnist_tf.figures`.

Sizes are chosen for TensorBoard, which shrinks an image to its card's width
by default: the text is drawn large (Pillow's own scalable font at 18 px) and
the pictures kept narrow enough that a 4-digit count or a caption still reads
after that shrinking.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_tf.constants import IMAGE_SIZE, PIXEL_SCALE
from mnist_tf.files import atomic_path

# TensorBoard's image cards are ~345 CSS pixels wide whatever the window (TB
# 2.21, "Show actual image size" off) and shrink a wider image to fit. The
# pictures stay under ~500 pixels wide, so 18-pixel text still shows at 12-14
# pixels there; Pillow's default 10-pixel font in a 768-pixel grid showed at ~4.
CAPTION_SIZE = 18  # Font pixels of captions, counts and axis labels.
TITLE_SIZE = 18
RED = (200, 0, 0)


@dataclasses.dataclass(frozen=True, eq=False)
class Picture:
    """An image for TensorBoard with the description shown beside it.

    Attributes:
        pixels: uint8 [H, W, 3] RGB.
        description: what the picture shows (TensorBoard renders it as Markdown).
    """

    pixels: np.ndarray
    description: str

    def _repr_png_(self) -> bytes:
        """PNG bytes, so Jupyter shows the picture inline."""
        buffer = io.BytesIO()
        to_pil(self.pixels).save(buffer, format="PNG")
        return buffer.getvalue()


def to_pil(pixels: np.ndarray) -> Image.Image:
    """A uint8 [H, W, 3] (or [H, W]) picture as a PIL image (RGB or L), e.g. for a notebook."""
    return Image.fromarray(np.asarray(pixels, np.uint8))


@functools.cache
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font (Aileron) at `size` pixels; its small bitmap font without FreeType.

    Pillow bundles this one, so every machine draws the same pictures.
    """
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType.
        return ImageFont.load_default()


def _text_width(text: str, size: int) -> int:
    left, _, right, _ = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font(size))
    return int(right - left)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill,
          size: int = CAPTION_SIZE, anchor: str = "lt") -> None:
    """Draws `text` with its ink box placed on `xy` by `anchor` (horizontal l/m/r, vertical t/m/b).

    Placed by the ink's bounding box rather than Pillow's `anchor=`, which
    bitmap fonts (Pillow without FreeType) do not support.
    """
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font(size))
    x = xy[0] - left - {"l": 0, "m": (right - left) // 2, "r": right - left}[anchor[0]]
    y = xy[1] - top - {"t": 0, "m": (bottom - top) // 2, "b": bottom - top}[anchor[1]]
    draw.text((x, y), text, fill=fill, font=font(size))


def digit_grid(images: np.ndarray, captions: list[str], columns: int = 4, scale: int = 3,
               highlight: list[bool] | None = None) -> np.ndarray:
    """Lays out digits in a grid with a caption under each.

    Args:
        images: [N, 784] or [N, 28, 28] (or [N, 28, 28, 1]) in [0, 1] or 0..255.
        captions: one short string per image.
        columns: digits per row.
        scale: pixel magnification.
        highlight: per image, whether to draw its caption in red (e.g. wrong).

    Returns:
        uint8 [H, W, 3] RGB image (white background, dark ink).
    """
    images = np.asarray(images, np.float32).reshape(len(images), IMAGE_SIZE, IMAGE_SIZE)
    if images.max(initial=0) > 1.0:
        images = images / PIXEL_SCALE
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    side = IMAGE_SIZE * scale
    # Wide enough for the longest caption, so neighbours' captions never touch.
    cell_w = max(side, max((_text_width(c, CAPTION_SIZE) for c in captions), default=0)) + 16
    cell_h = side + CAPTION_SIZE + 14
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, caption) in enumerate(zip(images, captions)):
        r, c = divmod(i, columns)
        x, y = c * cell_w, r * cell_h + 4
        ink = (255 - np.clip(image, 0, 1) * 255).astype(np.uint8)
        tile = Image.fromarray(ink, "L").resize((side, side), Image.NEAREST)
        canvas.paste(tile.convert("RGB"), (x + (cell_w - side) // 2, y))
        color = RED if highlight is not None and highlight[i] else (0, 0, 0)
        _text(draw, (x + cell_w // 2, y + side + 5), caption, color, anchor="mt")
    return np.asarray(canvas)


def _cell_color(share: float, diagonal: bool) -> tuple[int, int, int]:
    if diagonal:  # Green by the share of the row classified right.
        return int(255 - 155 * share), int(255 - 55 * share), int(255 - 155 * share)
    # Errors are a few % of a row at most: 5% already gives the full red.
    strength = min(1.0, share * 20)
    return 255, int(255 - 200 * strength), int(255 - 200 * strength)


def confusion_matrix_image(matrix: np.ndarray, cell: int = 44, title: str | None = None
                           ) -> np.ndarray:
    """Draws a confusion matrix as a heatmap with counts (rows true, columns predicted).

    The diagonal is shaded green and errors red, each by its share of the row,
    so off-diagonal mistakes stand out even when they are small counts.

    Args:
        matrix: int [n, n], rows true classes, columns predictions.
        cell: side of one cell in pixels (room for a 4-digit count).
        title: drawn above the matrix (e.g. run, split, step, accuracy), one
            line of text per line of `title`.

    Returns:
        uint8 [H, W, 3] RGB image.
    """
    matrix = np.asarray(matrix)
    n = len(matrix)
    lines = title.splitlines() if title else []
    top = len(lines) * (TITLE_SIZE + 8) + 2 * CAPTION_SIZE + 20
    left = 2 * CAPTION_SIZE + 16  # "true" label and the row numbers.
    width = max([left + n * cell + 6] + [_text_width(line, TITLE_SIZE) + 16 for line in lines])
    canvas = Image.new("RGB", (width, top + n * cell + 6), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        _text(draw, (8, 8 + i * (TITLE_SIZE + 8)), line, "black", TITLE_SIZE)
    _text(draw, (left + n * cell // 2, top - 2 * CAPTION_SIZE - 12), "predicted", "black",
          anchor="mt")
    _text(draw, (4, top - CAPTION_SIZE - 6), "true", "black")
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for k in range(n):
        _text(draw, (left + k * cell + cell // 2, top - 6), str(k), "black", anchor="mb")
        _text(draw, (left - 10, top + k * cell + cell // 2), str(k), "black", anchor="rm")
    for r in range(n):
        for c in range(n):
            x0, y0 = left + c * cell, top + r * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1],
                           fill=_cell_color(float(share[r, c]), r == c), outline=(200,) * 3)
            _text(draw, (x0 + cell // 2, y0 + cell // 2), str(int(matrix[r, c])), "black",
                  anchor="mm")
    return np.asarray(canvas)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a uint8 [H, W, 3] (or [H, W]) image or a PIL image as PNG, atomically.

    Atomic: a temp file renamed into place, so a crash never leaves half a PNG.
    """
    with atomic_path(path, suffix=".png") as tmp:
        to_pil(image).save(tmp, format="PNG")
