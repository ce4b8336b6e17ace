"""`cpsd-tf logits`: run every teacher of a set over a split and merge their logits by class (the paper's ρ).

`logits/<set>.npy` is a float32 array [N_train, m]: row = the record's `index`, column = class. A teacher
of cluster C_t predicts |C_t| columns; ρ puts them back at the class indices of C_t, and every class must
be written exactly once. Sets: `cgp` and `dgp` (the partition's teachers), `random` (teachers of a random
partition, for the ablation) and `baseline` (the baseline as the only teacher: SD). Train logits are what
`distill.teacher_logits: cached_clean` joins by index; the evaluation splits' logits (for the teacher
ensembles) are computed by `evaluate`.

With `distill.teacher_logits: cached_views` this stage instead writes `logits/views/<set>.npy`, float16
[E, N, m]: the merged logits of every augmented view (data pass e, record i) the students will see
(`view_targets`), computed once and shared by every student of the run; with mixed views (`distill.views`)
`logits/views/<set>.mixed.npy`, float16 [T, B, m]: those of every mixed batch t of the students' stream.
"""

import click
import numpy as np

from cpsd_tf import io, rundir, train, view_targets, views
from cpsd_tf.data import pipeline, prepare, records
from cpsd_tf.errors import UserError


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


def require_teachers(run_dir, teacher_set):
    """The members of a set, all trained; a missing one is an error naming the command that trains it."""
    members = rundir.teachers_of(run_dir, teacher_set)
    for name, model_dir, _ in members:
        if not rundir.model_is_done(model_dir):
            verb = "baseline" if teacher_set == "baseline" else "teachers"
            raise UserError(f"{teacher_set} teacher '{name}' is not trained yet ({model_dir}); "
                            f"run 'cpsd-tf {verb} --recipe R' first")
    return members


def set_inputs(run_dir, teacher_set):
    """{member name: provenance id}: what a set's logits (and its students) were made from."""
    return {name: rundir.artefact_id(d) for name, d, _ in rundir.teachers_of(run_dir, teacher_set)}


def predict_set(recipe, run_dir, teacher_set, split):
    """Merged logits [N, m] of a teacher set on a split (deterministic, non-augmented view)."""
    data = recipe.data
    info = records.load_info(data.dir)
    n = info.splits[split]
    _check_index_order(data.dir, split, n)
    ds = pipeline.build(data.dir, split, image_size=data.image_size, batch_size=128, training=False)
    parts = [(subset, train.predict_logits(rundir.load_model(d), ds))
             for _, d, subset in require_teachers(run_dir, teacher_set)]
    return merge(parts, n, info.num_classes)


def train_logits(recipe, run_dir, teacher_set, force=False):
    """The merged train-split logits of a set, computed and saved once (atomic), then read from disk."""
    path = rundir.logits_path(run_dir, teacher_set)
    inputs = set_inputs(run_dir, teacher_set)
    values = {"data.train_split": recipe.data.train_split, "data.image_size": recipe.data.image_size}
    if path.is_file() and not force:
        rundir.check_provenance(path, values, inputs, what=f"the {teacher_set} logits", command="logits")
        return np.load(path)
    click.echo(f"[logits] {teacher_set} on {recipe.data.train_split}")
    merged = predict_set(recipe, run_dir, teacher_set, recipe.data.train_split)
    with io.atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, merged)
    rundir.write_provenance(path, values, inputs)
    return merged


def needed(recipe):
    """Teacher sets whose stored logits the recipe needs (only cached students join them)."""
    return rundir.needed_sets(recipe) if recipe.distill.teacher_logits != "online" else []


def views_file(recipe, run_dir, teacher_set):
    """Where the recipe's students find a set's view logits (per mixed batch with `distill.views`)."""
    return rundir.views_path(run_dir, teacher_set, mixed=recipe.distill.views.kind != "none")


def _path(recipe, run_dir, teacher_set):
    if recipe.distill.teacher_logits == "cached_views":
        return views_file(recipe, run_dir, teacher_set)
    return rundir.logits_path(run_dir, teacher_set)


