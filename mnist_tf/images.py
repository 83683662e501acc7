"""Pictures for people: digit grids with captions and a confusion-matrix heatmap.

Drawn with Pillow (already installed with TensorBoard), returned as uint8
[H, W, 3] arrays so they can go to TensorBoard (`tf.summary.image`) or PNG.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_tf.constants import PIXEL_SCALE
from mnist_tf.files import atomic_path

_FONT = ImageFont.load_default()


def digit_grid(images: np.ndarray, captions: list[str], columns: int = 8, scale: int = 3,
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
    images = np.asarray(images, np.float32).reshape(len(images), 28, 28)
    if images.max(initial=0) > 1.0:
        images = images / PIXEL_SCALE
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    cell_w, cell_h = 28 * scale + 8, 28 * scale + 22
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, caption) in enumerate(zip(images, captions)):
        r, c = divmod(i, columns)
        x, y = c * cell_w + 4, r * cell_h + 4
        ink = (255 - np.clip(image, 0, 1) * 255).astype(np.uint8)
        tile = Image.fromarray(ink, "L").resize((28 * scale, 28 * scale), Image.NEAREST)
        canvas.paste(tile.convert("RGB"), (x, y))
        color = (200, 0, 0) if highlight is not None and highlight[i] else (0, 0, 0)
        draw.text((x, y + 28 * scale + 3), caption, fill=color, font=_FONT)
    return np.asarray(canvas)


def confusion_matrix_image(matrix: np.ndarray, cell: int = 34) -> np.ndarray:
    """Draws a confusion matrix as a heatmap with counts (rows true, columns predicted).

    The diagonal is shaded green and errors red, each by its share of the row,
    so off-diagonal mistakes stand out even when they are small counts.

    Returns:
        uint8 [H, W, 3] RGB image.
    """
    matrix = np.asarray(matrix)
    n = len(matrix)
    margin = 40
    size = (margin + n * cell + 8, margin + n * cell + 8)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    row_totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    share = matrix / row_totals
    draw.text((margin, 4), "predicted ->", fill="black", font=_FONT)
    draw.text((2, margin - 14), "true", fill="black", font=_FONT)
    for k in range(n):
        draw.text((margin + k * cell + cell // 2 - 3, 20), str(k), fill="black", font=_FONT)
        draw.text((14, margin + k * cell + cell // 2 - 6), str(k), fill="black", font=_FONT)
    for r in range(n):
        for c in range(n):
            strength = float(share[r, c]) if r == c else min(1.0, float(share[r, c]) * 20)
            if r == c:
                color = (int(255 - 155 * strength), int(255 - 55 * strength),
                         int(255 - 155 * strength))
            else:
                color = (255, int(255 - 200 * strength), int(255 - 200 * strength))
            x0, y0 = margin + c * cell, margin + r * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=color, outline=(220,) * 3)
            text = str(int(matrix[r, c]))
            draw.text((x0 + 3, y0 + cell // 2 - 6), text, fill="black", font=_FONT)
    return np.asarray(canvas)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a uint8 [H, W, 3] (or [H, W]) image as PNG, atomically (temp file + rename)."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
