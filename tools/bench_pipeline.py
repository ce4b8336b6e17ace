"""Throughput of the tf.data input pipeline (images/s), printed as one line of JSON.

Writes a synthetic dataset of random-texture JPEGs (256-320 px sides) and measures, after a warm-up:
  decode_resize:   the training pipeline without augmentation (parse, decode, resize, batch);
  augment:         the full augmenting training pipeline (flip + RandAugment 2 ops, magnitude 9 + cutout);
  eval:            the evaluation pipeline (in-order reading, `preprocess_eval`);
  op_<name>:       (with --per-op) the pipeline with RandAugment restricted to one op, num_ops=1.

Numbers per case: `<case>_img_per_s` (wall clock), `<case>_cpu_ms_per_img` (CPU time of this process per
image) and `<case>_img_per_s_if_idle` (= cpus / CPU time per image: the rate with the machine to itself;
an upper bound, since it ignores imperfect parallelism). The 1-minute load average before and after
tells whether other jobs shared the machine.

Usage:
    /work/venv/bin/python tools/bench_pipeline.py [--images 512] [--size 224] [--batch 64] [--per-op]
"""

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np


def texture_jpeg(rng, quality=90):
    """A random-texture JPEG: smooth colour blobs plus fine noise, 256-320 px per side."""
    from PIL import Image

    h, w = (int(v) for v in rng.integers(256, 321, size=2))
    coarse = (rng.random((h // 16 + 1, w // 16 + 1, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(base + rng.integers(-24, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_dataset(out_dir, n, num_classes=20, seed=0):
    from cpsd_tf.data import records

    rng = np.random.default_rng(seed)
    recs = (
        records.Record(
            image=texture_jpeg(rng),
            image_id=f"img{i:05d}",
            labels=[int(c) for c in rng.choice(num_classes, size=int(rng.integers(1, 4)), replace=False)],
        )
        for i in range(n)
    )
    records.write_split(out_dir, "train", [f"c{i}" for i in range(num_classes)], recs, total=n, examples_per_shard=128)


def measure(ds, warmup_batches, measure_images):
    """(images/s wall clock, CPU ms of this process per image) after `warmup_batches` batches.

    CPU time per image is robust to other jobs sharing the machine; `cpus / cpu_s_per_image` is the rate
    the pipeline would reach with the machine to itself.
    """
    it = iter(ds)
    for _ in range(warmup_batches):
        next(it)
    n = 0
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    while n < measure_images:
        x, _ = next(it)
        n += int(x.shape[0])
    wall = time.perf_counter() - start
    return n / wall, 1e3 * (_cpu_seconds() - cpu0) / n


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="synthetic images to write")
    parser.add_argument("--size", type=int, default=224, help="image size S")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--measure", type=int, default=2048, help="images timed per measurement")
    parser.add_argument("--warmup", type=int, default=4, help="batches skipped before timing")
    parser.add_argument("--per-op", action="store_true", help="also time each RandAugment op alone")
    parser.add_argument("--data-dir", default=None, help="reuse/keep the synthetic data here")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cpsd_tf.data import pipeline
    from cpsd_tf.data.augment_config import RANDAUGMENT_OPS, AugmentConfig

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-pipeline-")
        data_dir = tmp.name
    if not os.path.exists(os.path.join(data_dir, "dataset.json")):
        t = time.perf_counter()
        write_dataset(data_dir, args.images)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - t:.1f}s", file=sys.stderr)

    common = dict(image_size=args.size, batch_size=args.batch, repeat=True)
    full = AugmentConfig(flip=True, randaugment={"num_ops": 2, "magnitude": 9}, cutout={"probability": 1.0, "size": 0.5})
    cases = {
        "decode_resize": pipeline.build(data_dir, "train", training=True, augment=None, **common),
        "augment": pipeline.build(data_dir, "train", training=True, augment=full, **common),
        "eval": pipeline.build(data_dir, "train", training=False, **common),
    }
    if args.per_op:
        for name in RANDAUGMENT_OPS:
            cfg = AugmentConfig(flip=False, randaugment={"num_ops": 1, "magnitude": 9, "ops": [name]})
            cases[f"op_{name}"] = pipeline.build(data_dir, "train", training=True, augment=cfg, **common)

    result = {"image_size": args.size, "batch": args.batch, "cpus": os.cpu_count(),
              "load_avg_1m": round(os.getloadavg()[0], 2)}
    cpus = os.cpu_count()
    for name, ds in cases.items():
        rate, cpu_ms = measure(ds, args.warmup, args.measure)
        result[f"{name}_img_per_s"] = round(rate, 1)
        result[f"{name}_cpu_ms_per_img"] = round(cpu_ms, 3)
        result[f"{name}_img_per_s_if_idle"] = round(1e3 * cpus / cpu_ms, 1)
    result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
