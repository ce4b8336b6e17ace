"""Does this machine's GPU train the recipe's model, and how fast? Devices, strategy, img/s of two steps.

    python tools/gpu_check.py --recipe recipes/coco_resnet101_tf.yaml [--steps 20] [--batch 32]

Prints the visible devices, the `tf.distribute` strategy `train.strategy` picks here, then (with a GPU)
the images per second of one baseline training step and one student step with stored teacher targets
(`cached_views` / `cached_clean`: ASL + squared error to both teacher sets), at the recipe's image size and
architecture with `train.mixed_precision: true`, on random images (no data set needed). Median of
`--steps` timed steps after a warm-up that includes tracing. Without a GPU it says so and exits 0
(CI runs it in that form; `--cpu` measures on the CPU instead, to check the tool itself).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="recipe YAML (architecture, image size, batch size)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key (repeatable)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case (default 20)")
    parser.add_argument("--batch", type=int, help="global batch (default: the recipe's train.batch_size)")
    parser.add_argument("--cpu", action="store_true",
                        help="measure on the CPU when there is no GPU (checks the tool itself; the figures mean little)")
    return parser.parse_args(argv)


def time_steps(model, loss, images, targets, steps):
    """Median seconds of one `train_on_batch` over `steps`, after two warm-up steps (tracing)."""
    model.compile(optimizer="sgd", loss=loss)
    for _ in range(2):
        model.train_on_batch(images, targets)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(images, targets)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf.errors import UserError

    try:
        r = recipe_mod.load(args.recipe, list(args.overrides))
    except UserError as e:
        print(f"Error: {e.format_message()}", file=sys.stderr)
        return 2
    from cpsd_tf.quiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    from cpsd_tf import multiworker, train

    multiworker.init(r)
    gpus = tf.config.list_physical_devices("GPU")
    print("devices: " + ", ".join(f"{d.device_type}:{d.name.split(':')[-1]}" for d in tf.config.list_physical_devices()))
    strategy = train.choose_strategy(r.train.strategy)
    print(f"strategy (train.strategy={r.train.strategy}): {type(strategy).__name__}, "
          f"{strategy.num_replicas_in_sync} replica(s)")
    if not gpus and not args.cpu:
        print("no GPU visible to TensorFlow: nothing to measure here (check the CUDA driver and "
              "`python -c 'import tensorflow as tf; print(tf.config.list_physical_devices())'`)")
        return 0

    import keras
    import numpy as np

    from cpsd_tf import distill
    from cpsd_tf.models import build_model

    keras.mixed_precision.set_global_policy("mixed_float16")
    m, size = 80, r.data.image_size
    batch = args.batch or r.train.batch_size
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    labels = (rng.random((batch, m)) < 0.05).astype(np.float32)
    teacher_targets = rng.normal(size=(batch, 2 * m)).astype(np.float32)
    print(f"{r.model.backbone} + {r.model.head}, {size} px, batch {batch}, mixed_float16, {args.steps} steps each")
    results = {}
    for case, loss, targets in (
        ("baseline", train.make_loss(r.train.loss), labels),
        ("student (stored targets)", distill.make_loss(r, m, ["cgp", "dgp"]),
         np.concatenate([labels, teacher_targets], axis=-1)),
    ):
        with strategy.scope():
            model = build_model(r.model.backbone, r.model.head, m, size, weights=None,
                                head_options=r.model.head_options, class_names=[f"c{i}" for i in range(m)])
            seconds = time_steps(model, loss, images, targets, args.steps)
        results[case] = seconds
        print(f"{case}: {1000 * seconds:.1f} ms/step, {batch / seconds:.0f} img/s")
    ratio = results["student (stored targets)"] / results["baseline"]
    print(f"student / baseline step time: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
