"""--deskew: the model's input transform that straightens and centres each digit."""

import numpy as np
import pytest
import tensorflow as tf

from mnist_tf.config import TrainConfig
from mnist_tf.data.augment import warp
from mnist_tf.model.deskew import MAX_SHEAR, deskew, moments
from mnist_tf.model.ema import WeightAverage
from mnist_tf.model.mlp import MLP, layer_table
from mnist_tf.training.state import TrainState


def slanted_stroke(slant: float, centre_x: float = 14.0, thickness: int = 2) -> np.ndarray:
    """A 20-row stroke whose column moves `slant` pixels per row, as float32 [1, 784]."""
    image = np.zeros((28, 28), np.float32)
    for row in range(4, 24):
        column = int(round(centre_x + slant * (row - 14)))
        image[row, column - 1:column - 1 + thickness] = 1.0
    return image.reshape(1, 784)


def test_moments_find_the_slant_and_the_centre_of_mass():
    mean_x, mean_y, alpha = (m.numpy().item() for m in moments(tf.constant(slanted_stroke(0.5))))
    assert alpha == pytest.approx(0.5, abs=0.03)
    assert mean_y == pytest.approx(13.5, abs=1e-4)
    assert mean_x == pytest.approx(13.5 - 0.25, abs=0.1)  # The stroke's two columns.


@pytest.mark.parametrize("slant", [-0.6, -0.3, 0.3, 0.6])
def test_a_slanted_stroke_comes_out_upright_and_centred(slant):
    out = deskew(tf.constant(slanted_stroke(slant, centre_x=11.0)))
    mean_x, mean_y, alpha = (m.numpy().item() for m in moments(out))
    assert abs(alpha) < 0.02 and mean_x == pytest.approx(13.5, abs=0.05)
    assert mean_y == pytest.approx(13.5, abs=0.05)
    columns = out.numpy().reshape(28, 28)[4:24].sum(axis=0)
    assert set(np.flatnonzero(columns > 1.0)) <= {12, 13, 14, 15}  # One upright stroke.
    assert out.numpy().sum() == pytest.approx(slanted_stroke(slant).sum(), rel=0.05)


def test_an_upright_centred_digit_is_left_as_it_is():
    image = np.zeros((28, 28), np.float32)
    image[4:24, 13:15] = 0.5  # Symmetric about (13.5, 13.5), no slant.
    flat = image.reshape(1, 784)
    np.testing.assert_allclose(deskew(tf.constant(flat)).numpy(), flat, atol=1e-5)


def test_the_shear_is_bounded_and_a_blank_image_stays_blank():
    horizontal_ish = np.zeros((28, 28), np.float32)
    horizontal_ish[14, 2:26] = 1.0
    horizontal_ish[13, 25] = 1.0  # var(y) ~ 0: the raw ratio would be huge.
    _, _, alpha = moments(tf.constant(horizontal_ish.reshape(1, 784)))
    assert abs(alpha.numpy().item()) <= MAX_SHEAR
    blank = tf.zeros([2, 784])
    np.testing.assert_array_equal(deskew(blank).numpy(), np.zeros((2, 784), np.float32))


def test_deskew_undoes_a_sheared_copy_of_a_real_like_digit():
    # Shear an upright stroke with the affine resampler's twin: deskewing both
    # gives nearly the same image, whatever the slant it started with.
    upright = tf.constant(slanted_stroke(0.0, thickness=3))
    sheared = deskew(tf.constant(slanted_stroke(0.4, thickness=3)))
    difference = np.abs(deskew(upright).numpy() - sheared.numpy()).sum()
    assert difference < 0.2 * upright.numpy().sum()


def test_deskew_is_the_same_under_xla_and_in_a_batch():
    images = np.concatenate([slanted_stroke(s) for s in (-0.5, 0.0, 0.25, 0.5)])
    images = tf.constant(images * np.float32(0.8))
    eager = deskew(images).numpy()
    compiled = tf.function(deskew, jit_compile=True)(images).numpy()
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    one_by_one = np.concatenate([deskew(images[i:i + 1]).numpy() for i in range(4)])
    np.testing.assert_allclose(one_by_one, eager, atol=1e-6)


