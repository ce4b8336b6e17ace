"""`import cpsd_tf` registers the custom Keras objects: a saved `model.keras` reloads in a fresh interpreter.

Each test runs a new interpreter (`sys.executable`), since the registration must not depend on what this
test process has imported already.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cpsd_tf.losses import AsymmetricLoss
from cpsd_tf.models import build_model

SIZE = 16
TINY = {"hidden": 16, "heads": 2, "depth": 1, "mlp_ratio": 2.0}  # as tests/test_models.py
# TensorFlow's C++ start-up chatter, which `import_tensorflow` (and the registration hook) keep off stderr.
CHATTER = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit")

LOAD = """
import sys
import numpy as np
{imports}
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=False)), np.load(sys.argv[3]), atol=1e-5)
print(type(model.loss).__name__, sorted({{type(layer).__name__ for layer in model._flatten_layers()}}))
"""


def _python(code, *args):
    env = {**os.environ}
    env.pop("CPSD_TF_VERBOSE_TF", None)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny transformer-head model compiled with the package's loss (as `train.fit` saves it)."""
    root = tmp_path_factory.mktemp("registration")
    model = build_model("tiny_cnn", "transformer", 3, SIZE, weights=None, head_options=TINY)
    model.compile(optimizer=keras.optimizers.AdamW(), loss=AsymmetricLoss())
    model.optimizer.build(model.trainable_variables)
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    model.save(root / "model.keras")
    return root / "model.keras", root / "x.npy", root / "y.npy"


@pytest.mark.parametrize("imports", ["import cpsd_tf\nimport keras", "import keras\nimport cpsd_tf"])
def test_fresh_interpreter_loads_a_saved_model_after_import_cpsd_tf(saved_model, imports):
    result = _python(LOAD.format(imports=imports), *saved_model)
    assert result.returncode == 0, result.stderr
    loss, layers = result.stdout.split(" ", 1)
    assert loss == "AsymmetricLoss"
    for name in ("ImagePreprocessing", "ClassTokens", "PositionEmbedding", "PerClassLogits"):
        assert name in layers
    if imports.startswith("import cpsd_tf"):  # the `import keras` that loads TensorFlow is kept quiet
        assert not [line for line in result.stderr.splitlines() if any(c in line for c in CHATTER)], result.stderr


def test_without_import_cpsd_tf_the_classes_are_unknown(saved_model):
    """The control: the load above works because of `import cpsd_tf`, not by accident."""
    result = _python(LOAD.format(imports="import keras"), *saved_model)
    assert result.returncode != 0
    assert "Could not locate class 'ImagePreprocessing'" in result.stderr


def test_import_cpsd_tf_loads_neither_tensorflow_nor_keras():
    """The registration waits for Keras: `import cpsd_tf` (and so `cpsd-tf --help`) stays light."""
    result = _python("import sys, cpsd_tf\nprint(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