def is_done(recipe, run_dir) -> bool:
    return all(_path(recipe, run_dir, s).is_file() for s in needed(recipe))


def student_stream(recipe):
    """(N, batch, steps per epoch, passes) of the students' training stream (as `train.fit` builds it)."""
    data = recipe.data
    n = pipeline.num_examples(data.dir, data.train_split)
    batch = min(recipe.train.batch_size, n)
    steps = max(n // batch, 1)
    return n, batch, steps, view_targets.passes_needed(n, batch, steps, recipe.distill.epochs)


def views_values(recipe):
    """What the view tables depend on: the students' stream (its seed, augmentation, size, length; with
    mixed views also their config, the batch order and every batch of the run)."""
    _, batch, steps, passes = student_stream(recipe)
    keys = ["seed", "data.augment", "data.image_size", "data.train_split"]
    if recipe.distill.views.kind != "none":
        keys += ["distill.views", "distill.epochs", "train.shuffle_buffer", "train.cache"]
    values = rundir.recipe_values(recipe, keys)
    values.update({"passes": passes, "batch": batch, "steps_per_epoch": steps})
    return values


def _compute(recipe, loaded, paths):
    """Compute the view tables of the loaded teacher sets into `paths` (every view, or every mixed batch)."""
    data, d = recipe.data, recipe.distill
    n, batch, steps, passes = student_stream(recipe)
    m = records.load_info(data.dir).num_classes
    if d.views.kind == "none":
        click.echo(f"[logits] {len(paths)} set(s) on every view of {passes} passes x {n} images")
        view_targets.compute(loaded, data.dir, data.train_split, passes=passes, image_size=data.image_size,
                             augment=data.augment, seed=recipe.seed, batch_size=128, num_classes=m, out_paths=paths)
        return
    total = steps * d.epochs
    click.echo(f"[logits] {len(paths)} set(s) on every {d.views.kind} view of {total} batches x {batch} images")
    stream = train.training_stream(recipe, batch, mix=views.mixer(d.views, recipe.seed),
                                   with_objects=views.by_object(d.views), with_step=True)  # deterministic, as fit's
    view_targets.compute_steps(loaded, stream, steps=total, batch_size=batch, num_classes=m, out_paths=paths)


def view_tables(recipe, run_dir, sets, force=False):
    """The view tables of `sets`, computed once for the missing ones (every teacher runs on every view)."""
    values = {s: views_values(recipe) for s in sets}
    todo = []
    for s in sets:
        path = views_file(recipe, run_dir, s)
        if path.is_file() and not force:
            rundir.check_provenance(path, values[s], set_inputs(run_dir, s), what=f"the {s} view logits",
                                    command="logits")
        else:
            todo.append(s)
    if todo:
        loaded = []
        for s in todo:
            members = require_teachers(run_dir, s)
            loaded.append(([rundir.load_model(d) for _, d, _ in members], [sub for _, _, sub in members]))
        paths = [views_file(recipe, run_dir, s) for s in todo]
        _compute(recipe, loaded, paths)
        for s, path in zip(todo, paths):
            rundir.write_provenance(path, values[s], set_inputs(run_dir, s))
    return [np.load(views_file(recipe, run_dir, s)) for s in sets]


def run(recipe, run_dir, force=False):
    """Export the train-split logits of every teacher set the recipe needs (skipping finished ones)."""
    prepare.require(recipe)
    if not needed(recipe):
        click.echo(f"[logits] distill.teacher_logits is {recipe.distill.teacher_logits}: the student's teachers "
                   f"run on its own batches, no train logits needed")
        return
    if recipe.distill.teacher_logits == "cached_views":
        view_tables(recipe, run_dir, needed(recipe), force=force)
        return
    for teacher_set in needed(recipe):
        path = rundir.logits_path(run_dir, teacher_set)
        if path.is_file() and not force:
            train_logits(recipe, run_dir, teacher_set)  # checks its provenance
            click.echo(f"[logits] {teacher_set} done already, skipped")
            continue
        train_logits(recipe, run_dir, teacher_set, force=force)
