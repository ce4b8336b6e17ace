"""Teacher logits of every augmented view, computed once: `distill.teacher_logits: cached_views`.

The student must be distilled towards what the teachers say about the very view it sees (the official code
runs the teachers online on the student's batch). The repeated training stream of `pipeline.build` makes
the view of record i in data pass e a pure function of (seed, e, i) (`preprocess.view_seed`), so the
teachers' merged logits (ρ) of every (pass, record) can be computed once, before training, and shared by
every student trained on the same stream (CPSD, CGPD, DGPD, SD, random):

    table[e, i, :] = ρ(teachers of the set on view (e, i))          # float16 [E, N, m] per teacher set

and a training step joins them to its batch by (pass, index), exactly like `cached` mode joins the clean
logits by index:

    ds = pipeline.build(..., training=True, repeat=True, with_index=True, with_pass=True)
    fn = targets_fn([np.load(p) for p in paths])
    ds = ds.map(lambda f, y: (f["image"], fn(y, f["pass"], f["index"])))

E = the number of data passes the training run reads: ceil(epochs * steps_per_epoch * batch_size / N)
(`passes_needed`; with `drop_remainder` a fit epoch reads a little less than one pass, so E <= epochs).

Cost and memory. Computing the tables costs one forward pass of every teacher per view: E * N * 2k
teacher forward passes, against E * N * 2k forward passes *per student* in `online` mode (plus their
per-step overhead). Storage is E * N * m * 2 bytes per set in float16: 7 MB for the scenes benchmark
(E=60, N=2,000, m=30), but 1.05 GB per set for COCO-2014 (E=80, N=82,081, m=80), 2.1 GB for CPSD's two
sets; `targets_fn` holds tables of up to 1 GB in all as float32 tensors (float16 gathers are slow on CPUs
without AVX-512), larger ones in their stored float16 (cast after the gather), so a COCO run needs ~2.1 GB
of RAM for them. The tables are written through a
memory-mapped temporary file, so computing them needs no more RAM than one batch. float16 rounds logits to
~3 significant digits (|error| <= 2^-11 relative; 0.004 at |logit| = 8): far below the spread of the
squared-error target, and `dtype="float32"` is offered for exact checks.

Mixed views (`distill.views`: mixup, cutmix, mosaic) depend on the batch they are mixed in, so their
targets are stored per batch instead: the training stream is deterministic, batch t is mixed with the seed
of t (`pipeline.build(mix=...)`), and `compute_steps` runs the teachers on its first T batches:

    table[t, b, :] = ρ(teachers of the set on row b of mixed batch t)   # float16 [T, B, m] per teacher set

joined by `step_targets_fn` on the batch's position (`with_step`). T = the students' epochs x steps per
epoch, so the size is about that of the per-view tables (T·B ≈ E·N).

Limits: a table captured by a `tf.data` function travels with the dataset graph, which TensorFlow caps at
2 GB when it has to serialise it (e.g. some `tf.distribute` strategies); keep COCO-sized tables out of
multi-worker strategies, or split the passes.
"""

import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

DTYPES = ("float16", "float32")
_FLOAT32_LIMIT = 1 << 30  # bytes: view tables up to this size are held in memory as float32


def passes_needed(num_images: int, batch_size: int, steps_per_epoch: int, epochs: int) -> int:
    """Data passes a training run of `epochs` x `steps_per_epoch` batches reads from a stream of N images."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, received {num_images}")
    return max(1, math.ceil(int(epochs) * int(steps_per_epoch) * int(batch_size) / int(num_images)))


def inverse_order(subsets, num_classes):
    """int32 [m]: column of class c in the concatenated teacher outputs (ρ as one gather).

    Every class must be in exactly one subset (None = all classes).
    """
    order = np.concatenate([np.arange(num_classes) if s is None else np.asarray(s, np.int64) for s in subsets])
    counts = np.bincount(order, minlength=num_classes) if order.size else np.zeros(num_classes, np.int64)
    if order.size != num_classes or (order < 0).any() or (order >= num_classes).any() or not np.all(counts == 1):
        raise ValueError(f"teacher class subsets must cover 0..{num_classes - 1} exactly once, received {subsets}")
    return np.argsort(order).astype(np.int32)


def merged_logits_fn(models, subsets, num_classes):
    """A tf.function images [B, S, S, 3] -> float32 [B, m]: the set's teachers run and merged by class."""
    import tensorflow as tf

    if len(models) != len(subsets):
        raise ValueError(f"{len(models)} teacher models but {len(subsets)} class subsets")
    inverse = tf.constant(inverse_order(subsets, num_classes))

    @tf.function(reduce_retracing=True)
    def run(images):
        outputs = [tf.cast(mdl(images, training=False), tf.float32) for mdl in models]
        return tf.gather(tf.concat(outputs, axis=-1), inverse, axis=-1)

    return run