def test_the_model_deskews_its_input_first_in_every_mode():
    images = tf.constant(np.concatenate([slanted_stroke(0.5), slanted_stroke(-0.3)]))
    plain = MLP((16,), seed=2)
    deskewing = MLP((16,), seed=2, deskew=True)
    expected = plain(deskew(images)).numpy()
    np.testing.assert_allclose(deskewing(images).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(deskewing(images, training=True).numpy(), expected, atol=1e-6)
    assert not np.allclose(plain(images).numpy(), expected, atol=1e-3)
    # The weight average is the same model: it deskews too.
    average = WeightAverage(deskewing, 0.9).model
    np.testing.assert_allclose(average(images).numpy(), expected, atol=1e-6)
    assert "deskewed" in layer_table(deskewing).splitlines()[1]
    assert "deskewed" not in layer_table(plain).splitlines()[1]


def test_the_setting_builds_a_deskewing_model_with_the_same_variables():
    on, off = TrainState(TrainConfig(hidden_sizes=(8,), deskew=True)), TrainState(
        TrainConfig(hidden_sizes=(8,)))
    assert on.model.deskew and not off.model.deskew
    assert ([v.name for v in on.model.parameters()] == [v.name for v in off.model.parameters()])


def test_deskewing_after_an_affine_warp_keeps_the_digit_centred():
    stroke = tf.constant(slanted_stroke(0.0, thickness=3))
    moved = warp(stroke, tf.constant([0.15]), tf.constant([1.05]), tf.constant([[2.0, -1.5]]))
    mean_x, mean_y, _ = (m.numpy().item() for m in moments(deskew(moved)))
    assert mean_x == pytest.approx(13.5, abs=0.1) and mean_y == pytest.approx(13.5, abs=0.1)


def test_a_deskewing_run_trains_and_its_tools_deskew(tmp_path, small_data_dir):
    import mnist_tf
    from mnist_tf.training import trainer

    config = TrainConfig(jit_compile=False, hidden_sizes=(32,), batch_size=32, epochs=1,
                         validation_size=100, eval_batch_size=64, deskew=True)
    lines = []
    results = trainer.train_and_evaluate(config, str(tmp_path), data_dir=small_data_dir,
                                         allow_download=False, log=lines.append)
    assert any("28x28 pixels, deskewed, flattened" in line for line in lines)
    classifier = mnist_tf.load(str(tmp_path))  # What evaluate, predict and export load.
    assert classifier.model.deskew and classifier.config.deskew
    evaluation = classifier.evaluate(data_dir=small_data_dir, allow_download=False,
                                     log=lambda line: None)
    assert evaluation["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-9)


def test_predict_shows_the_digit_as_a_deskewing_model_sees_it(tmp_path):
    from PIL import Image

    from mnist_tf import predict

    stroke = np.rint(slanted_stroke(0.5, thickness=3).reshape(28, 28) * 255).astype(np.uint8)
    plain, deskewing = MLP((4,), seed=0), MLP((4,), seed=0, deskew=True)
    assert predict.as_the_model_sees(plain, stroke) is stroke
    upright = predict.as_the_model_sees(deskewing, stroke)
    assert upright.dtype == np.uint8 and upright.shape == (28, 28)
    _, _, alpha = moments(tf.constant(upright.reshape(1, 784) / 255.0, tf.float32))
    assert abs(alpha.numpy().item()) < 0.05
    # predict_files draws what the model classified: the deskewed digit.
    Image.fromarray(255 - stroke).save(tmp_path / "slanted.png")  # Dark ink on white paper.
    (prediction,) = predict.predict_files(deskewing, [tmp_path / "slanted.png"])
    assert prediction.error is None
    _, _, alpha = moments(tf.constant(prediction.image.reshape(1, 784) / 255.0, tf.float32))
    assert abs(alpha.numpy().item()) < 0.05
