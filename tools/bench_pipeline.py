"""CPU cost per image of the augmenting tf.data pipeline against a PIL + NumPy reference on the same JPEG bytes.

Writes COCO-sized random-texture JPEGs (about 640 x 480) and compares, per image size (default 224 and 448):
  tf          the training pipeline (`pipeline.build(training=True, repeat=True)`) with the official
              augmentation of `recipes/coco_resnet101.yaml` (RandAugment 2 ops at magnitude 9, cutout 0.5,
              no flip), tf.data with its default threads;
  pil1, pil2  the reference loop shipped here in 1 and 2 worker processes (`multiprocessing`, spawn): PIL
              decode -> bilinear resize without antialiasing (as the project's) -> the same 14
              RandAugment ops at the same magnitudes (PIL / ImageOps / ImageEnhance) -> cutout (NumPy) ->
              float32 / 255, stacked per batch (like a DataLoader's collate, without sending it back).
Every variant runs one untimed round first (tracing, caches, process start-up), then `--rounds` timed
rounds, interleaved (tf, pil1, pil2, tf, ...), so load from other jobs hits them alike. Each tf round uses a
fresh iterator and drops its first batches (pipeline fill) before timing. Printed per variant: medians of
CPU ms per image (this process for tf, the workers' own CPU time for pil) and wall img/s, and the ratios
`cpu x` = PIL 1-process CPU ms / variant CPU ms (> 1: cheaper per core than PIL) and `wall x` = variant
img/s / PIL 1-process img/s. The 1-minute load average is printed before and after: with other jobs on
the machine wall rates move, CPU ms per image and the ratios of one run are the figures that hold.

`--compare-augment FILE` adds a variant `tf_cmp`: the same pipeline with the augment module loaded from FILE
(e.g. `git show HEAD:cpsd_tf/data/augment.py > /tmp/augment_head.py`), interleaved with the others, so a
before/after of an augmentation change is measured in one run.

`--per-op` adds a table at the first size: per RandAugment op (magnitude 9, random sign), cutout and
decode + resize, the project's CPU ms per image (one op alone in a `Dataset.map` over decoded images,
minus the `identity` row, which is the per-element cost of the map itself) beside PIL's (one worker).

Usage (defaults run in about 2 minutes on 2 busy cores; --per-op adds about 2):
    /work/venv/bin/python tools/bench_pipeline.py [--sizes 224 448] [--images 256] [--rounds 5] [--per-op]
"""

import argparse
import io
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np

# --- the reference: PIL + NumPy, importable by spawned workers (no TensorFlow) -------------------------

MAGNITUDE = 9.0  # the official RandAugment magnitude; ranges as in cpsd_tf.data.augment at magnitude 10:
MAX_ROTATE_DEGREES, MAX_SHEAR, MAX_TRANSLATE, MAX_ENHANCE, MAX_POSTERIZE_DROP = 30.0, 0.3, 0.45, 0.9, 4
FILL = (128, 128, 128)
OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
       "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")


def pil_op(im, name, sign, magnitude=MAGNITUDE):
    """One RandAugment op on a PIL RGB image, at the magnitudes of `cpsd_tf.data.augment`."""
    from PIL import Image, ImageEnhance, ImageOps

    level = magnitude / 10.0
    w, h = im.size
    if name == "identity":
        return im
    if name == "autocontrast":
        return ImageOps.autocontrast(im)
    if name == "equalize":
        return ImageOps.equalize(im)
    if name == "rotate":
        return im.rotate(sign * MAX_ROTATE_DEGREES * level, resample=Image.BILINEAR, fillcolor=FILL)
    if name == "solarize":
        return ImageOps.solarize(im, 256 - 256 * level)
    if name == "posterize":
        return ImageOps.posterize(im, 8 - int(MAX_POSTERIZE_DROP * level))
    enhancers = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                 "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}
    if name in enhancers:
        return enhancers[name](im).enhance(1.0 + sign * MAX_ENHANCE * level)
    if name in ("translate_x", "translate_y"):  # a whole-pixel shift with gray fill, as the project's
        dx = round(sign * MAX_TRANSLATE * level * w) if name == "translate_x" else 0
        dy = round(sign * MAX_TRANSLATE * level * h) if name == "translate_y" else 0
        out = Image.new("RGB", im.size, FILL)
        out.paste(im, (dx, dy))
        return out
    shear = sign * MAX_SHEAR * level
    coeffs = (1, shear, 0, 0, 1, 0) if name == "shear_x" else (1, 0, 0, shear, 1, 0)
    return im.transform(im.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=FILL)