def compute(
    teacher_sets,
    data_dir,
    split,
    *,
    passes: int,
    image_size: int,
    augment,
    seed: int,
    batch_size: int,
    num_classes: int,
    out_paths: Sequence,
    subset: Optional[Sequence[int]] = None,
    images: str = "all",
    dtype: str = "float16",
    progress: bool = True,
):
    """Run every teacher set on every view of passes 0..passes-1 and store the merged logits per set.

    Args:
        teacher_sets: list of (list of loaded Keras teacher models, list of class-index subsets: one per
            model, None = all classes), one entry per teacher set (e.g. CGP, DGP).
        data_dir, split: the training data (as given to `pipeline.build`).
        passes: int >= 1, data passes E to cover (`passes_needed`).
        image_size, augment, seed: exactly the training stream's `image_size`, `augment`
            (`AugmentConfig` or None) and `seed`.
        batch_size: int, images per teacher forward pass.
        num_classes: int, m.
        out_paths: one `.npy` path per teacher set; each gets an array [E, N, m] of `dtype`, row
            [e, i] = merged logits of record `index` i in pass e. Written to a temporary name, then
            renamed: a path exists only when complete.
        subset, images: the training stream's `subset` / `images` (records it never yields keep zeros).
        dtype: "float16" (default) or "float32".
        progress: bool, show a progress bar over passes (`cpsd_tf.progress`, on stderr). Defaults to True.

    Returns:
        list of `Path`, the written `out_paths`.
    """
    from cpsd_tf.data import pipeline, records

    _check_outputs(teacher_sets, out_paths, dtype)
    passes, num_classes = int(passes), int(num_classes)
    if passes < 1:
        raise ValueError(f"passes must be >= 1, received {passes}")
    info = records.load_info(data_dir)
    if info.num_classes != num_classes:
        raise ValueError(f"{data_dir} has {info.num_classes} classes, num_classes is {num_classes}")
    n = int(info.splits[split])
    runners = [merged_logits_fn(models, subsets, num_classes) for models, subsets in teacher_sets]

    from cpsd_tf.progress import progress_bar

    def fill(tables):
        label = f"[view targets] {passes} passes x {n} views"
        bar = progress_bar(range(passes), label=label) if progress else _nullbar(range(passes))
        with bar:
            for e in bar:
                views = pipeline.build_views(data_dir, split, e, image_size=image_size, augment=augment, seed=seed,
                                             batch_size=batch_size, subset=subset, images=images)
                for x, index in views:
                    index = index.numpy()
                    for run, table in zip(runners, tables):
                        table[e, index] = run(x).numpy()

    return _write_tables(out_paths, (passes, n, num_classes), dtype, fill)


def compute_steps(teacher_sets, stream, *, steps: int, batch_size: int, num_classes: int, out_paths: Sequence,
                  dtype: str = "float16", progress: bool = True):
    """Run every teacher set on the first `steps` batches of a (mixed) training stream; store them by (t, row).

    Mixed views (`cpsd_tf.views`) depend on the batch they are mixed in, so their targets are stored per
    batch: row [t, b] = the merged logits of row b of batch t of `stream`. The students' stream must yield
    the very same batches: `train.training_stream(..., mix=..., with_step=True)`, deterministic, as `fit`
    builds it, joined by `step_targets_fn`.

    Args:
        teacher_sets: as in `compute`.
        stream: a `tf.data.Dataset` of `(images [B, S, S, 3], labels)` or `({"image", "step"}, labels)`
            batches (the step must count 0, 1, 2, ...), deterministic, B = `batch_size` (drop_remainder).
        steps: int >= 1, batches T to cover (the students' epochs x steps per epoch).
        batch_size: int, B.
        num_classes: int, m.
        out_paths: one `.npy` path per teacher set; each gets an array [T, B, m] of `dtype` (written to a
            temporary name, then renamed).
        dtype: "float16" (default) or "float32".
        progress: bool, show a progress bar over batches. Defaults to True.

    Returns:
        list of `Path`, the written `out_paths`.
    """
    _check_outputs(teacher_sets, out_paths, dtype)
    steps, batch_size, num_classes = int(steps), int(batch_size), int(num_classes)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, received {steps}")
    runners = [merged_logits_fn(models, subsets, num_classes) for models, subsets in teacher_sets]

    from cpsd_tf.progress import progress_bar

    def fill(tables):
        label = f"[view targets] {steps} mixed batches of {batch_size}"
        bar = progress_bar(range(steps), label=label) if progress else _nullbar(range(steps))
        batches = iter(stream)
        with bar:
            for t in bar:
                x = next(batches)[0]
                if isinstance(x, dict):  # `with_step`: check the stream's own count
                    if int(x["step"][0]) != t:
                        raise ValueError(f"the stream's batch {t} says it is batch {int(x['step'][0])}")
                    x = x["image"]
                if int(x.shape[0]) != batch_size:
                    raise ValueError(f"batch {t} of the stream has {x.shape[0]} images, expected {batch_size}")
                for run, table in zip(runners, tables):
                    table[t] = run(x).numpy()

    return _write_tables(out_paths, (steps, batch_size, num_classes), dtype, fill)


