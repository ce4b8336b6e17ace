"""Import TensorFlow without its C++ start-up chatter on stderr; register cpsd_tf's Keras objects.

TensorFlow 2.21 logs through absl before `TF_CPP_MIN_LOG_LEVEL` takes effect (oneDNN notice, CUDA probing,
`cuInit` failure on CPU hosts), which would bury our one-line messages. The chatter is written to file
descriptor 2 while TensorFlow loads and first lists its devices, so that descriptor points at /dev/null
for exactly that long; Python exceptions raised meanwhile are still shown (stderr is restored first).
`CPSD_TF_VERBOSE_TF=1` keeps the chatter.

`import cpsd_tf` calls `register_when_keras_loads()`: the custom layers and losses (registered under the
package name "cpsd_tf") become known to Keras as soon as Keras is loaded, so a `model.keras` written by
cpsd-tf reloads with a plain `keras.saving.load_model(path)`. `import cpsd_tf` itself stays light: it
does not import TensorFlow or Keras, it waits for the first `import keras` (whoever makes it) and
registers right after it (quietly, when that import is the one that loads TensorFlow).
"""

import contextlib
import importlib
import os
import sys
import warnings

# The modules whose `@keras.saving.register_keras_serializable(package="cpsd_tf")` classes a saved model
# may name: layers (every model) and losses (a compiled model names its loss).
REGISTERING_MODULES = ("cpsd_tf.models.layers", "cpsd_tf.losses")


def _verbose():
    return os.environ.get("CPSD_TF_VERBOSE_TF") == "1"


@contextlib.contextmanager
def _stderr_to_devnull():
    """Point file descriptor 2 at /dev/null for the block (restored before any exception propagates)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _settle(tf):
    """List the devices (the last chatter) and mute TensorFlow's Python-side notices."""
    tf.config.list_physical_devices()
    # Python-side notices (e.g. retracing when several models are evaluated in turn).
    tf.get_logger().setLevel("ERROR")
    import_tensorflow._done = True


def import_tensorflow():
    """Import TensorFlow (and initialise its devices) quietly; return the module."""
    if "tensorflow" in sys.modules and getattr(import_tensorflow, "_done", False):
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _verbose():
        import tensorflow as tf

        return tf
    with _stderr_to_devnull():
        import tensorflow as tf

        _settle(tf)
    return tf


def register_keras_objects():
    """Import the modules that register cpsd_tf's custom Keras objects (this imports Keras)."""
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _KerasImportHook:
    """A `sys.meta_path` finder that lets the first `import keras` run, then registers cpsd_tf's objects.

    It finds Keras with the other finders and wraps its loader's `exec_module`: Keras loads as usual
    (with fd 2 muted if that loads TensorFlow), the hook leaves `sys.meta_path`, then
    `register_keras_objects()` runs. A failed Keras import leaves the hook in place for the next try. A
    failed registration is a warning, not an error: raised there, it would undo the Keras import (and
    TensorFlow, which imports Keras inside a `try`, would hide it).
    """

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or isinstance(spec.loader, type) or not hasattr(spec.loader, "exec_module"):
            return spec  # no loader instance of its own to wrap
        spec.loader.exec_module = self._wrap(spec.loader.exec_module)
        return spec

    def _wrap(self, exec_module):
        def exec_keras(module):
            # Keras's TensorFlow backend imports TensorFlow: mute its start-up as `import_tensorflow` does.
            quiet = "tensorflow" not in sys.modules and not _verbose()
            if quiet:
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            with _stderr_to_devnull() if quiet else contextlib.nullcontext():
                exec_module(module)
                if quiet and "tensorflow" in sys.modules:
                    _settle(sys.modules["tensorflow"])
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                register_keras_objects()
            except Exception as e:  # see the class docstring
                warnings.warn(f"cpsd_tf could not register its Keras objects ({type(e).__name__}: {e}); "
                              f"keras.saving.load_model will not know them", stacklevel=2)

        return exec_keras


def register_when_keras_loads():
    """Register cpsd_tf's custom Keras objects now if Keras is loaded, else right after `import keras`.

    Called by `import cpsd_tf`; installs at most one hook.
    """
    if "keras" in sys.modules:
        register_keras_objects()
    elif not any(isinstance(finder, _KerasImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _KerasImportHook())
