"""Measure the scenes regime: does a converged baseline overfit label co-occurrence?

Generates the scenes benchmark with the given knobs, trains a small residual CNN on `train` with
binary cross-entropy until its `val` mAP stops improving (early stopping with patience), restores the
best-val epoch and reports the mAP on `test` (same process as train) and `test_ood` (objects drawn
independently of scenes). The last stdout line is one JSON object with the result.

Self-contained on purpose (its own model and tf.data input); the product's trainer lives elsewhere.

    /work/venv/bin/python tools/scenes_regime.py --data /tmp/scenes-regime            # the defaults
    /work/venv/bin/python tools/scenes_regime.py --data /tmp/s2 --set p_ctx=0.85 --set occluders_max=0 \
        --set occluders_min=0 --set image_size=48
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Data folder (generated unless it already holds the same config+seed).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="A ScenesConfig knob (repeatable).")
    p.add_argument("--seed", type=int, default=0, help="Data seed. Default 0.")
    p.add_argument("--train-seed", type=int, default=0, help="Seed of weights and shuffling. Default 0.")
    p.add_argument("--epochs", type=int, default=150, help="Epoch cap. Default 150.")
    p.add_argument("--patience", type=int, default=12, help="Epochs without a better val mAP before stopping. Default 12.")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate. Default 2e-3.")
    p.add_argument("--batch", type=int, default=64, help="Batch size. Default 64.")
    p.add_argument("--width", type=int, default=24, help="Channels of the first stage (x2, x4 after; 24 gives 0.28 M parameters). Default 24.")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads. Default 2.")
    return p.parse_args(argv)


def scenes_config(pairs):
    from cpsd_tf.data.scenes import ScenesConfig

    kwargs = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        kwargs[key] = value
    return ScenesConfig(**kwargs)  # pydantic converts "0.9" -> 0.9 and rejects unknown keys


def ensure_data(data_dir, config, seed):
    """Generate the data unless `data_dir` already holds exactly this config and seed."""
    from cpsd_tf.data import scenes

    meta_path = Path(data_dir) / "dataset.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text()).get("scenes", {})
        same = meta.get("generator_version") == scenes.GENERATOR_VERSION and meta.get("seed") == seed
        if same and meta.get("config") == config.model_dump():
            print(f"[regime] reusing {data_dir}", file=sys.stderr)
            return None
    return scenes.generate(data_dir, config, seed=seed)


def load_split(tf, data_dir, split, num_classes):
    """Decode a whole split into uint8 images [N, S, S, 3] and multi-hot labels [N, m] (via tf.data)."""
    from cpsd_tf.data import records

    def decode(serialized):
        ex = records.parse_example(serialized)
        image = tf.io.decode_png(ex["image"], channels=3)
        y = tf.minimum(tf.reduce_sum(tf.one_hot(ex["labels"], num_classes, dtype=tf.float32), axis=0), 1.0)
        return ex["index"], image, y

    ds = tf.data.TFRecordDataset(records.shard_paths(data_dir, split)).map(decode).batch(512)
    idx, xs, ys = [], [], []
    for i, x, y in ds.as_numpy_iterator():
        idx.append(i), xs.append(x), ys.append(y)
    order = np.argsort(np.concatenate(idx))
    return np.concatenate(xs)[order], np.concatenate(ys)[order]


def mean_ap(y_true, scores):
    """mAP in percent: mean over classes with >= 1 positive of sklearn's average precision."""
    from sklearn.metrics import average_precision_score

    keep = y_true.sum(axis=0) > 0
    aps = [average_precision_score(y_true[:, j], scores[:, j]) for j in np.flatnonzero(keep)]
    return 100.0 * float(np.mean(aps))


def build_model(keras, image_size, num_classes, width):
    """A small residual CNN: stride-2 stem, then three stages (conv stride 2 + one residual block)."""
    layers = keras.layers

    def conv_bn(x, ch, stride=1):
        x = layers.Conv2D(ch, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    def res_block(x, ch):
        y = conv_bn(x, ch)
        y = layers.Conv2D(ch, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        return layers.ReLU()(layers.Add()([x, y]))

    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = conv_bn(x, width // 2, stride=2)
    for i, ch in enumerate((width, 2 * width, 4 * width)):
        x = conv_bn(x, ch, stride=1 if i == 0 else 2)
        x = res_block(x, ch)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="regime_cnn")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = scenes_config(args.set)
    t0 = time.perf_counter()
    gen = ensure_data(args.data, config, args.seed)
    t_gen = time.perf_counter() - t0

    import keras
    import tensorflow as tf

    from cpsd_tf.data import records

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.train_seed)
    info = records.load_info(args.data)
    m = info.num_classes
    data = {s: load_split(tf, args.data, s, m) for s in ("train", "val", "test", "test_ood")}
    x_train, y_train = data["train"]

    model = build_model(keras, config.image_size, m, args.width)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=args.train_seed, reshuffle_each_iteration=True)
        .batch(args.batch)
        .prefetch(2)
    )

    def predict(split):
        return model.predict(data[split][0], batch_size=256, verbose=0)

    best = {"mAP": -1.0, "epoch": 0, "weights": None}
    history = []
    t_train = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        te = time.perf_counter()
        loss = model.fit(train_ds, epochs=1, verbose=0, shuffle=False).history["loss"][-1]
        val_map = mean_ap(data["val"][1], predict("val"))
        history.append(round(val_map, 2))
        improved = val_map > best["mAP"]
        if improved:
            best = {"mAP": val_map, "epoch": epoch, "weights": model.get_weights()}
        print(
            f"[regime] epoch {epoch:3d} loss {loss:.4f} val mAP {val_map:6.2f}"
            f"{' *' if improved else ''} ({time.perf_counter() - te:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        if epoch - best["epoch"] >= args.patience:
            break
    model.set_weights(best["weights"])
    test_map = mean_ap(data["test"][1], predict("test"))
    ood_map = mean_ap(data["test_ood"][1], predict("test_ood"))
    result = {
        "config": config.model_dump(),
        "seed": args.seed,
        "train_seed": args.train_seed,
        "params": int(model.count_params()),
        "lr": args.lr,
        "batch": args.batch,
        "patience": args.patience,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "val_mAP": round(best["mAP"], 2),
        "test_mAP": round(test_map, 2),
        "test_ood_mAP": round(ood_map, 2),
        "gap": round(test_map - ood_map, 2),
        "val_history": history,
        "generation_seconds": None if gen is None else round(t_gen, 1),
        "train_seconds": round(time.perf_counter() - t_train, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
