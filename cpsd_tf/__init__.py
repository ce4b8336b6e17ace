"""cpsd-tf: Complementary Parallel Self-Distillation for multi-label image classification.

Importing the package registers its custom Keras objects (layers, losses) as soon as Keras is loaded,
so a `model.keras` written by cpsd-tf reloads with a plain `keras.saving.load_model(path)`:

    import cpsd_tf  # noqa: F401  (registers the custom objects)
    import keras
    model = keras.saving.load_model("runs/demo/student/model.keras")

The package itself imports neither TensorFlow nor Keras (see `cpsd_tf.quiet`), so `cpsd-tf --help` stays fast.
"""

from cpsd_tf.quiet import register_when_keras_loads

__version__ = "0.1.0"

register_when_keras_loads()  # last: registering may import submodules, which find the package complete
