"""MirroredStrategy over 2 logical CPU devices trains like one device (run in a fresh process)."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from cpsd_tf import recipe, train
    from cpsd_tf.models import build_model

    r = recipe.from_dict({"run_dir": "r", "data": {"dir": "d"}, "train": {"lr": 1e-2, "warmup": 0}})
    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 16, 3), dtype=np.float32)
    y = (rng.random((16, 5)) < 0.3).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    losses = {}
    for name in ("default", "mirrored"):
        strategy = train.choose_strategy(name)
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_model("tiny_cnn", "linear", 5, 16)
            model.compile(optimizer=train.make_optimizer(r.train, 10), loss=train.make_loss(r.train.loss))
        hist = model.fit(ds, epochs=3, steps_per_epoch=1, verbose=0, shuffle=False)
        losses[name] = [hist.history["loss"], strategy.num_replicas_in_sync]
    print(json.dumps(losses))
    """
)


def test_mirrored_matches_single_device():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = json.loads(proc.stdout.strip().splitlines()[-1])
    (single, n1), (mirrored, n2) = losses["default"], losses["mirrored"]
    assert n1 == 1 and n2 == 2
    assert len(single) == 3
    for a, b in zip(single, mirrored):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (single, mirrored)
