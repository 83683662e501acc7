"""Pictures: predict --plot_dir, the titled confusion matrix, overlaid curves, TensorBoard images.

Two tiny runs on the synthetic data dir (`small_data_dir`), in directories that
share their name (`a/run`, `b/run`), serve every test; everything runs
in-process except one command-line test that fails before TensorFlow loads.
"""

import io
import os
import sys

import numpy as np
import pytest
from conftest import assert_usage_error, run_module, synthetic_digits
from PIL import Image

from mnist_tf import evaluate, figures, images, predict
from mnist_tf.config import TrainConfig
from mnist_tf.data import preprocess
from mnist_tf.errors import UserError
from mnist_tf.training import evaluation, trainer
from mnist_tf.training.summaries import SUMMARY_SUBDIR

# TensorBoard 2.21 shows an image at most this many CSS pixels wide (its image
# card) unless "Show actual image size" is ticked; measured in Chromium.
TENSORBOARD_CARD_WIDTH = 345
MIN_READABLE_TEXT = 12  # Pixels of text height on screen.


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_data_dir):
    """Two trained workdirs named alike, ROOT/a/run and ROOT/b/run."""
    root = tmp_path_factory.mktemp("pictures")
    workdirs = []
    for name, learning_rate in (("a", 1e-3), ("b", 3e-3)):
        workdir = root / name / "run"
        config = TrainConfig(hidden_sizes=(16,), batch_size=32, epochs=2, validation_size=100,
                             log_every_steps=5, eval_batch_size=64, learning_rate=learning_rate,
                             jit_compile=False)
        trainer.train_and_evaluate(config, str(workdir), data_dir=small_data_dir,
                                   allow_download=False, log=lambda _: None)
        workdirs.append(str(workdir))
    return workdirs


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory):
    """A synthetic digit as a user's file: 5x larger, dark ink on light paper."""
    directory = tmp_path_factory.mktemp("files")
    image, _ = synthetic_digits(1, seed=5)
    ink = 255 - np.kron(image[0, ..., 0], np.ones((5, 5), np.uint8))
    path = directory / "digit.png"
    Image.fromarray(ink).save(path)
    return str(path)


def png_size(path):
    with Image.open(path) as image:
        return image.size