def pil_cutout(im, rng, size=0.5):
    """Erase one square of side `size` x side at a uniform centre (clipped), one random colour."""
    arr = np.array(im)
    h, w = arr.shape[:2]
    ch, cw = round(size * h), round(size * w)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, x0 = max(cy - ch // 2, 0), max(cx - cw // 2, 0)
    arr[y0 : max(cy - ch // 2 + ch, 0), x0 : max(cx - cw // 2 + cw, 0)] = rng.integers(0, 256, 3, dtype=np.uint8)
    return arr


def pil_decode_resize(encoded, size):
    """Decode, then bilinear resize without antialiasing: the project's resize (within 1 grey level).

    (`Image.resize(BILINEAR)`, torchvision's `Resize`, antialiases: ~0.2 ms more per image at 224 px.)
    """
    from PIL import Image

    im = Image.open(io.BytesIO(encoded)).convert("RGB")
    return im.transform((size, size), Image.EXTENT, (0, 0) + im.size, Image.BILINEAR)


def pil_augment(encoded, size, rng, num_ops=2):
    """The official augmentation: decode, resize, RandAugment(num_ops, 9), cutout 0.5 -> float32 [S, S, 3]."""
    im = pil_decode_resize(encoded, size)
    for _ in range(num_ops):
        im = pil_op(im, OPS[int(rng.integers(len(OPS)))], 1.0 if rng.random() < 0.5 else -1.0)
    return pil_cutout(im, rng).astype(np.float32) / 255.0


_JPEGS = []
_RESIZED = {}


def _worker_init(jpegs):
    _JPEGS[:] = jpegs


def _pil_batch(task):
    """Worker task: augment the images `indices` at `size`, stack them; returns (CPU s, images)."""
    size, indices, seed = task
    rng = np.random.default_rng(seed)
    t = time.process_time()
    np.stack([pil_augment(_JPEGS[i], size, rng) for i in indices])
    return time.process_time() - t, len(indices)


def _pil_op_task(task):
    """Worker task: one op (or decode_resize / cutout) over the images; returns CPU ms per image."""
    name, size, n, seed = task
    rng = np.random.default_rng(seed)
    if size not in _RESIZED:
        _RESIZED[size] = [pil_decode_resize(b, size) for b in _JPEGS]
    images = _RESIZED[size]
    t = time.process_time()
    for i in range(n):
        if name == "decode_resize":
            np.asarray(pil_decode_resize(_JPEGS[i % len(_JPEGS)], size), np.float32)
        elif name == "cutout":
            pil_cutout(images[i % len(images)], rng)
        else:
            pil_op(images[i % len(images)], name, 1.0 if rng.random() < 0.5 else -1.0)
    return 1e3 * (time.process_time() - t) / n


# --- synthetic data ------------------------------------------------------------------------------------


def texture_jpeg(rng, quality=90):
    """A COCO-sized random-texture JPEG (640 x 420-480, landscape or portrait): colour blobs plus noise."""
    from PIL import Image

    h, w = 640, int(rng.integers(420, 481))
    if rng.random() < 0.7:
        h, w = w, h
    coarse = (rng.random((h // 24 + 1, w // 24 + 1, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(base + rng.integers(-12, 13, size=(h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_dataset(out_dir, n, num_classes=20, seed=0):
    from cpsd_tf.data import records

    rng = np.random.default_rng(seed)
    jpegs = [texture_jpeg(rng) for _ in range(n)]
    labels = [[int(c) for c in rng.choice(num_classes, size=int(rng.integers(1, 4)), replace=False)] for _ in jpegs]
    recs = (records.Record(image=b, image_id=f"img{i:05d}", labels=y) for i, (b, y) in enumerate(zip(jpegs, labels)))
    records.write_split(out_dir, "train", [f"c{i}" for i in range(num_classes)], recs, total=n, examples_per_shard=128)


def read_jpegs(data_dir):
    import tensorflow as tf

    from cpsd_tf.data import records

    ds = tf.data.TFRecordDataset(records.shard_paths(data_dir, "train")).map(records.parse_example)
    return [bytes(ex["image"].numpy()) for ex in ds]


# --- measurement ---------------------------------------------------------------------------------------


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_tf(ds, images, drop_batches):
    """(CPU ms per image, img/s) over `images` images of a fresh iterator, after `drop_batches` batches."""
    it = iter(ds)
    for _ in range(drop_batches):
        next(it)
    n, cpu0, t0 = 0, _cpu_seconds(), time.perf_counter()
    while n < images:
        n += int(next(it)[0].shape[0])
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    del it  # cancels the prefetching threads before the next variant runs
    return 1e3 * cpu / n, n / wall


def time_pil(pool, size, images, batch, seed):
    """(CPU ms per image summed over the workers, img/s) for `images` images in batches of `batch`."""
    tasks = [(size, [(i + j) % len(_JPEGS) for j in range(batch)], seed + i) for i in range(0, images, batch)]
    t0 = time.perf_counter()
    out = pool.map(_pil_batch, tasks, chunksize=1)
    wall = time.perf_counter() - t0
    n = sum(k for _, k in out)
    return 1e3 * sum(c for c, _ in out) / n, n / wall


def compare(variants, rounds):
    """Interleaved rounds of `variants` {name: fn() -> (cpu_ms, img_s)}; one untimed round first. Medians."""
    for fn in variants.values():
        fn()
    samples = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(fn())
    return {name: (statistics.median(c for c, _ in s), statistics.median(r for _, r in s), s)
            for name, s in samples.items()}


def per_op_table(pool, jpegs, size, n, rounds, batch):
    """{row: (project CPU ms, PIL CPU ms)} per op at `size`, the op alone over decoded images."""
    import tensorflow as tf

    from cpsd_tf.data import augment as aug
    from cpsd_tf.data import preprocess

    decoded = np.stack([preprocess.decode_resize(tf.constant(b), size).numpy() for b in jpegs])
    seed_key = tf.constant(12345, tf.int64)

    def dataset(name):
        if name == "decode_resize":
            src = tf.data.Dataset.from_tensor_slices(jpegs)
            fn = lambda i, b: preprocess.to_unit(preprocess.decode_resize(b, size))  # noqa: E731
        else:
            src = tf.data.Dataset.from_tensor_slices(decoded)
            if name == "cutout":
                op = lambda x, s: aug.cutout(x, s, probability=1.0, size=0.5)  # noqa: E731
            else:
                op = lambda x, s: aug.randaugment(x, s, num_ops=1, magnitude=MAGNITUDE, ops=(name,))  # noqa: E731
            fn = lambda i, x: op(preprocess.to_unit(x), tf.stack([seed_key, i]))  # noqa: E731
        ds = src.repeat().enumerate().map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        return ds.map(lambda x: (x, 0)).batch(batch).prefetch(tf.data.AUTOTUNE)

    rows = ("identity",) + OPS[1:] + ("cutout", "decode_resize")
    variants = {}
    for name in rows:
        ds = dataset(name)
        variants[f"tf:{name}"] = lambda ds=ds: time_tf(ds, n, 2)
        variants[f"pil:{name}"] = lambda name=name: (pool.apply(_pil_op_task, ((name, size, n, 0),)), 0.0)
    med = compare(variants, rounds)
    return {name: (med[f"tf:{name}"][0], med[f"pil:{name}"][0]) for name in rows}


def _load_module(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("augment_compared", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448], help="image sizes S")
    parser.add_argument("--images", type=int, default=256, help="JPEGs to write (and images per 224 px round)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (medians)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--per-op", action="store_true", help="also the per-op table at the first size")
    parser.add_argument("--data-dir", default=None, help="reuse/keep the synthetic data here")
    parser.add_argument("--compare-augment", metavar="FILE", default=None,
                        help="also time the pipeline with this augment.py (e.g. an older version)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from cpsd_tf.data import pipeline
    from cpsd_tf.data.augment_config import AugmentConfig

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-pipeline-")
        data_dir = tmp.name
    if not os.path.exists(os.path.join(data_dir, "dataset.json")):
        t = time.perf_counter()
        write_dataset(data_dir, args.images)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    jpegs = read_jpegs(data_dir)
    _worker_init(jpegs)
    official = AugmentConfig(flip=False, randaugment={"num_ops": 2, "magnitude": 9},
                             cutout={"probability": 1.0, "size": 0.5})
    load0 = os.getloadavg()
    print(f"# {len(jpegs)} JPEGs, mean {np.mean([len(b) for b in jpegs]) / 1e3:.0f} kB; {os.cpu_count()} CPUs; "
          f"TF {tf.__version__}, tf.data default threads; load avg 1m/5m {load0[0]:.2f}/{load0[1]:.2f}")
    ctx = multiprocessing.get_context("spawn")
    pools = {k: ctx.Pool(k, initializer=_worker_init, initargs=(jpegs,)) for k in (1, 2)}
    try:
        for size in args.sizes:
            images = max(args.batch, args.images * 224 // size // args.batch * args.batch)  # ~ equal time per size
            ds = pipeline.build(data_dir, "train", image_size=size, batch_size=args.batch, training=True,
                                augment=official, repeat=True, seed=0)
            seeds = iter(range(10**9))
            variants = {"tf": lambda ds=ds, images=images: time_tf(ds, images, 3)}
            if args.compare_augment:
                saved, pipeline.aug = pipeline.aug, _load_module(args.compare_augment)
                try:  # `build` traces the map functions now, with the module it finds in `pipeline.aug`
                    other = pipeline.build(data_dir, "train", image_size=size, batch_size=args.batch, training=True,
                                           augment=official, repeat=True, seed=0)
                finally:
                    pipeline.aug = saved
                variants["tf_cmp"] = lambda ds=other, images=images: time_tf(ds, images, 3)
            variants |= {
                "pil1": lambda size=size, images=images: time_pil(pools[1], size, images, args.batch, next(seeds)),
                "pil2": lambda size=size, images=images: time_pil(pools[2], size, images, args.batch, next(seeds)),
            }
            med = compare(variants, args.rounds)
            ref_cpu, ref_rate = med["pil1"][0], med["pil1"][1]
            print(f"\n## {size} px, official augmentation, {images} images x {args.rounds} rounds")
            header = f"{'variant':8s} {'CPU ms/img':>10s} {'img/s':>7s} {'cpu x':>6s} {'wall x':>6s}"
            print(f"{header}   CPU ms/img per round")
            for name, (cpu, rate, s) in med.items():
                per_round = " ".join(f"{c:.2f}" for c, _ in s)
                print(f"{name:8s} {cpu:10.2f} {rate:7.1f} {ref_cpu / cpu:6.2f} {rate / ref_rate:6.2f}   {per_round}")
        if args.per_op:
            size = args.sizes[0]
            table = per_op_table(pools[1], jpegs, size, args.images, args.rounds, args.batch)
            base = table["identity"][0]
            print(f"\n## per op at {size} px (CPU ms per image; project ops net of the identity row)")
            print(f"{'op':14s} {'project':>8s} {'PIL':>6s} {'PIL/project':>11s}")
            for name, (tf_ms, pil_ms) in table.items():
                net = tf_ms if name in ("identity", "decode_resize") else tf_ms - base
                print(f"{name:14s} {net:8.3f} {pil_ms:6.3f} {pil_ms / max(net, 1e-3):11.2f}")
    finally:
        for pool in pools.values():
            pool.close()
            pool.join()
    load1 = os.getloadavg()
    print(f"\n# load avg 1m/5m after: {load1[0]:.2f}/{load1[1]:.2f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
