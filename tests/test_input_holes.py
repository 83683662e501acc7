"""Inputs that slipped past the checks: config types, odd pixel data, read-only outputs.

Each case ends as the project's bad inputs do: one line naming the culprit and
the fix (a `UserError` in Python, exit status 2 on the command line), or, for
input that is legal but probably a mistake, one warning line.
"""

import contextlib
import io
import json
import os
import subprocess
import warnings

import numpy as np
import pytest
from conftest import assert_usage_error, run_module, synthetic_digits
from PIL import Image

from mnist_tf import api, config, figures, plot, predict
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.data import preprocess
from mnist_tf.errors import UserError
from mnist_tf.training import trainer


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_data_dir):
    """A tiny trained run (no XLA: compiling would be most of its time)."""
    workdir = tmp_path_factory.mktemp("holes") / "run"
    trainer.train_and_evaluate(
        TrainConfig(hidden_sizes=(8,), batch_size=50, train_steps=4, validation_size=100,
                    eval_batch_size=100, jit_compile=False),
        str(workdir), data_dir=small_data_dir, allow_download=False, log=lambda line: None)
    return workdir


@contextlib.contextmanager
def read_only(path):
    """Makes directory `path` read-only for this process, root included, then writable again.

    Root ignores permission bits, so as root the directory is bind-mounted onto
    itself read-only (the file system refuses every write); otherwise its mode
    becomes 0o555. Skips the test when neither is possible.
    """
    path = str(path)
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            yield path
        finally:
            os.chmod(path, 0o755)
        return
    mounts = [["mount", "--bind", path, path], ["mount", "-o", "remount,bind,ro", path]]
    for i, command in enumerate(mounts):
        if subprocess.run(command, capture_output=True).returncode != 0:
            if i:
                subprocess.run(["umount", path], check=True)
            pytest.skip("cannot make a read-only directory (no bind mount as root here)")
    try:
        assert not os.access(path, os.W_OK)  # The case really is read-only.
        yield path
    finally:
        subprocess.run(["umount", path], check=True)


def float_tiff(path, pixels):
    Image.fromarray(np.asarray(pixels, np.float32), mode="F").save(path)
    return str(path)


def stroke(size=40):
    """A float image of a vertical bar, a '1' of sorts, in [0, 1]."""
    pixels = np.zeros((size, size), np.float32)
    pixels[10:30, 18:22] = 1.0
    return pixels


