"""Import TensorFlow without its C++ start-up chatter on stderr.

TensorFlow 2.21 logs through absl before `TF_CPP_MIN_LOG_LEVEL` takes effect (oneDNN notice, CUDA probing,
`cuInit` failure on CPU hosts), which would bury our one-line messages. The chatter is written to file
descriptor 2 while TensorFlow loads and first lists its devices, so that descriptor points at /dev/null
for exactly that long; Python exceptions raised meanwhile are still shown (stderr is restored first).
"""

import os
import sys


def import_tensorflow():
    """Import TensorFlow (and initialise its devices) quietly; return the module."""
    if "tensorflow" in sys.modules and getattr(import_tensorflow, "_done", False):
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("CPSD_TF_VERBOSE_TF") == "1":
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
            # Python-side notices (e.g. retracing when several models are evaluated in turn).
            tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    import_tensorflow._done = True
    return tf
