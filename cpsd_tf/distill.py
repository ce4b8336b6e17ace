"""`cpsd-tf distill`: the full-label student trained from its teachers (paper §3.3).

L = w_cls·ASL(y, ŝ) + Σ_t w_t·‖ŝ − ŷ_t‖² over the recipe's teacher sets, the w_t sharing `distill.w_distill`
(official CPSD: 0.5·ASL + 0.25·SSE_cgp + 0.25·SSE_dgp). Targets, by `distill.teacher_logits`:
- `online` (default, the official code): the frozen teachers run on every augmented batch the student sees,
  so the targets are the teachers' view of exactly the student's images;
- `cached_views`: the same targets as `online`, computed once per (data pass, record) view by `cpsd-tf logits`
  (`logits/views/<set>.npy`) and joined to each batch by (pass, index): a step costs what a baseline step
  costs, and every student of the run shares the tables;
- `cached_clean`: the teachers' merged logits of the un-augmented train images (`logits/<set>.npy`) join
  each batch by record `index` — no teacher pass per step, but the targets are of another view.

With `distill.views` (mixup, cutmix, mosaic: `cpsd_tf.views`) each batch is mixed in the input pipeline
before the student and its online teachers see it, and the ASL term takes the mixed view's labels. Mixed
views take `online` or `cached_views` targets: the latter stores the teachers' logits of every mixed batch
t of the (deterministic) stream (`logits/views/<set>.mixed.npy`, [T, B, m]) and joins them by t, the
targets `online` computes; `cached_clean` cannot describe a mixed view (the recipe refuses it).

The recipe's student goes to `<run_dir>/student/`; each `ablation` variant to `<run_dir>/ablations/<name>/`.
The teachers (and logits) must exist: this stage never trains them.

Besides `loss`, the student logs its loss terms each epoch (`term_names`: `loss_asl`, `loss_distill_<set>`;
TensorBoard `loss/asl`, `loss/distill_<set>`), weighted as they enter the loss, so they sum to `loss`. They
are measured on the training step's own targets and outputs, and take no part in the gradient.
"""

import click

from cpsd_tf import logits as logits_mod
from cpsd_tf import recipe as recipe_mod
from cpsd_tf import multiworker, rundir, stage, view_targets, views
from cpsd_tf.data import prepare, records
from cpsd_tf.errors import UserError


def make_loss(recipe, num_classes, teacher_sets):
    from cpsd_tf.losses import DistillationLoss, distill_weights

    d, asl = recipe.distill, recipe.train.loss
    return DistillationLoss(
        num_classes, distill_weights(teacher_sets, d.w_distill, d.alpha), w_cls=d.w_cls, mse=d.mse,
        asl={"gamma_neg": asl.gamma_neg, "gamma_pos": asl.gamma_pos, "clip": asl.clip, "normalize": asl.normalize},
    )


def cached_targets_fn(tables):
    """(labels, index) -> [labels | table_1[index] | …]: the join of cached teacher logits by `index`."""
    import tensorflow as tf

    constants = [tf.constant(t, tf.float32) for t in tables]

    def targets(y, index):
        return tf.concat([y] + [tf.gather(c, index) for c in constants], axis=-1)

    return targets


def term_names(sets):
    """Training-log names of a student's loss terms: `loss_asl`, then `loss_distill_<set>` per teacher set
    (in the order of `DistillationLoss.weighted_terms`)."""
    return ["loss_asl"] + [f"loss_distill_{s}" for s in sets]


def _term_trackers(sets):
    import keras

    return [keras.metrics.Mean(name=name) for name in term_names(sets)]


def _track_terms(trackers, loss, targets, y_pred):
    """Add one batch to the trackers: each example's weighted terms (`DistillationLoss.weighted_terms`).

    Keras' `loss` tracker counts the batch mean once per example too, so over an epoch the term means sum
    to the logged `loss` (when the model adds no loss of its own). Gradient-free: the optimisation is
    the same with or without them.
    """
    import tensorflow as tf

    terms = loss.weighted_terms(tf.stop_gradient(targets), tf.stop_gradient(y_pred))
    for tracker, values in zip(trackers, terms.values()):
        tracker.update_state(values)