def _check_outputs(teacher_sets, out_paths, dtype):
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, received {dtype!r}")
    if len(out_paths) != len(teacher_sets):
        raise ValueError(f"{len(teacher_sets)} teacher sets but {len(out_paths)} output paths")


def _write_tables(out_paths, shape, dtype, fill):
    """Create one memory-mapped table `shape` per path under a temporary name, `fill(tables)`, check that
    every value is finite, then rename: a path exists only when complete."""
    out_paths = [Path(p) for p in out_paths]
    tmp_paths = [p.with_name(f".{p.stem}.tmp-{os.getpid()}.npy") for p in out_paths]
    try:
        tables = []
        for path, tmp in zip(out_paths, tmp_paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            tables.append(np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape))
        fill(tables)
        for table, path in zip(tables, out_paths):
            if not np.isfinite(table).all():
                raise ValueError(f"teacher logits for {path} hold NaN or inf")
            table.flush()
        del tables
        for tmp, path in zip(tmp_paths, out_paths):
            os.replace(tmp, path)
    finally:
        for tmp in tmp_paths:
            tmp.unlink(missing_ok=True)
    return out_paths


class _nullbar:
    def __init__(self, iterable):
        self.iterable = iterable

    def __enter__(self):
        return self

    def __iter__(self):
        return iter(self.iterable)

    def __exit__(self, *exc):
        return False


def targets_fn(tables):
    """(labels y [B, m], pass e [B], index i [B]) -> float32 [y | table_1[e, i] | table_2[e, i] | …].

    The (pass, index) join of `compute`'s tables, mirroring `distill.cached_targets_fn` (which joins by
    index alone). Tables are arrays [E, N, m] (float16 or float32), held as float32 up to 1 GB in all, else
    in their dtype; the gathered rows are cast to float32. An index >= N is an error (InvalidArgument); a
    pass >= E (only ever read ahead by the pipeline, never trained on, when E = `passes_needed`) takes the
    rows of pass E - 1.
    Works in `Dataset.map` and in `tf.function`.
    """
    import tensorflow as tf

    constants = _constants(tables)
    last = min(int(np.asarray(t).shape[0]) for t in tables) - 1 if tables else 0

    def targets(y, pass_, index):
        # The input pipeline reads ahead (parallel map, prefetch) past the last step of training, into a
        # pass that no step consumes: such elements get the last pass's rows instead of an error.
        pass_ = tf.minimum(tf.cast(pass_, tf.int64), last)
        at = tf.stack([pass_, tf.cast(index, tf.int64)], axis=-1)
        parts = [tf.cast(y, tf.float32)] + [tf.cast(tf.gather_nd(c, at), tf.float32) for c in constants]
        return tf.concat(parts, axis=-1)

    return targets


def step_targets_fn(tables):
    """(labels y [B, m], step t [B]) -> float32 [y | table_1[t, row] | table_2[t, row] | …].

    The (batch, row) join of `compute_steps`' tables [T, B, m]: row b of batch t of the training stream
    gets row [t, b]. Steps past T - 1 (read ahead by the pipeline, never trained on) take the last batch's
    rows. Works in `Dataset.map` and in `tf.function`.
    """
    import tensorflow as tf

    constants = _constants(tables)
    last = min(int(np.asarray(t).shape[0]) for t in tables) - 1 if tables else 0

    def targets(y, step):
        step = tf.minimum(tf.cast(step, tf.int64), last)
        at = tf.stack([step, tf.range(tf.shape(step, out_type=tf.int64)[0])], axis=-1)
        parts = [tf.cast(y, tf.float32)] + [tf.cast(tf.gather_nd(c, at), tf.float32) for c in constants]
        return tf.concat(parts, axis=-1)

    return targets


def _constants(tables):
    """The tables [E or T, N or B, m] as tf constants: float16 ones up to 1 GB in all as float32 (float16
    gathers fall back to slow kernels on CPUs without AVX-512), larger ones (COCO: ~1 GB per set) as stored."""
    import tensorflow as tf

    constants = []
    total = sum(np.asarray(t).size for t in tables)
    for t in tables:
        t = np.asarray(t)
        if t.ndim != 3:
            raise ValueError(f"view target tables must be 3-D ([passes, N, m] or [steps, B, m]), "
                             f"received shape {t.shape}")
        if t.dtype == np.float16 and total * 4 <= _FLOAT32_LIMIT:
            t = t.astype(np.float32)
        constants.append(tf.constant(t))
    return constants