@pytest.mark.parametrize("field, value, fragment", [
    ("deterministic", "no", "--deterministic: must be true or false (a bool), got 'no' (str)"),
    ("batch_size", True, "--batch_size: must be an integer, got True (bool)"),
    ("epochs", 0.05, "--epochs: must be an integer, got 0.05 (float)"),
    ("hidden_sizes", (32.5,), "--hidden_sizes: must be a tuple of integers, got (32.5,)"),
    ("hidden_sizes", "32", "--hidden_sizes: must be a tuple of integers, got '32' (str)"),
    ("hidden_sizes", (True,), "--hidden_sizes: must be a tuple of integers"),
    ("profile_steps", (1.0, 2.0), "--profile_steps: must be a tuple of integers"),
    ("learning_rate", "0.1", "--learning_rate: must be a number, got '0.1' (str)"),
    ("lr_schedule", 3, "--lr_schedule: must be a string, got 3 (int)"),
    ("device", None, "--device: must be a string, got None (NoneType)"),
    ("epochs", np.float64(2.0), "got np.float64(2.0) (numpy.float64)"),
])
def test_config_refuses_values_of_the_wrong_type(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert fragment in str(info.value)
    assert info.value.field == field


def test_config_takes_what_json_and_numpy_give_as_the_declared_types():
    loaded = TrainConfig(hidden_sizes=[16, 8], profile_steps=[1, 2], learning_rate=1,
                         dropout=np.float32(0.25), batch_size=np.int64(64),
                         deterministic=np.bool_(True))
    assert loaded.hidden_sizes == (16, 8) and loaded.profile_steps == (1, 2)
    assert type(loaded.learning_rate) is float and loaded.learning_rate == 1.0
    assert type(loaded.dropout) is float and type(loaded.batch_size) is int
    assert loaded.deterministic is True
    assert TrainConfig(**loaded.to_dict()) == loaded
    assert all(type(getattr(TrainConfig(), name)) is declared or name in (
        "hidden_sizes", "profile_steps") for name, declared in config.field_types().items())


def test_config_bounds_the_seed_to_what_every_use_takes():
    assert TrainConfig(seed=config.MAX_SEED).seed == 2**32 - 1
    with pytest.raises(ConfigError, match=r"--seed: must be at most 4294967295"):
        TrainConfig(seed=2**32)


def test_train_refuses_a_seed_too_large_in_one_line(tmp_path, small_data_dir):
    workdir = tmp_path / "run"
    result = run_module("mnist_tf.train", f"--workdir={workdir}", f"--data_dir={small_data_dir}",
                        "--nodownload", "--seed=4294967296", "--hidden_sizes=8",
                        "--train_steps=2", "--nojit_compile")
    assert_usage_error(result, "--seed", "at most 4294967295", "got 4294967296")
    assert not workdir.exists()


def test_hidden_sizes_help_says_empty_is_a_linear_classifier():
    (flag,) = [f for f in config.train_flags() if f.name == "hidden_sizes"]
    assert "(empty: no hidden layer, a linear classifier)" in flag.help
    assert TrainConfig.from_flag_values(
        {**{f.name: f.default for f in config.train_flags()}, "hidden_sizes": ""}
    ).hidden_sizes == ()


def test_binarised_uint8_digits_are_classified_with_a_warning(workdir):
    classifier = api.load(workdir)
    digits, _ = synthetic_digits(6, seed=3)
    binarised = (digits > 127).astype(np.uint8)
    with pytest.warns(preprocess.BinarisedImagesWarning) as caught:
        classifier.predict(binarised)
    (warning,) = caught
    message = str(warning.message)
    assert "6 of 6" in message and "look binarised" in message
    assert "multiply them by 255" in message and "floats in [0, 1]" in message
    assert "\n" not in message
    assert warning.filename == __file__  # It names the caller's line, not the package's.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classifier.predict(digits)  # Pixels 0..255: no warning.
        classifier.predict(np.zeros((2, 28, 28), np.uint8))  # Blank, not binarised.
        classifier.predict(binarised.astype(np.float32))  # Floats in [0, 1]: as meant.


def test_a_binarised_image_file_is_called_binarised_not_just_blank(tmp_path):
    path = tmp_path / "binarised.png"
    Image.fromarray((stroke() > 0).astype(np.uint8), "L").save(path)
    with pytest.raises(preprocess.ImageError, match="looks binarised: save it with 0 and 255"):
        preprocess.prepare_file(path)


def test_a_nan_tiff_is_one_error_line_and_the_other_files_are_classified(workdir, tmp_path):
    good = float_tiff(tmp_path / "good.tiff", stroke())
    with_nan, with_inf = stroke(), stroke()
    with_nan[0, 0], with_inf[5, 5] = np.nan, np.inf
    nan = float_tiff(tmp_path / "nan.tiff", with_nan)
    inf = float_tiff(tmp_path / "inf.tiff", with_inf)
    out, err = io.StringIO(), io.StringIO()
    status = predict.run(str(workdir), [nan, good, inf], out=out, err=err)
    assert status == 2
    errors = err.getvalue().splitlines()
    assert errors == [f"error: {path}: the image holds NaN or infinite pixel values (1 of 1600); "
                      "grey levels must be finite numbers in [0, 1]" for path in (nan, inf)]
    assert [line.split(":")[0] for line in out.getvalue().splitlines()[1:]] == [good]


def test_non_finite_grey_levels_given_to_the_library_are_a_user_error():
    grey = stroke().astype(np.float64)
    grey[3, 3] = np.nan
    with pytest.raises(UserError, match="NaN or infinite pixel values"):
        preprocess.prepare_array(grey)
    with pytest.raises(UserError, match="NaN or infinite alpha values"):
        preprocess.prepare_array(stroke(), np.full((40, 40), np.inf))


@pytest.mark.parametrize("images, hint", [
    (np.linspace(-1, 1, 784, dtype=np.float32).reshape(1, 28, 28),
     "(they look normalised to [-1, 1]: map them back to [0, 1] with (x + 1) / 2)"),
    (np.linspace(0, 255, 784, dtype=np.float32).reshape(1, 28, 28),
     "(they look like 0..255: divide by 255 or pass uint8)"),
    ((np.linspace(0, 1, 784).reshape(1, 28, 28) - 0.1307) / 0.3081,
     "(they look standardised to mean 0 and standard deviation 1"),
    (np.linspace(-300, 300, 784).reshape(1, 28, 28), "got -300 to 300; pass"),
])
def test_the_float_range_hint_fits_the_range(images, hint):
    with pytest.raises(UserError) as info:
        api.to_model_input(images)
    assert hint in str(info.value)
    assert str(info.value).count("they look") <= 1


def test_predict_refuses_a_read_only_preprocessed_dir_in_one_line(workdir, tmp_path):
    image = float_tiff(tmp_path / "good.tiff", stroke())
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        result = run_module("mnist_tf.predict", f"--workdir={workdir}",
                            f"--preprocessed_dir={ro}", image)
    assert_usage_error(result, f"--preprocessed_dir: {ro} is not writable",
                       "name a directory you can write to")
    assert result.stdout == ""


def test_a_preprocessed_digit_that_cannot_be_written_names_the_flag(tmp_path):
    prediction = predict.Prediction(file="a/seven.png", probabilities=(0.1,) * 10,
                                    image=np.zeros((28, 28), np.uint8))
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro, pytest.raises(UserError) as info:
        predict.write_preprocessed(ro, 3, prediction)  # Past the up-front check.
    assert str(info.value).startswith(f"--preprocessed_dir: cannot write {ro}/003-seven.png: ")


def test_plot_refuses_a_read_only_workdir_in_one_line(workdir, small_data_dir):
    with read_only(workdir) as ro:
        result = run_module("mnist_tf.plot", f"--workdir={ro}", f"--data_dir={small_data_dir}",
                            "--nodownload")
        with pytest.raises(UserError, match="--workdir: .* is not writable"):
            plot.plot_workdir(ro, data_dir=small_data_dir, allow_download=False)
    assert_usage_error(result, f"--workdir: {ro} is not writable", "--output_dir=DIR")
    assert not os.path.exists(os.path.join(workdir, plot.CURVES_FILE))


def test_a_picture_that_cannot_be_written_is_a_user_error(tmp_path):
    prediction = predict.Prediction(file="seven.png", probabilities=(0.1,) * 9 + (0.19,),
                                    image=np.zeros((28, 28), np.uint8))
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro, pytest.raises(UserError) as info:
        plot.plot_prediction(prediction, os.path.join(ro, "seven.png"))
    assert str(info.value).startswith(f"cannot write {ro}/seven.png: ")


@pytest.mark.parametrize("text, fragment", [
    ('{"steps_per_epoch": "high"}', "steps_per_epoch must be a positive integer, got 'high'"),
    ('{"steps_per_epoch": Infinity}', "steps_per_epoch must be a positive integer, got inf"),
    ('{"steps_per_epoch": 0}', "steps_per_epoch must be a positive integer, got 0"),
    ('{"steps_per_epoch": 12', "not valid JSON"),
])
def test_plot_names_results_json_and_the_key_of_a_bad_value(tmp_path, text, fragment):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(UserError) as info:
        figures._steps_per_epoch(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path / 'results.json'}: {fragment}")


def test_plot_reads_a_sound_or_missing_steps_per_epoch(tmp_path):
    assert figures._steps_per_epoch(str(tmp_path)) is None  # Still training: no results.json.
    (tmp_path / "results.json").write_text(json.dumps({"test_accuracy": 0.9}))
    assert figures._steps_per_epoch(str(tmp_path)) is None
    (tmp_path / "results.json").write_text(json.dumps({"steps_per_epoch": 429}))
    assert figures._steps_per_epoch(str(tmp_path)) == 429
