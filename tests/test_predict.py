"""Preparing image files as MNIST digits, and `python -m mnist_tf.predict`.

Real MNIST is not available offline, so the digits are drawn: the characters
0-9 rendered with Pillow's scalable fonts (its built-in font plus any DejaVu
fonts installed) at random sizes, thicknesses, slants and positions. A small
model is trained on a few thousand such renderings, prepared by the same
`preprocess.prepare_image` that prediction uses; other renderings, written as
PNG and JPEG files in both polarities, in colour and grey, with and without
alpha, must then be classified well above chance.
"""

import functools
import glob
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mnist_tf import predict
from mnist_tf.config import TrainConfig
from mnist_tf.data import pipeline, preprocess
from mnist_tf.errors import CheckpointError, UserError
from mnist_tf.training import trainer

REPO = Path(__file__).resolve().parents[1]
FONT_SIZES = (24, 32, 44, 60, 80)


# ----------------------------------------------------------------------------
# Drawing digits.


def _font_makers():
    makers = []
    if isinstance(ImageFont.load_default(size=20), ImageFont.FreeTypeFont):
        makers.append(lambda size: ImageFont.load_default(size=size))
    for path in sorted(glob.glob("/usr/share/fonts/**/DejaVu*.ttf", recursive=True)):
        if "Math" not in path:
            makers.append(functools.partial(ImageFont.truetype, path))
    return makers


FONT_MAKERS = _font_makers()


@functools.cache
def font(index, size):
    return FONT_MAKERS[index](size)


