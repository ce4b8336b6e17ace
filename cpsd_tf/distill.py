"""`cpsd-tf distill`: the full-label student trained from its teachers (paper §3.3).

L = w_cls·ASL(y, ŝ) + Σ_t w_teacher·‖ŝ − ŷ_t‖² over the recipe's teacher sets (CPSD: CGP and DGP).
With `distill.teacher_logits: cached` (default) the teachers' merged train logits (`logits/<set>.npy`)
join each batch by record `index` from an in-memory table — no file I/O and no teacher forward pass per
step, so a step costs what a baseline step costs. `online` runs the teachers on every augmented batch
instead, as the official code does.

The recipe's student goes to `<run_dir>/student/`; each `ablation` variant to `<run_dir>/ablations/<name>/`.
"""

from pathlib import Path

import click

from cpsd_tf import logits as logits_mod
from cpsd_tf import teachers as teachers_mod
from cpsd_tf import train
from cpsd_tf.data import prepare, records
from cpsd_tf.recipe import VARIANTS

STUDENT_DIR = "student"
ABLATIONS_DIR = "ablations"


def students(recipe, run_dir):
    """[(name, teacher sets, model folder)]: the recipe's student first, then the ablation variants."""
    main = recipe.distill.variant
    out = [(main, tuple(recipe.distill.teachers), Path(run_dir) / STUDENT_DIR)]
    for variant in recipe.ablation:
        if variant != main:
            out.append((variant, VARIANTS[variant], Path(run_dir) / ABLATIONS_DIR / variant))
    return out


def make_loss(recipe, num_classes, num_teachers):
    from cpsd_tf.losses import DistillationLoss

    d, asl = recipe.distill, recipe.train.loss
    return DistillationLoss(
        num_classes, num_teachers, w_cls=d.w_cls, w_teacher=d.w_teacher, mse=d.mse,
        asl={"gamma_neg": asl.gamma_neg, "gamma_pos": asl.gamma_pos, "clip": asl.clip, "normalize": asl.normalize},
    )


def cached_targets_fn(tables):
    """(labels, index) -> [labels | table_1[index] | …]: the join of cached teacher logits by `index`."""
    import tensorflow as tf

    constants = [tf.constant(t, tf.float32) for t in tables]

    def targets(y, index):
        return tf.concat([y] + [tf.gather(c, index) for c in constants], axis=-1)

    return targets


def online_wrapper(teacher_sets, num_classes):
    """model -> a Keras model that trains `model` with targets from frozen teachers run on each batch."""
    import keras
    import numpy as np
    import tensorflow as tf

    class OnlineDistiller(keras.Model):
        """Student + frozen teachers; the teachers' logits are merged (ρ) per batch inside the loss."""

        def __init__(self, student, sets):
            super().__init__()
            self.student = student
            self.sets = []
            for models, subsets in sets:
                for mdl in models:
                    mdl.trainable = False
                order = np.concatenate([np.arange(num_classes) if s is None else np.asarray(s) for s in subsets])
                self.sets.append((models, tf.constant(np.argsort(order), tf.int32)))

        def call(self, x, training=False):
            return self.student(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            parts = [y]
            for models, inverse in self.sets:
                outputs = tf.concat([mdl(x, training=False) for mdl in models], axis=-1)
                parts.append(tf.gather(tf.cast(outputs, tf.float32), inverse, axis=-1))
            return super().compute_loss(x, tf.concat(parts, axis=-1), y_pred, sample_weight, training)

    def wrap(model):
        return OnlineDistiller(model, teacher_sets)

    return wrap


def _load_teacher_sets(recipe, run_dir, sets):
    from cpsd_tf.evaluate import load_model

    loaded = []
    for teacher_set in sets:
        members = teachers_mod.teachers_of(recipe, run_dir, teacher_set)
        loaded.append(([load_model(d) for _, d, _ in members], [s for _, _, s in members]))
    return loaded


def train_student(recipe, run_dir, name, sets, model_dir):
    """Train one student from the teacher sets `sets` into `model_dir`."""
    info = records.load_info(recipe.data.dir)
    m = info.num_classes
    d = recipe.distill
    epochs = d.epochs or recipe.train.epochs
    init_from = Path(run_dir) / "baseline" / train.MODEL_FILE if d.init == "baseline" else None
    kwargs = {}
    if d.teacher_logits == "cached":
        tables = [logits_mod.ensure(recipe, run_dir, s) for s in sets]
        kwargs["targets_fn"] = cached_targets_fn(tables)
    else:
        kwargs["wrap_model"] = online_wrapper(_load_teacher_sets(recipe, run_dir, sets), m)
    click.echo(f"[distill] {name}: teachers {'+'.join(sets)} ({d.teacher_logits} logits), {epochs} epochs")
    metrics = train.fit(
        recipe, model_dir, num_classes=m, class_names=info.classes, epochs=epochs, title=name,
        loss=make_loss(recipe, m, len(sets)), init_from=init_from, **kwargs,
    )
    click.echo(f"[distill] {name}: best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} at epoch {metrics['best_epoch']}")
    return metrics


def is_done(recipe, run_dir) -> bool:
    return all(train.is_done(d) for _, _, d in students(recipe, run_dir))


def run(recipe, run_dir):
    """Train the recipe's student and every ablation variant that is not finished yet."""
    prepare.run(recipe)
    for name, sets, model_dir in students(recipe, run_dir):
        if train.is_done(model_dir):
            click.echo(f"[distill] {name} finished already, skipped")
            continue
        for teacher_set in sets:
            needed = teachers_mod.teachers_of(recipe, run_dir, teacher_set)
            if not all(train.is_done(d) for _, d, _ in needed):
                if teacher_set == "baseline":
                    from cpsd_tf import baseline

                    baseline.run(recipe, run_dir)
                else:
                    teachers_mod.run(recipe, run_dir, only=",".join(n for n, _, _ in needed))
        train_student(recipe, run_dir, name, sets, model_dir)
