"""Shared model-test helpers (keras-hub `run_model_saving_test` style)."""

import keras
import numpy as np

import cpsd_tf.models  # noqa: F401  (registers the custom layers used by saved models)


def assert_save_reload_equal(model, x, tmp_path, atol=1e-5):
    """Save `model` to a `.keras` file, reload it with plain `keras.saving.load_model`, compare outputs on `x`.

    Returns the reloaded model.

    Example:
        reloaded = assert_save_reload_equal(model, images, tmp_path)
    """
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = keras.ops.convert_to_numpy(reloaded(x, training=False))
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=1e-5)
    assert [w.shape for w in reloaded.weights] == [w.shape for w in model.weights]
    return reloaded