def glyph(digit, rng):
    """Returns the digit as an "L" mask (255 = ink), tightly framed, randomly styled."""
    if not FONT_MAKERS:
        pytest.skip("Pillow has no FreeType support, so no scalable font to draw digits")
    size = int(rng.choice(FONT_SIZES))
    face = font(int(rng.integers(len(FONT_MAKERS))), size)
    stroke = int(rng.integers(0, max(1, size // 12) + 1))
    left, top, right, bottom = face.getbbox(str(digit), stroke_width=stroke)
    pad = size // 3 + 2  # Room for the slant and the rotation below.
    mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), str(digit), fill=255, font=face,
                              stroke_width=stroke, stroke_fill=255)
    # One affine transform about the centre: a slant (handwriting) after a small rotation.
    angle, shear = np.radians(rng.uniform(-10, 10)), rng.uniform(-0.25, 0.25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.array([[1.0, shear], [0.0, 1.0]]) @ rotation
    centre = np.array(mask.size) / 2
    offset = centre - matrix @ centre
    mask = mask.transform(mask.size, Image.Transform.AFFINE,
                          (*matrix[0], offset[0], *matrix[1], offset[1]),
                          Image.Resampling.BILINEAR)
    return mask.crop(mask.getbbox())


def compose(mask, rng, mode="L", ink=255, background=0, scale=1.0, margin=(0.1, 1.5)):
    """Places `mask` (resized by `scale`) at a random spot of a canvas of `mode`."""
    if scale != 1.0:
        size = (max(2, round(mask.width * scale)), max(2, round(mask.height * scale)))
        mask = mask.resize(size, Image.Resampling.BICUBIC)
    extra = [int(rng.uniform(*margin) * s) + 2 for s in mask.size]
    canvas = Image.new(mode, (mask.width + extra[0], mask.height + extra[1]), background)
    where = (int(rng.integers(0, extra[0] + 1)), int(rng.integers(0, extra[1] + 1)))
    canvas.paste(Image.new(mode, mask.size, ink), where, mask)
    return canvas


def drawn_digits(count, seed):
    """`count` drawn digits prepared like MNIST: uint8 [N, 28, 28, 1] and labels [N]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = []
    for digit in labels:
        dark_on_light = rng.random() < 0.5
        canvas = compose(glyph(digit, rng), rng, ink=0 if dark_on_light else 255,
                         background=255 if dark_on_light else 0)
        images.append(preprocess.prepare_image(canvas))
    return np.stack(images)[..., None], labels.astype(np.int64)


def _rgba(colour, alpha):
    return (*colour, alpha)


# The renderings written as files: (name, Pillow mode, ink, background, format).
FILE_KINDS = [
    ("grey_dark_on_light_png", "L", 0, 255, "PNG"),
    ("grey_light_on_dark_jpeg", "L", 250, 10, "JPEG"),
    ("blue_on_cream_jpeg", "RGB", (20, 40, 170), (250, 245, 220), "JPEG"),
    ("yellow_on_navy_png", "RGB", (240, 230, 80), (10, 20, 70), "PNG"),
    ("black_on_transparent_png", "RGBA", (0, 0, 0, 255), (0, 0, 0, 0), "PNG"),
    ("white_on_transparent_png", "RGBA", (255, 255, 255, 255), (255, 255, 255, 0), "PNG"),
    ("grey_16bit_png", "I;16", None, None, "PNG"),
]


def write_digit_file(path, digit, kind, rng):
    """Writes one rendering of `digit` as `kind`: an odd size, off-centre."""
    _, mode, ink, background, fmt = kind
    scale = float(rng.uniform(0.5, 4.0))
    if mode == "I;16":  # 16-bit grey, dark on light, through 8 bits of headroom.
        canvas = compose(glyph(digit, rng), rng, ink=0, background=255, scale=scale)
        pixels = np.asarray(canvas, np.uint16) * 257
        Image.fromarray(pixels).save(path, format="PNG")
    else:
        canvas = compose(glyph(digit, rng), rng, mode=mode, ink=ink, background=background,
                         scale=scale)
        canvas.save(path, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return path


# ----------------------------------------------------------------------------
# Fixtures: a model trained on drawn digits, and the files to classify.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir with a small MLP trained on 3,000 drawn digits; returns (workdir, results)."""
    train_images, train_labels = drawn_digits(3000, seed=1)
    test_images, test_labels = drawn_digits(500, seed=2)
    splits = pipeline.Splits(
        train=pipeline.from_arrays(train_images, train_labels), validation=None,
        test=pipeline.from_arrays(test_images, test_labels),
        num_train=3000, num_validation=0, num_test=500)
    config = TrainConfig(hidden_sizes=(64,), batch_size=64, train_steps=400,
                         learning_rate=3e-3, validation_size=0, log_every_steps=100,
                         checkpoint_every_steps=10_000, eval_batch_size=500)
    workdir = tmp_path_factory.mktemp("predict_run")
    results = trainer.train_and_evaluate(config, str(workdir), splits=splits,
                                         allow_download=False, log=lambda _: None)
    return str(workdir), results


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Three renderings per digit and kind as files; returns [(path, digit, kind name)]."""
    directory = tmp_path_factory.mktemp("digit_files")
    rng = np.random.default_rng(3)
    written = []
    for kind in FILE_KINDS:
        extension = "jpg" if kind[4] == "JPEG" else "png"
        for digit in range(10):
            for copy in range(3):
                path = directory / f"{kind[0]}_{digit}_{copy}.{extension}"
                written.append((str(write_digit_file(path, digit, kind, rng)), digit, kind[0]))
    return written


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Files that cannot be classified, by problem."""
    directory = tmp_path_factory.mktemp("bad_files")
    (directory / "notes.png").write_text("not an image\n")
    (directory / "empty.png").write_bytes(b"")
    Image.new("RGB", (90, 60), "white").save(directory / "blank.png")
    return {
        "missing": str(directory / "missing.png"),
        "not_image": str(directory / "notes.png"),
        "empty": str(directory / "empty.png"),
        "blank": str(directory / "blank.png"),
    }


# ----------------------------------------------------------------------------
# Preprocessing.


def rendered(digit=3, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return compose(glyph(digit, rng), rng, **kwargs)


def test_prepares_a_uint8_28x28_digit_with_bright_ink():
    digit = preprocess.prepare_image(rendered(ink=0, background=255))
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    assert digit.max() == 255  # The strongest ink is full scale, as in MNIST.
    assert (digit == 0).mean() > 0.6  # Background is exactly 0.
    assert digit[:4].max() == 0 and digit[-4:].max() == 0  # The 20x20 box leaves margins.


@pytest.mark.parametrize("mode, ink, background", [
    ("L", 0, 255), ("L", 40, 200), ("RGB", (200, 0, 0), (255, 255, 255)),
])
def test_inverted_image_gives_the_same_digit(mode, ink, background):
    image = rendered(mode=mode, ink=ink, background=background)
    pixels = np.asarray(image)
    inverted = Image.fromarray((255 - pixels).astype(np.uint8))
    original, flipped = preprocess.prepare_image(image), preprocess.prepare_image(inverted)
    assert np.abs(original.astype(int) - flipped.astype(int)).max() <= 1


def test_dark_ink_on_grey_paper_is_inverted():
    # Background 0.55 (darker than mid-grey) with darker ink: still dark-on-light.
    image = rendered(ink=25, background=140)
    reference = preprocess.prepare_image(rendered(ink=0, background=255))
    digit = preprocess.prepare_image(image)
    assert np.abs(digit.astype(int) - reference.astype(int)).mean() < 3


@pytest.mark.parametrize("seed", range(6))
def test_centre_of_mass_lands_on_the_centre(seed):
    rng = np.random.default_rng(seed)
    image = compose(glyph(seed % 10, rng), rng, margin=(0.5, 3.0), scale=rng.uniform(0.5, 3))
    digit = preprocess.prepare_image(image)
    row, col = preprocess.centre_of_mass(digit)
    assert abs(row - preprocess.CENTRE) <= 1.0 and abs(col - preprocess.CENTRE) <= 1.0


def ink_box(digit):
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.mark.parametrize("size, expected", [
    ((300, 150), (10, 20)),  # Wide: width fills the box, height keeps 1:2.
    ((60, 180), (20, 7)),  # Tall: 1:3.
    ((8, 8), (20, 20)),  # Tiny: scaled up.
    ((900, 900), (20, 20)),
])
def test_fits_the_20x20_box_keeping_the_aspect_ratio(size, expected):
    width, height = size
    image = Image.new("L", (width + 60, height + 40), 255)
    ImageDraw.Draw(image).rectangle([30, 20, 30 + width - 1, 20 + height - 1], fill=0)
    digit = preprocess.prepare_image(image)
    box = ink_box(digit)
    assert max(box) == 20
    assert abs(box[0] - expected[0]) <= 1 and abs(box[1] - expected[1]) <= 1, box


def test_a_prepared_digit_is_prepared_again_unchanged():
    digit = preprocess.prepare_image(rendered(digit=5, ink=0, background=255))
    again = preprocess.prepare_image(Image.fromarray(digit))
    assert ink_box(again) == ink_box(digit)
    assert np.abs(again.astype(int) - digit.astype(int)).mean() < 2


def test_transparent_background_and_16_bit_match_plain_grey(tmp_path):
    mask = glyph(8, np.random.default_rng(5))
    grey = Image.new("L", mask.size, 255)
    grey.paste(0, (0, 0), mask)
    reference = preprocess.prepare_image(grey)

    # Alpha is the pen's coverage; fully transparent pixels keep whatever colour
    # the program left there (black, or white as under the white ink!).
    for ink, hidden in [((0, 0, 0), (0, 0, 0)), ((20, 20, 20), (255, 255, 255)),
                        ((255, 255, 255), (255, 255, 255)), ((250, 240, 30), (0, 0, 0))]:
        rgba = Image.new("RGB", mask.size, hidden)
        rgba.paste(ink, (0, 0), mask.point(lambda v: 255 if v else 0))
        rgba.putalpha(mask)
        rgba.save(tmp_path / "alpha.png")
        digit = preprocess.prepare_file(tmp_path / "alpha.png")
        assert np.abs(digit.astype(int) - reference.astype(int)).mean() < 3, (ink, hidden)

    Image.fromarray(np.asarray(grey, np.uint16) * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    digit = preprocess.prepare_file(tmp_path / "deep.png")
    assert np.abs(digit.astype(int) - reference.astype(int)).max() <= 1


def test_faint_noise_does_not_move_the_crop():
    image = rendered(digit=1, ink=0, background=255, margin=(1.0, 1.0))
    clean = preprocess.prepare_image(image)
    pixels = np.asarray(image).copy()
    rng = np.random.default_rng(0)
    pixels = np.clip(pixels - rng.integers(0, 20, size=pixels.shape), 0, 255)  # Paper grain.
    pixels[1:3, 1:3] = 225  # A faint smudge in the corner, far from the digit.
    noisy = preprocess.prepare_image(Image.fromarray(pixels.astype(np.uint8)))
    # Grain can tip an anti-aliased edge pixel over the threshold (a pixel at
    # most); the smudge, were it counted as ink, would double the box.
    assert np.abs(np.subtract(ink_box(noisy), ink_box(clean))).max() <= 1
    assert np.corrcoef(noisy.ravel(), clean.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("image", [
    Image.new("L", (50, 50), 255),
    Image.new("RGB", (50, 30), (0, 0, 0)),
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)),
    Image.fromarray(np.full((30, 30), 200, np.uint8) + np.eye(30, dtype=np.uint8) * 10),
], ids=["white", "black", "transparent", "too_faint"])
def test_blank_images_have_no_ink(image):
    with pytest.raises(preprocess.BlankImageError, match="no ink"):
        preprocess.prepare_image(image)


def test_unusable_files_raise_image_errors(tmp_path, bad_files):
    truncated = tmp_path / "truncated.png"
    buffer = io.BytesIO()
    rendered().save(buffer, format="PNG")
    truncated.write_bytes(buffer.getvalue()[:60])
    expected = {
        bad_files["missing"]: "no such file",
        bad_files["not_image"]: "not an image",
        bad_files["empty"]: "empty file (0 bytes)",
        bad_files["blank"]: "no ink",
        str(tmp_path): "is a directory",
        str(truncated): "damaged",
    }
    for path, problem in expected.items():
        with pytest.raises(preprocess.ImageError) as caught:
            preprocess.prepare_file(path)
        assert problem in caught.value.problem and str(caught.value).startswith(path)


_RNG = np.random.default_rng(0)
# Every pixel value 0..255 on a mostly black field, as digits are (so no polarity warning).
DIGITS = np.where(_RNG.random((5, 28, 28)) < 0.3,
                  _RNG.integers(0, 256, size=(5, 28, 28)), 0).astype(np.uint8)


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "flat", "one", "int64", "int32", "list",
                                    "float32", "float64", "float_list"])
def test_every_accepted_array_gives_trainings_model_input(layout):
    from mnist_tf.constants import normalize

    # Training holds uint8 pixels and its traced steps normalise them (constants.normalize).
    assert len(np.unique(DIGITS)) == 256
    training = normalize(DIGITS).numpy()
    np.testing.assert_array_equal(training, DIGITS.reshape(5, 784) / np.float32(255.0))
    images = {
        "nhw": DIGITS,
        "nhwc": DIGITS[..., None],
        "flat": DIGITS.reshape(5, 784),
        "one": DIGITS[0],
        "int64": DIGITS.astype(np.int64),
        "int32": DIGITS.astype(np.int32)[..., None],
        "list": DIGITS.tolist(),
        "float32": DIGITS.astype(np.float32) / np.float32(255),
        "float64": DIGITS / 255.0,
        "float_list": (DIGITS / 255.0).tolist(),
    }[layout]
    actual = preprocess.to_model_input(images)
    expected = training[:1] if layout == "one" else training
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def test_files_and_pillow_images_are_prepared_as_the_predict_tool_prepares_them(tmp_path):
    from mnist_tf.constants import normalize

    paths = []
    for digit, kind in ((3, FILE_KINDS[0]), (7, FILE_KINDS[-1])):
        paths.append(str(write_digit_file(tmp_path / f"{digit}.png", digit, kind,
                                          np.random.default_rng(digit))))
    prepared = np.stack([preprocess.prepare_file(path) for path in paths])
    expected = normalize(prepared).numpy()
    np.testing.assert_array_equal(preprocess.to_model_input(paths), expected)
    np.testing.assert_array_equal(preprocess.to_model_input(Path(paths[1])), expected[1:])
    images = [Image.open(path) for path in paths]
    np.testing.assert_array_equal(preprocess.to_model_input(images), expected)
    np.testing.assert_array_equal(preprocess.to_model_input((paths[0], images[1])), expected)


def test_unusable_files_and_images_are_one_line_user_errors(bad_files):
    with pytest.raises(preprocess.ImageError, match="no such file"):
        preprocess.to_model_input(bad_files["missing"])
    with pytest.raises(UserError) as caught:
        preprocess.to_model_input([Image.open(bad_files["blank"])])
    assert str(caught.value).startswith("images[0]: no ink")
    with pytest.raises(UserError, match="a list mixes image files"):
        preprocess.to_model_input([bad_files["blank"], DIGITS[0]])


# ----------------------------------------------------------------------------
# Prediction, in process.


def test_model_trained_on_drawn_digits_learns_them(trained):
    _, results = trained
    assert results["test_accuracy"] >= 0.9, results["test_accuracy"]


def test_drawn_digit_files_are_classified_well_above_chance(trained, digit_files):
    from mnist_tf import inference

    model = inference.load_model(trained[0]).model
    predictions = predict.predict_files(model, [path for path, _, _ in digit_files])
    assert all(p.error is None for p in predictions)
    correct = [p.digit == digit for p, (_, digit, _) in zip(predictions, digit_files)]
    assert np.mean(correct) >= 0.8, np.mean(correct)
    for kind in FILE_KINDS:  # Every format and polarity works, not just most of them.
        of_kind = [c for c, (_, _, name) in zip(correct, digit_files) if name == kind[0]]
        assert np.mean(of_kind) >= 0.6, (kind[0], np.mean(of_kind))
    for p in predictions:
        assert len(p.probabilities) == 10 and abs(sum(p.probabilities) - 1) < 1e-4
        assert p.image.shape == (28, 28) and p.top()[0][0] == p.digit


def test_run_prints_lines_and_saves_what_the_model_saw(trained, digit_files, bad_files,
                                                       tmp_path):
    paths = [digit_files[0][0], bad_files["blank"], digit_files[-1][0]]
    out, err = io.StringIO(), io.StringIO()
    status = predict.run(trained[0], paths, preprocessed_dir=str(tmp_path / "seen"),
                         out=out, err=err)
    assert status == predict.EXIT_SOME_FAILED
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Model: ") and "ckpt-400 (step 400, the trained weights)" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == [paths[0], paths[2]]
    assert " | top-3: " in lines[1] and lines[1].count("%") == 3
    assert len(err.getvalue().splitlines()) == 1
    assert err.getvalue().startswith(f"error: {paths[1]}: no ink")
    saved = sorted(os.listdir(tmp_path / "seen"))
    assert saved == [f"000-{Path(paths[0]).stem}.png", f"002-{Path(paths[2]).stem}.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "seen" / saved[0])),
                                  preprocess.prepare_file(paths[0]))


def test_run_rejects_usage_errors(trained, digit_files, tmp_path):
    path = digit_files[0][0]
    with pytest.raises(UserError, match="no image files given"):
        predict.run(trained[0], [])
    with pytest.raises(UserError, match="--test_index: must be >= 0"):
        predict.run(trained[0], [], test_index=-1)
    with pytest.raises(UserError, match="--workdir"):
        predict.run(str(tmp_path / "nowhere"), [path])
    with pytest.raises(CheckpointError, match="--checkpoint"):
        predict.run(trained[0], [path], checkpoint=str(tmp_path / "ckpt-1"))


def test_bad_input_is_refused_before_tensorflow_loads(tmp_path):
    # The library behind `python -m mnist_tf.predict` (and export) checks what it was
    # given before TensorFlow's start-up: importing it loads no TensorFlow.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    code = (
        "import sys\n"
        "from mnist_tf.errors import UserError\n"
        "from mnist_tf.inference import classify, export\n"
        f"for call in (lambda: classify.run({str(tmp_path)!r}, []),\n"
        f"             lambda: classify.run({str(tmp_path)!r}, [], test_index=-1),\n"
        f"             lambda: export.export_model({str(tmp_path)!r}, "
        f"{str(tmp_path / 'full')!r})):\n"
        "    try:\n"
        "        call()\n"
        "    except UserError as e:\n"
        "        print(e)\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and "no image files given" in lines[0], lines
    assert "--test_index: must be >= 0" in lines[1] and "not empty" in lines[2], lines
    # The entry points too: a mistyped --workdir or export directory costs no start-up.
    for module, flag in (("mnist_tf.predict", str(tmp_path / "full" / "x")),
                         ("mnist_tf.export", f"--export_dir={tmp_path / 'full' / 'x'}")):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", module,
             f"--workdir={tmp_path / 'nowhere'}", flag],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "tensorflow" not in imported, (module, errors)


