"""`cpsd-tf baseline`: the full-label model trained without distillation, into `<run_dir>/baseline/`."""

from pathlib import Path

import click

from cpsd_tf import train
from cpsd_tf.data import prepare, records

BASELINE_DIR = "baseline"


def is_done(recipe, run_dir) -> bool:
    return train.is_done(Path(run_dir) / BASELINE_DIR)


def run(recipe, run_dir):
    """Train the baseline (building the data first if the recipe names a generator); skip if finished."""
    model_dir = Path(run_dir) / BASELINE_DIR
    if train.is_done(model_dir):
        click.echo(f"[baseline] finished already: {model_dir / train.MODEL_FILE}")
        return
    data_dir = prepare.run(recipe)
    info = records.load_info(data_dir)
    epochs = recipe.baseline.epochs or recipe.train.epochs
    click.echo(f"[baseline] {recipe.model.backbone}/{recipe.model.head}, {info.num_classes} classes, {epochs} epochs")
    metrics = train.fit(
        recipe, model_dir, num_classes=info.num_classes, class_names=info.classes, epochs=epochs, title="baseline"
    )
    click.echo(
        f"[baseline] best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} "
        f"at epoch {metrics['best_epoch']} ({metrics['best_weights']} weights) -> {model_dir}"
    )


EQUAL_COMPUTE_DIR = "baseline_equal_compute"


def equal_compute_epochs(recipe, run_dir):
    """Epochs of a baseline trained as long as the CPSD teachers and student together.

    Teachers and student share the architecture, so a step costs about the same; a teacher trained on
    its positive images only (`teachers.images: positive`) is counted at its share of the train split.
    """
    from cpsd_tf import teachers
    from cpsd_tf.data import pipeline

    data = recipe.data
    n = pipeline.num_examples(data.dir, data.train_split)
    teacher_epochs = recipe.teachers.epochs or recipe.train.epochs
    total = 0.0
    for teacher_set in ("cgp", "dgp"):
        for _, _, subset in teachers.teachers_of(recipe, run_dir, teacher_set):
            share = pipeline.num_examples(data.dir, data.train_split, subset=subset, images=recipe.teachers.images) / n
            total += teacher_epochs * share
    return int(round(total + (recipe.distill.epochs or recipe.train.epochs)))


def is_equal_compute_done(recipe, run_dir) -> bool:
    return train.is_done(Path(run_dir) / EQUAL_COMPUTE_DIR)


def run_equal_compute(recipe, run_dir):
    """Train the equal-compute baseline into `<run_dir>/baseline_equal_compute/`."""
    from cpsd_tf import teachers

    model_dir = Path(run_dir) / EQUAL_COMPUTE_DIR
    if train.is_done(model_dir):
        click.echo(f"[baseline_equal_compute] finished already: {model_dir / train.MODEL_FILE}")
        return
    data_dir = prepare.run(recipe)
    info = records.load_info(data_dir)
    teachers.load_partition(recipe, run_dir)
    epochs = equal_compute_epochs(recipe, run_dir)
    click.echo(f"[baseline_equal_compute] {epochs} epochs (= 2k teachers + student)")
    metrics = train.fit(recipe, model_dir, num_classes=info.num_classes, class_names=info.classes, epochs=epochs,
                        title="baseline_equal_compute")
    click.echo(f"[baseline_equal_compute] best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} at epoch {metrics['best_epoch']}")
