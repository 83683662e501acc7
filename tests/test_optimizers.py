import numpy as np
import pytest
import tensorflow as tf

from mnist_tf.model.optimizers import Adam, adam_update


def test_first_steps_match_hand_computed_values():
    # One scalar parameter, gradients 0.5 then -1.0, lr 0.1, Keras' defaults.
    b1, b2, eps, lr = 0.9, 0.999, 1e-7, 0.1
    param = tf.Variable([1.0])
    adam = Adam([param], beta_1=b1, beta_2=b2, epsilon=eps)

    adam.apply([tf.constant([0.5])], [param], lr)
    # m1 = 0.05, v1 = 0.00025, alpha1 = 0.1 * sqrt(0.001) / 0.1 = 0.0316227766
    # update = 0.05 * 0.0316227766 / (sqrt(0.00025) + 1e-7) = 0.0999993675
    m1, v1 = 0.05, 0.00025
    expected1 = 1.0 - m1 * (lr * np.sqrt(1 - b2) / (1 - b1)) / (np.sqrt(v1) + eps)
    assert expected1 == pytest.approx(0.9000006325, abs=1e-9)
    # float32 holds 0.999 as 0.99900001287, so 1 - beta_2 is off by 1.3e-5
    # relative; the step (about 0.1) is exact to about 1e-6 absolute.
    np.testing.assert_allclose(param.numpy(), [expected1], atol=1e-6)
    np.testing.assert_allclose(adam.m[0].numpy(), [m1], rtol=1e-7)
    np.testing.assert_allclose(adam.v[0].numpy(), [v1], rtol=1e-7)
    assert adam.step.numpy() == 1 and adam.step.dtype == tf.int64

    adam.apply([tf.constant([-1.0])], [param], lr)
    m2 = 0.9 * m1 + 0.1 * -1.0  # -0.055
    v2 = 0.999 * v1 + 0.001 * 1.0  # 0.00124975
    alpha2 = lr * np.sqrt(1 - b2**2) / (1 - b1**2)
    expected2 = expected1 - m2 * alpha2 / (np.sqrt(v2) + eps)
    np.testing.assert_allclose(adam.m[0].numpy(), [m2], rtol=1e-6)
    np.testing.assert_allclose(adam.v[0].numpy(), [v2], rtol=1e-6)
    np.testing.assert_allclose(param.numpy(), [expected2], atol=2e-6)
    assert adam.step.numpy() == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_keras_adam_over_150_steps(seed):
    rng = np.random.default_rng(seed)
    # A random least-squares problem plus a bias, so gradients vary in size and sign.
    x = tf.constant(rng.normal(size=(64, 20)), tf.float32)
    y = tf.constant(rng.normal(size=(64, 3)), tf.float32)
    w0 = rng.normal(size=(20, 3)).astype(np.float32)
    b0 = rng.normal(size=(3,)).astype(np.float32)
    lr = float(rng.uniform(1e-3, 3e-2))

    ours = [tf.Variable(w0), tf.Variable(b0)]
    theirs = [tf.Variable(w0), tf.Variable(b0)]
    adam = Adam(ours)
    keras_adam = tf.keras.optimizers.Adam(learning_rate=lr)  # Reference only.

    def grads(params):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(x @ params[0] + params[1] - y))
        return tape.gradient(loss, params)

    # Both steps in one traced call (150 eager steps of each cost seconds);
    # test_traced_apply_equals_eager_apply shows tracing does not change ours.
    @tf.function
    def step():
        adam.apply(grads(ours), ours, lr)
        keras_adam.apply_gradients(zip(grads(theirs), theirs))

    for _ in range(150):
        step()
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert adam.step.numpy() == 150


def test_traced_apply_equals_eager_apply():
    def run(traced):
        param = tf.Variable(tf.linspace(-1.0, 1.0, 6))
        adam = Adam([param])

        def step(g):
            adam.apply([g], [param], 0.01)

        fn = tf.function(step) if traced else step
        for i in range(5):
            fn(tf.sin(tf.range(6, dtype=tf.float32) + i))
        return param.numpy()

    np.testing.assert_array_equal(run(traced=True), run(traced=False))


def test_adam_update_is_pure():
    g = tf.constant([1.0, -2.0])
    m = tf.zeros(2)
    v = tf.zeros(2)
    update, new_m, new_v = adam_update(g, 0.1, 0.9, 0.999, 1e-7, tf.constant(1.0), m, v)
    np.testing.assert_allclose(new_m.numpy(), [0.1, -0.2], rtol=1e-6)
    np.testing.assert_allclose(new_v.numpy(), [0.001, 0.004], rtol=1e-6)
    # At t=1 the bias-corrected step is lr * sign(g) (up to epsilon).
    np.testing.assert_allclose(update.numpy(), [0.1, -0.1], rtol=1e-5)
    np.testing.assert_array_equal(m.numpy(), [0.0, 0.0])


def test_slots_exist_before_any_step():
    params = [tf.Variable(tf.ones([3, 2])), tf.Variable(tf.ones([2]))]
    adam = Adam(params)
    assert [tuple(m.shape) for m in adam.m] == [(3, 2), (2,)]
    assert [tuple(v.shape) for v in adam.v] == [(3, 2), (2,)]
    assert len(adam.trainable_variables) == 0  # State, not parameters.


def test_apply_validates_arguments():
    params = [tf.Variable(tf.ones([2]))]
    adam = Adam(params)
    with pytest.raises(ValueError, match="expected 1 gradients"):
        adam.apply([tf.ones([2]), tf.ones([2])], params, 0.1)
    with pytest.raises(ValueError, match="is None"):
        adam.apply([None], params, 0.1)
    with pytest.raises(ValueError, match="shape"):
        adam.apply([tf.ones([3])], params, 0.1)
    with pytest.raises(ValueError, match="betas"):
        Adam(params, beta_1=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        Adam(params, epsilon=0.0)