def test_formats():
    probabilities = tuple(np.eye(10)[7] * 0.9 + 0.01)
    prediction = predict.Prediction(file="a.png", probabilities=probabilities)
    assert predict.format_text(prediction) == "a.png: 7 | top-3: 7 91.00%, 0 1.00%, 1 1.00%"
    record = json.loads(predict.format_json(prediction))
    assert record["file"] == "a.png" and record["digit"] == 7
    assert record["top3"][0] == {"digit": 7, "probability": 0.91}
    example = predict.Prediction(test_index=4, probabilities=probabilities, label=1)
    assert predict.format_text(example).startswith(
        "test[4] (TFDS order): 7, true label 1 (wrong) | top-3: 7 91.00%")
    failed = predict.Prediction(file="b.png", error="no such file")
    assert json.loads(predict.format_json(failed)) == {"file": "b.png", "error": "no such file"}


def test_run_json_lines(trained, digit_files, bad_files, small_data_dir):
    paths = [digit_files[0][0], bad_files["missing"]]
    out, err = io.StringIO(), io.StringIO()
    status = predict.run(trained[0], paths, test_index=3, data_dir=small_data_dir,
                         allow_download=False, as_json=True, out=out, err=err)
    assert status == predict.EXIT_SOME_FAILED
    assert err.getvalue() == f"error: {bad_files['missing']}: no such file\n"
    records = [json.loads(line) for line in out.getvalue().splitlines()]  # JSON only.
    assert len(records) == 3
    good, missing, example = records
    assert set(good) == {"file", "digit", "probabilities", "top3"}
    assert good["file"] == paths[0]
    assert len(good["probabilities"]) == 10 and abs(sum(good["probabilities"]) - 1) < 1e-4
    assert good["top3"][0]["digit"] == good["digit"] == int(np.argmax(good["probabilities"]))
    assert [t["probability"] for t in good["top3"]] == sorted(good["probabilities"])[::-1][:3]
    assert missing == {"file": bad_files["missing"], "error": "no such file"}
    _, label = predict.load_test_example(small_data_dir, 3)
    assert example["test_index"] == 3 and example["label"] == label
    assert example["digit"] in range(10) and len(example["probabilities"]) == 10