def term_logger(loss, sets):
    """model -> a trainer that is `model` itself (the same layers, so the same weights and backup files)
    and logs the loss terms (`term_names(sets)`) of the `DistillationLoss` `loss`: for cached targets,
    which arrive with the batch as `y`."""
    import keras

    class TermLogger(keras.Model):
        """`model`'s own graph (a Functional of its input and output) with the loss terms tracked."""

        def __init__(self, model):
            super().__init__(model.input, model.output, name=model.name)
            self.term_trackers = _term_trackers(sets)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            total = super().compute_loss(x, y, y_pred, sample_weight, training)
            _track_terms(self.term_trackers, loss, y, y_pred)
            return total

    return TermLogger


def online_wrapper(teacher_sets, num_classes, positive_only=False, terms=None):
    """model -> a Keras model that trains `model` with targets from frozen teachers run on each batch
    (the batch as the pipeline made it: with mixed views, student and teachers see the same mixed view).

    With `positive_only` (recipe `teachers.images: positive`, paper Eq. 5: a teacher distils on the images of
    its sub-task only), a teacher's columns count only for images with one of its classes: elsewhere the
    target is the student's own (gradient-free) output, so that term is zero.
    With `terms` = (the `DistillationLoss`, the teacher set names), the loss terms are logged
    (`term_names`) on the merged targets.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    class OnlineDistiller(keras.Model):
        """Student + frozen teachers; the teachers' logits are merged (ρ) per batch inside the loss."""

        def __init__(self, student, sets):
            super().__init__()
            self.student = student
            self.term_trackers = _term_trackers(terms[1]) if terms else []
            self.sets = []
            for models, subsets in sets:
                for mdl in models:
                    mdl.trainable = False
                subsets = [np.arange(num_classes) if s is None else np.asarray(s) for s in subsets]
                member = np.zeros((len(subsets), num_classes), np.float32)  # member t owns class c
                for t, cols in enumerate(subsets):
                    member[t, cols] = 1.0
                inverse = tf.constant(np.argsort(np.concatenate(subsets)), tf.int32)
                self.sets.append((models, inverse, tf.constant(member)))

        def call(self, x, training=False):
            return self.student(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            parts = [y]
            for models, inverse, member in self.sets:
                outputs = tf.concat([mdl(x, training=False) for mdl in models], axis=-1)
                target = tf.gather(tf.cast(outputs, tf.float32), inverse, axis=-1)
                if positive_only:
                    # image i has a positive of teacher t -> t's columns are distilled for image i
                    has = tf.cast(tf.matmul(tf.cast(y, tf.float32), member, transpose_b=True) > 0, tf.float32)
                    keep = tf.matmul(has, member) > 0  # [B, m]
                    target = tf.where(keep, target, tf.stop_gradient(tf.cast(y_pred, tf.float32)))
                parts.append(target)
            targets = tf.concat(parts, axis=-1)
            total = super().compute_loss(x, targets, y_pred, sample_weight, training)
            if terms:
                _track_terms(self.term_trackers, terms[0], targets, y_pred)
            return total

    def wrap(model):
        return OnlineDistiller(model, teacher_sets)

    return wrap


def _load_teacher_sets(run_dir, sets):
    loaded = []
    for teacher_set in sets:
        members = logits_mod.require_teachers(run_dir, teacher_set)
        loaded.append(([rundir.load_model(d) for _, d, _ in members], [s for _, _, s in members]))
    return loaded


def student_provenance(recipe, run_dir, sets):
    values = stage.model_values(recipe, "distill", "partition")
    values["distill.teachers"] = list(sets)  # the variant's own sets, not the recipe's main list
    inputs = stage.data_inputs(recipe, run_dir)
    for teacher_set in sets:
        inputs.update(logits_mod.set_inputs(run_dir, teacher_set))
    return values, inputs


def train_student(recipe, run_dir, name, sets, model_dir, force=False):
    """Train one student from the teacher sets `sets` into `model_dir`."""
    info = records.load_info(recipe.data.dir)
    m = info.num_classes
    d = recipe.distill
    values, inputs = student_provenance(recipe, run_dir, sets)
    if not force and stage.check_finished(model_dir, values, inputs, f"student {name}", "distill"):
        click.echo(f"[distill] {name} finished already, skipped")
        return
    kwargs = {}
    refused = views.check_targets(d.views.kind, d.teacher_logits)
    if refused:  # recipes refuse it on load; a recipe built otherwise (model_copy) must not slip through
        raise UserError(refused)
    if d.teacher_logits != "online" and recipe.teachers.images == "positive":
        click.echo(f"warning: {name}: teachers.images is positive but {d.teacher_logits} targets are not masked to "
                   f"each teacher's images (paper Eq. 5); use distill.teacher_logits: online", err=True)
    if d.teacher_logits == "cached_views":
        missing = [s for s in sets if not logits_mod.views_file(recipe, run_dir, s).is_file()]
        if missing:
            first = logits_mod.views_file(recipe, run_dir, missing[0])
            raise UserError(f"no view logits of {', '.join(missing)} yet ({first}); run 'cpsd-tf logits --recipe R' first")
        tables = logits_mod.view_tables(recipe, run_dir, sets)
        if d.views.kind == "none":
            kwargs.update(targets_fn=view_targets.targets_fn(tables), targets_by="pass")
        else:  # one row per (mixed batch, row): the stream is deterministic so its batch t is the table's
            kwargs.update(targets_fn=view_targets.step_targets_fn(tables), targets_by="step")
    elif d.teacher_logits == "cached_clean":
        missing = [s for s in sets if not rundir.logits_path(run_dir, s).is_file()]
        if missing:
            raise UserError(f"no train logits of {', '.join(missing)} yet ({rundir.logits_path(run_dir, missing[0])}); "
                            f"run 'cpsd-tf logits --recipe R' first")
        kwargs["targets_fn"] = cached_targets_fn([logits_mod.train_logits(recipe, run_dir, s) for s in sets])
    loss = make_loss(recipe, m, sets)
    if d.teacher_logits == "online":
        positive = recipe.teachers.images == "positive" and any(s != "baseline" for s in sets)
        kwargs["wrap_model"] = online_wrapper(_load_teacher_sets(run_dir, sets), m, positive_only=positive,
                                              terms=(loss, sets))
    else:
        kwargs["wrap_model"] = term_logger(loss, sets)
    kwargs.update(mix=views.mixer(d.views, recipe.seed), with_objects=views.by_object(d.views))
    init_from = rundir.baseline_dir(run_dir) / rundir.MODEL_FILE if d.init == "baseline" else None
    mixed = f", {d.views.kind} views" if d.views.kind != "none" else ""
    click.echo(f"[distill] {name}: teachers {'+'.join(sets)} ({d.teacher_logits} targets{mixed}), {d.epochs} epochs")
    stage.train_model(
        recipe_mod.with_lr(recipe, d.lr), model_dir, what=f"student {name}", command="distill", values=values,
        inputs=inputs, force=force, run_dir=run_dir, num_classes=m, class_names=info.classes, epochs=d.epochs, title=name,
        loss=loss, init_from=init_from, **kwargs,
    )
    metrics = rundir.model_metrics(model_dir)
    if metrics and multiworker.is_chief():  # another worker wrote nothing there
        click.echo(f"[distill] {name}: best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} "
                   f"at epoch {metrics['best_epoch']}")


def is_done(recipe, run_dir) -> bool:
    return all(rundir.model_is_done(d) for _, _, d in rundir.students(recipe, run_dir))


def run(recipe, run_dir, force=False):
    """Train the recipe's student and every ablation variant that is not finished yet."""
    prepare.require(recipe)
    students = rundir.students(recipe, run_dir)
    for _, sets, _ in students:  # every teacher first, so a missing one stops us before any training
        for teacher_set in sets:
            logits_mod.require_teachers(run_dir, teacher_set)
    if recipe.distill.init == "baseline":
        logits_mod.require_teachers(run_dir, "baseline")
    for name, sets, model_dir in students:
        train_student(recipe, run_dir, name, sets, model_dir, force=force)