def sample_shown_digit(figure, png_path):
    """The 28x28 grey levels at the centre of each pixel of the "as the model saw it" panel."""
    figure.draw_without_rendering()  # Lays it out as savefig did.
    ax = next(ax for ax in figure.axes if "model saw" in ax.get_title())
    rows, cols = np.mgrid[0:28, 0:28]
    xy = ax.transData.transform(np.stack([cols.ravel(), rows.ravel()], axis=1).astype(float))
    png = np.asarray(Image.open(png_path).convert("RGB"))
    # Display coordinates count up from the bottom; PNG rows from the top.
    picked = png[np.round(png.shape[0] - xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
    assert (picked[:, 0] == picked[:, 2]).all()  # Grey, not a colour map.
    return picked[:, 0].reshape(28, 28).astype(int)


# ----------------------------------------------------------------------------
# predict --plot_dir


def test_predict_writes_one_picture_per_classified_input(runs, digit_file, small_data_dir,
                                                         tmp_path):
    # A second file with the same stem, and one that cannot be classified.
    (tmp_path / "other").mkdir()
    same_stem = tmp_path / "other" / "digit.jpg"
    Image.open(digit_file).convert("RGB").save(same_stem)
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    plot_dir = tmp_path / "plots"
    out, err = io.StringIO(), io.StringIO()
    status = predict.run(runs[0], [digit_file, str(blank), str(same_stem)], test_index=7,
                         data_dir=small_data_dir, allow_download=False,
                         plot_dir=str(plot_dir), out=out, err=err)

    assert status == predict.EXIT_SOME_FAILED  # The blank file; the others are drawn.
    names = ["digit.png", "digit_2.png", "test_7.png"]
    assert sorted(os.listdir(plot_dir)) == names
    wrote = [line for line in out.getvalue().splitlines() if line.startswith("Wrote ")]
    assert wrote == [f"Wrote {plot_dir / name}" for name in names]
    for name in names:
        width, height = png_size(plot_dir / name)
        assert width >= 400 and height >= 300


def test_the_enlarged_digit_is_what_the_model_saw(runs, digit_file, small_data_dir, tmp_path):
    from mnist_tf import inference

    model = inference.load_model(runs[0]).model
    (from_file,) = predict.predict_files(model, [digit_file])
    from_test = predict.predict_test_example(model, small_data_dir, 7)
    np.testing.assert_array_equal(from_file.image, preprocess.prepare_file(digit_file))
    for prediction, original in ((from_file, preprocess.load_image(digit_file)),
                                 (from_test, None)):
        path = str(tmp_path / "picture.png")
        figures.plot_prediction(prediction, path, original)
        figure = figures.prediction_figure(prediction, original)  # The same layout, to measure.
        shown = sample_shown_digit(figure, path)
        assert np.abs(shown - prediction.image).max() <= 1  # The grey colour map's rounding.
        assert np.ptp(prediction.image) > 100  # A digit, not a flat field.


def test_the_bar_chart_marks_the_prediction_and_a_wrong_label():
    probabilities = (0.02, 0.01, 0.01, 0.55, 0.01, 0.30, 0.05, 0.02, 0.02, 0.01)
    prediction = predict.Prediction(test_index=4, probabilities=probabilities,
                                    image=np.zeros((28, 28), np.uint8), label=5)
    figure = figures.prediction_figure(prediction)
    bars_ax = next(ax for ax in figure.axes if "probabilities" in ax.get_title())
    bars = bars_ax.patches
    np.testing.assert_allclose([bar.get_height() for bar in bars], probabilities)
    colours = [bar.get_facecolor() for bar in bars]
    others = [c for k, c in enumerate(colours) if k not in (3, 5)]
    assert colours[3] not in others and colours[5] not in others
    assert colours[3] != colours[5]
    texts = [t.get_text() for t in bars_ax.texts]
    assert "predicted 3\n55.00%" in texts and "true 5\n30.00%" in texts
    assert figure.get_suptitle() == ("test[4] (TFDS order): predicted 3 (55.00%), "
                                     "true label 5 (wrong)")
    width, height = figure.get_size_inches() * figure.dpi
    assert width >= 400


def test_bad_plot_dir_or_no_matplotlib_is_refused_before_anything_is_written(
        runs, digit_file, tmp_path, monkeypatch):
    a_file = tmp_path / "taken"
    a_file.write_text("mine\n")
    seen = tmp_path / "seen"
    with pytest.raises(UserError, match=r"^--plot_dir: .*taken is a file, not a directory; "
                                        "name a directory"):
        predict.run(runs[0], [digit_file], plot_dir=str(a_file), preprocessed_dir=str(seen))
    assert a_file.read_text() == "mine\n" and not seen.exists()

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # As if it were not installed.
    with pytest.raises(UserError, match=r'matplotlib.*pip install -e "\.\[plot\]"'):
        predict.run(runs[0], [digit_file], plot_dir=str(tmp_path / "plots"),
                    preprocessed_dir=str(seen))
    assert not (tmp_path / "plots").exists() and not seen.exists()


def test_cli_plot_dir_that_is_a_file_is_one_line(runs, digit_file, tmp_path):
    a_file = tmp_path / "taken.png"
    a_file.write_bytes(b"not a directory")
    result = run_module("mnist_tf.predict", f"--workdir={runs[0]}", f"--plot_dir={a_file}",
                        digit_file)
    assert_usage_error(result, "--plot_dir:", "is a file, not a directory", "name a directory")
    assert result.stdout == ""
    assert a_file.read_bytes() == b"not a directory" and os.listdir(tmp_path) == ["taken.png"]


def test_json_lines_say_where_each_picture_went(runs, digit_file, tmp_path):
    import json

    out = io.StringIO()
    predict.run(runs[0], [digit_file], as_json=True, plot_dir=str(tmp_path), out=out)
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["plot"] == str(tmp_path / "digit.png") and os.path.isfile(record["plot"])


# ----------------------------------------------------------------------------
# evaluate: the confusion matrix's title


def test_evaluate_titles_the_confusion_matrix_with_run_split_step_accuracy(runs, small_data_dir):
    results = evaluate.evaluate_checkpoint(runs[1], data_dir=small_data_dir,
                                           allow_download=False, log=lambda _: None)
    title = evaluate.confusion_title(runs[1], results)
    correct = int(np.trace(np.asarray(results["confusion_matrix"])))
    assert title == (f"run: test split, step {results['step']}\naccuracy "
                     f"{results['accuracy']:.2%} ({correct}/200 right)")
    png = np.asarray(Image.open(results["files"]["confusion_matrix_png"]))
    matrix = np.asarray(results["confusion_matrix"])
    np.testing.assert_array_equal(png, images.confusion_matrix_image(matrix, title=title))
    untitled = images.confusion_matrix_image(matrix)
    assert png.shape[0] > untitled.shape[0] and png.shape[1] >= 400

    # The TensorBoard copy is the same picture, with its description.
    tags = event_images(results["files"]["summaries"])
    np.testing.assert_array_equal(tags["confusion_matrix_test"][0], png)
    assert "rows are the true digits" in tags["confusion_matrix_test"][1]


# ----------------------------------------------------------------------------
# plot: several runs in one curves.png


def test_run_labels_add_parents_only_where_names_clash():
    assert figures.run_labels(["/r/x/default", "/r/y/default", "/r/small"]) == [
        "x/default", "y/default", "small"]
    assert figures.run_labels(["/p/a/run", "/q/a/run"]) == ["p/a/run", "q/a/run"]
    assert figures.run_labels(["runs/one/"]) == ["one"]


def test_parse_workdirs_refuses_missing_and_repeated_runs(runs, tmp_path):
    assert figures.parse_workdirs(f"{runs[0]}, {runs[1]}") == runs
    with pytest.raises(UserError, match="^--workdir: .*nope does not exist"):
        figures.parse_workdirs(f"{runs[0]},{tmp_path / 'nope'}")
    with pytest.raises(UserError, match="^--workdir: .* is given twice"):
        figures.parse_workdirs(f"{runs[0]},{runs[0]}/")
    with pytest.raises(UserError, match="^--workdir: required"):
        figures.parse_workdirs(" , ")


def test_several_runs_overlay_in_one_curves_png_named_in_the_legend(runs, tmp_path):
    path = figures.plot_runs(runs, str(tmp_path / "compare"), log=lambda _: None)
    assert path == str(tmp_path / "compare" / "curves.png")
    width, _ = png_size(path)
    assert width >= 400
    figure = figures.curves_figure(runs)
    for ax in figure.axes:
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert labels == ["a/run train", "a/run validation", "b/run train",
                          "b/run validation"]
        # One colour per run: train and validation of a run share it.
        colours = [line.get_color() for line in ax.get_lines()]
        assert colours[0] == colours[1] != colours[2] == colours[3]
    single = figures.curves_figure(runs[0])  # One run: as before, the legend names the splits.
    assert [t.get_text() for t in single.axes[0].get_legend().get_texts()] == [
        "train", "validation"]
    assert single.axes[0].get_title() == "loss (run)"


# ----------------------------------------------------------------------------
# TensorBoard images: readable at the card's size, each with a description.


def event_images(summary_dir):
    """tag -> (first image as uint8 array, description) of a TensorBoard run."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        summary_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["tensors"]:
        metadata = accumulator.SummaryMetadata(tag)
        if metadata.plugin_data.plugin_name != "images":
            continue
        encoded = tf.make_ndarray(accumulator.Tensors(tag)[0].tensor_proto)[2]  # w, h, PNG.
        found[tag] = (np.asarray(Image.open(io.BytesIO(encoded))), metadata.summary_description)
    return found


def test_training_writes_each_image_with_a_description(runs):
    found = event_images(os.path.join(runs[0], SUMMARY_SUBDIR, "test"))
    assert "confusion_matrix" in found
    for tag, (picture, description) in found.items():
        assert len(description) > 80, tag
        assert picture.shape[1] >= 400
    assert found["confusion_matrix"][1].startswith("Confusion matrix of this split")


def test_evaluation_images_are_described_and_sized_for_tensorboard(tmp_path):
    from mnist_tf.training.summaries import SummaryWriters

    confusion = np.diag([980, 1127, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    confusion[7, 2] = 12
    wrong, labels = synthetic_digits(32, seed=3)
    result = evaluation.Evaluation({"loss": 0.1, "accuracy": 0.99, "count": 10012}, confusion,
                                   (wrong.reshape(32, -1), labels, (labels + 1) % 10))
    pictures = evaluation.evaluation_images(result)
    assert set(pictures) == {"confusion_matrix", "misclassified"}
    for picture in pictures.values():
        height, width, _ = picture.pixels.shape
        # On TensorBoard's card the 18-pixel text is shrunk by card / width.
        shown = images.CAPTION_SIZE * min(1.0, TENSORBOARD_CARD_WIDTH / width)
        assert shown >= MIN_READABLE_TEXT, (width, shown)
    assert "rows are the true digits" in pictures["confusion_matrix"].description
    assert '"pred P true T"' in pictures["misclassified"].description

    writers = SummaryWriters(str(tmp_path), runs=("test",))
    writers.images("test", 3, pictures)
    writers.close()
    found = event_images(os.path.join(tmp_path, SUMMARY_SUBDIR, "test"))
    assert {tag: d for tag, (_, d) in found.items()} == {
        tag: p.description for tag, p in pictures.items()}
    np.testing.assert_array_equal(found["misclassified"][0], pictures["misclassified"].pixels)


def test_a_four_digit_count_fits_its_cell():
    cell = 44  # confusion_matrix_image's default.
    matrix = np.full((10, 10), 1127)
    picture = images.confusion_matrix_image(matrix, cell=cell)
    assert images._text_width("1127", images.CAPTION_SIZE) <= cell - 4
    # Every cell holds ink (its count) apart from its colour: no count was dropped.
    height, width, _ = picture.shape
    top, left = height - 10 * cell - 6, width - 10 * cell - 6
    for r in range(10):
        for c in range(10):
            cell_pixels = picture[top + r * cell + 4:top + (r + 1) * cell - 4,
                                  left + c * cell + 4:left + (c + 1) * cell - 4]
            assert (cell_pixels.min(axis=2) < 60).any(), (r, c)


def test_pil_pictures_show_inline_and_match_the_arrays():
    from mnist_tf import figures

    matrix = np.diag([5, 3, 4, 6, 2, 7, 1, 8, 9, 4])
    matrix[3, 5] = 2
    picture = figures.confusion_matrix_picture(matrix, title="t")
    assert isinstance(picture, Image.Image) and picture.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(picture),
                                  images.confusion_matrix_image(matrix, title="t"))
    shown = images.Picture(images.confusion_matrix_image(matrix), "d")._repr_png_()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shown))),
                                  images.confusion_matrix_image(matrix))