# ----------------------------------------------------------------------------
# The command line, as a user runs it. The runs start together (each spends
# most of its time importing TensorFlow) and the tests below read their results.


def start_cli(*args):
    env = dict(os.environ)
    env.pop("MNIST_TF_VERBOSE", None)
    return subprocess.Popen([sys.executable, "-m", "mnist_tf.predict", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def cli_runs(trained, digit_files, bad_files, small_data_dir):
    workdir = f"--workdir={trained[0]}"
    data_flags = [f"--data_dir={small_data_dir}", "--nodownload"]
    good = [path for path, _, _ in digit_files[::21]]  # One or two of every kind.
    mixed = [good[0], bad_files["missing"], good[1], bad_files["not_image"],
             bad_files["empty"], *good[2:], bad_files["blank"]]
    started = {
        "mixed": (start_cli(workdir, *mixed, "--test_index=3", *data_flags), mixed),
        "out_of_range": (start_cli(workdir, "--test_index=200", *data_flags), None),
        "no_input": (start_cli(workdir), None),
    }
    runs = {}
    for name, (process, paths) in started.items():
        stdout, stderr = process.communicate(timeout=120)
        runs[name] = (process.returncode, stdout, stderr, paths)
    return runs


def test_cli_reports_each_bad_file_and_classifies_the_rest(cli_runs, trained, bad_files,
                                                           small_data_dir):
    status, stdout, stderr, paths = cli_runs["mixed"]
    assert status == 2, stderr
    assert "Traceback" not in stderr
    errors = stderr.strip().splitlines()
    assert errors == [
        f"error: {bad_files['missing']}: no such file",
        f"error: {bad_files['not_image']}: not an image (Pillow cannot identify it; "
        "PNG or JPEG expected)",
        f"error: {bad_files['empty']}: empty file (0 bytes)",
        f"error: {bad_files['blank']}: " + errors[-1].split(": ", 2)[-1],
    ]
    assert "no ink" in errors[-1]
    good = [p for p in paths if p not in bad_files.values()]
    lines = stdout.splitlines()
    assert lines[0].startswith("Model: ")
    assert lines[0].endswith("ckpt-400 (step 400, the trained weights)")
    assert [line.split(":")[0] for line in lines[1:-1]] == good
    # The command line says what the library says.
    from mnist_tf import inference

    model = inference.load_model(trained[0]).model
    expected = [predict.format_text(p) for p in predict.predict_files(model, good)]
    assert [line.split(" | ")[0] for line in lines[1:-1]] == [e.split(" | ")[0] for e in expected]
    # The test example comes last, with its true label.
    _, label = predict.load_test_example(small_data_dir, 3)
    assert lines[-1].startswith("test[3] (TFDS order): ")
    assert f", true label {label} (" in lines[-1] and " | top-3: " in lines[-1]


def test_cli_test_index_out_of_range_is_one_line(cli_runs):
    status, stdout, stderr, _ = cli_runs["out_of_range"]
    assert status == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        "error: --test_index: 200 is out of range; the test split has 200 examples (0 to 199)"]


def test_cli_without_input_is_a_usage_error(cli_runs):
    status, _, stderr, _ = cli_runs["no_input"]
    assert status == 2
    assert len(stderr.strip().splitlines()) == 1 and "no image files given" in stderr


def test_test_index_reads_tfds_order(small_data_dir):
    # The small data dir holds synthetic digits written through TFDS's builder.
    image, label = predict.load_test_example(small_data_dir, 0)
    assert image.shape == (28, 28) and image.dtype == np.uint8 and label in range(10)
    with pytest.raises(UserError, match="out of range"):
        predict.load_test_example(small_data_dir, 200)
