"""Asymmetric Loss against an independent NumPy transcription of the official PyTorch ASL."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsd_tf.losses import AsymmetricLoss, sum_squared_error


def _official_terms(y, x, gamma_neg, gamma_pos, clip, eps):
    """Per-element (log-likelihood, focusing weight) of the official ASL, float64."""
    with np.errstate(over="ignore"):  # exp(1e4) = inf gives p = 0 exactly, as torch.sigmoid
        p = 1.0 / (1.0 + np.exp(-x))
    p_neg = 1.0 - p
    if clip > 0:
        p_neg = np.minimum(p_neg + clip, 1.0)
    log_lik = y * np.log(np.maximum(p, eps)) + (1 - y) * np.log(np.maximum(p_neg, eps))
    pt = p * y + p_neg * (1 - y)
    gamma = gamma_pos * y + gamma_neg * (1 - y)
    return log_lik, np.power(1.0 - pt, gamma)


def official_asl(y, x, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8):
    """`-loss.sum()` over batch and classes, as `AsymmetricLossOptimized.forward` returns it."""
    log_lik, w = _official_terms(np.asarray(y, np.float64), np.asarray(x, np.float64), gamma_neg, gamma_pos, clip, eps)
    return -np.sum(log_lik * w)


COMBOS = [  # (gamma_neg, gamma_pos, clip)
    (4.0, 0.0, 0.05),  # paper / ASL defaults
    (0.0, 0.0, 0.0),  # plain binary cross-entropy
    (2.0, 1.0, 0.0),  # focusing on both sides, no clip
    (4.0, 1.0, 0.1),
    (0.0, 0.0, 0.05),  # clip only
]


@pytest.mark.parametrize("gamma_neg,gamma_pos,clip", COMBOS)
def test_matches_official_formula(gamma_neg, gamma_pos, clip):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(6, 5)).astype(np.float32)
    y = (rng.random((6, 5)) < 0.4).astype(np.float32)
    expected = official_asl(y, x, gamma_neg, gamma_pos, clip)
    kwargs = dict(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    assert float(AsymmetricLoss(reduction="sum", **kwargs)(y, x)) == pytest.approx(expected, rel=1e-5)
    assert float(AsymmetricLoss(**kwargs)(y, x)) == pytest.approx(expected / 6, rel=1e-5)
    assert float(AsymmetricLoss(normalize=True, **kwargs)(y, x)) == pytest.approx(expected / 30, rel=1e-5)
    per_example = AsymmetricLoss(reduction=None, **kwargs)(y, x).numpy()
    assert per_example.shape == (6,)
    np.testing.assert_allclose(per_example, [official_asl(y[i], x[i], **kwargs) for i in range(6)], rtol=1e-5)


def test_soft_labels_follow_the_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, size=(4, 3)).astype(np.float32)
    y = rng.random((4, 3)).astype(np.float32)
    assert float(AsymmetricLoss(reduction="sum", gamma_pos=1.0)(y, x)) == pytest.approx(
        official_asl(y, x, gamma_pos=1.0), rel=1e-5
    )


@pytest.mark.parametrize("gamma_neg,gamma_pos,clip", COMBOS)
def test_extreme_logits_give_finite_loss_and_gradients(gamma_neg, gamma_pos, clip):
    values = np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], np.float32)
    x = tf.constant(np.stack([values, values]))
    y = tf.constant(np.stack([np.ones_like(values), np.zeros_like(values)]))
    loss_fn = AsymmetricLoss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, reduction="sum")
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, x)
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(float(loss)) and np.isfinite(grad).all()
    assert float(loss) == pytest.approx(official_asl(y.numpy(), x.numpy(), gamma_neg, gamma_pos, clip), rel=1e-5)
    # Saturated correct predictions cost nothing and push nowhere.
    assert grad[0, -1] == 0.0 and grad[1, 0] == 0.0


def test_focusing_weight_is_not_differentiated():
    rng = np.random.default_rng(2)
    x0 = rng.normal(0, 2, size=(3, 4))
    y = (rng.random((3, 4)) < 0.5).astype(np.float64)
    y[0, 0], y[0, 1] = 1.0, 0.0
    kwargs = dict(gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8)
    _, w0 = _official_terms(y, x0, **kwargs)

    def held(x):  # loss with the weight frozen at x0
        log_lik, _ = _official_terms(y, x, **kwargs)
        return -np.sum(log_lik * w0)

    h = 1e-5
    fd_held = np.zeros_like(x0)
    fd_full = np.zeros_like(x0)
    for idx in np.ndindex(*x0.shape):
        d = np.zeros_like(x0)
        d[idx] = h
        fd_held[idx] = (held(x0 + d) - held(x0 - d)) / (2 * h)
        fd_full[idx] = (official_asl(y, x0 + d, **kwargs) - official_asl(y, x0 - d, **kwargs)) / (2 * h)

    x = tf.constant(x0, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = AsymmetricLoss(reduction="sum", **kwargs)(y, x)
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_allclose(grad, fd_held, rtol=1e-3, atol=1e-5)
    # The check is sensitive: differentiating the weight would give a visibly different gradient.
    assert np.max(np.abs(fd_full - fd_held)) > 1e-2


def test_mixed_float16_policy():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
        y = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], np.float32)
        loss_fn = AsymmetricLoss()
        with tf.GradientTape() as tape:
            logits = model(x)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, model.trainable_variables)
    finally:
        keras.config.set_dtype_policy("float32")
    assert logits.dtype == tf.float16 and loss.dtype == tf.float32
    assert float(loss) == pytest.approx(official_asl(y, logits.numpy().astype(np.float64)) / 5, rel=1e-5)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    # fp16 logits near the fp16 maximum stay finite (the loss never computes in fp16).
    big = tf.constant([[6e4, -6e4]], tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(big)
        loss = loss_fn(tf.constant([[0.0, 1.0]]), big)
    assert np.isfinite(float(loss)) and np.isfinite(tape.gradient(loss, big).numpy()).all()


def test_config_round_trip():
    loss = AsymmetricLoss(gamma_neg=2, gamma_pos=1, clip=0.1, eps=1e-6, normalize=True, reduction="sum", name="asl")
    config = loss.get_config()
    assert config == {
        "name": "asl",
        "reduction": "sum",
        "gamma_neg": 2.0,
        "gamma_pos": 1.0,
        "clip": 0.1,
        "eps": 1e-6,
        "normalize": True,
    }
    assert AsymmetricLoss.from_config(config).get_config() == config
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, AsymmetricLoss) and clone.get_config() == config


@pytest.mark.filterwarnings("ignore:Skipping variable loading:UserWarning")  # optimizer never built
def test_saved_model_reloads_with_loss(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(optimizer="adam", loss=AsymmetricLoss(gamma_neg=2, clip=0.1, normalize=True))
    x = np.random.default_rng(4).normal(size=(4, 4)).astype(np.float32)
    y = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]], np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects: the class is registered
    assert isinstance(reloaded.loss, AsymmetricLoss)
    assert reloaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(
        float(reloaded.loss(y, reloaded(x))), float(model.loss(y, model(x))), rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs", [dict(gamma_neg=-1), dict(gamma_pos=-0.5), dict(clip=1.0), dict(clip=-0.1), dict(eps=0.0)]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="AsymmetricLoss"):
        AsymmetricLoss(**kwargs)


def test_class_count_mismatch():
    with pytest.raises(ValueError, match="same number of classes"):
        AsymmetricLoss()(np.zeros((2, 1), np.float32), np.zeros((2, 3), np.float32))


def test_sum_squared_error():
    t = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], np.float32)
    s = np.array([[1.0, 3.0, 2.0], [1.0, 0.0, -1.0]], np.float32)
    np.testing.assert_allclose(sum_squared_error(t, s).numpy(), [5.0, 5.0])
