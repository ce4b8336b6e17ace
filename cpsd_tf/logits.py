"""`cpsd-tf logits`: run every teacher of a set over a split and merge their logits by class (the paper's ρ).

`logits/<set>.npy` is a float32 array [N_train, m]: row = the record's `index`, column = class. A teacher
of cluster C_t predicts |C_t| columns; ρ puts them back at the class indices of C_t, and every class must
be written exactly once. Sets: `cgp` and `dgp` (the partition's teachers), `random` (teachers of a random
partition, for the ablation) and `baseline` (the baseline as the only teacher: SD). Logits of the
evaluation splits (for the teacher ensembles) go to `logits/eval/<set>-<split>.npy`.
"""

from pathlib import Path

import click
import numpy as np

from cpsd_tf import io, teachers, train
from cpsd_tf.data import prepare, records
from cpsd_tf.errors import UserError

LOGITS_DIR = "logits"


def logits_path(run_dir, teacher_set, split=None):
    """Where a set's merged logits live: the train split at the contract path, others under eval/."""
    base = Path(run_dir) / LOGITS_DIR
    return base / f"{teacher_set}.npy" if split is None else base / "eval" / f"{teacher_set}-{split}.npy"


def merge(parts, num_rows, num_classes):
    """ρ: place each teacher's columns at its classes; every class exactly once, no NaN.

    Args:
        parts: list of (class indices or None for all, logits [num_rows, len(indices)]).
        num_rows: int, N.
        num_classes: int, m.

    Example:
        merge([([2, 0], a), ([1], b)], n, 3)[:, 2] is a[:, 0]
    """
    merged = np.zeros((num_rows, num_classes), np.float32)
    written = np.zeros(num_classes, np.int64)
    for subset, logits in parts:
        cols = np.arange(num_classes) if subset is None else np.asarray(subset, np.int64)
        logits = np.asarray(logits, np.float32)
        if logits.shape != (num_rows, len(cols)):
            raise ValueError(f"teacher logits have shape {logits.shape}, expected {(num_rows, len(cols))}")
        merged[:, cols] = logits
        np.add.at(written, cols, 1)
    if not np.all(written == 1):
        bad = {int(c): int(written[c]) for c in np.flatnonzero(written != 1)}
        raise ValueError(f"merged logits: classes not written exactly once (class: times) {bad}")
    if not np.isfinite(merged).all():
        raise ValueError("merged logits hold NaN or inf")
    return merged


def _check_index_order(data_dir, split, n):
    """Evaluation batches come in shard order; make sure that is `index` order 0..N-1."""
    tf = records._tf()
    spec = {"index": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(records.shard_paths(data_dir, split)).batch(4096)
    index = np.concatenate([b["index"] for b in ds.map(lambda s: tf.io.parse_example(s, spec)).as_numpy_iterator()])
    if not np.array_equal(index, np.arange(n)):
        raise UserError(f"{data_dir}: split '{split}' records are not stored in index order 0..{n - 1}")


def predict_set(recipe, run_dir, teacher_set, split):
    """Merged logits [N, m] of a teacher set on a split (deterministic, non-augmented view)."""
    from cpsd_tf.data import pipeline
    from cpsd_tf.evaluate import load_model

    data = recipe.data
    info = records.load_info(data.dir)
    n = info.splits[split]
    _check_index_order(data.dir, split, n)
    ds = pipeline.build(data.dir, split, image_size=data.image_size, batch_size=128, training=False,
                        normalize=recipe.model.normalize)
    parts = []
    for name, model_dir, subset in teachers.teachers_of(recipe, run_dir, teacher_set):
        if not train.is_done(model_dir):
            raise UserError(f"teacher '{name}' is not trained yet ({model_dir}); run 'cpsd-tf teachers' first")
        model = load_model(model_dir)
        parts.append((subset, train.predict_logits(model, ds)))
    return merge(parts, n, info.num_classes)


def ensure(recipe, run_dir, teacher_set, split=None):
    """The merged logits of a set on a split, computed and saved once (atomic), then read from disk."""
    path = logits_path(run_dir, teacher_set, split)
    if not path.is_file():
        split_name = split or recipe.data.train_split
        click.echo(f"[logits] {teacher_set} on {split_name}")
        merged = predict_set(recipe, run_dir, teacher_set, split_name)
        with io.atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, merged)
    return np.load(path)


def needed_sets(recipe):
    """The teacher sets the recipe's student and ablations distil from, in a stable order."""
    from cpsd_tf.recipe import VARIANTS

    sets = list(recipe.distill.teachers)
    for variant in recipe.ablation:
        sets += VARIANTS[variant]
    return list(dict.fromkeys(sets))


def is_done(recipe, run_dir) -> bool:
    return all(logits_path(run_dir, s).is_file() for s in needed_sets(recipe))


def run(recipe, run_dir):
    """Export the train-split logits of every teacher set the recipe needs (skipping finished ones)."""
    prepare.run(recipe)
    for teacher_set in needed_sets(recipe):
        if logits_path(run_dir, teacher_set).is_file():
            click.echo(f"[logits] {teacher_set} done already, skipped")
            continue
        ensure(recipe, run_dir, teacher_set)
