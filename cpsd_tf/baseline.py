"""`cpsd-tf baseline`: full-label models trained without distillation.

`<run_dir>/baseline/` is the converged baseline (`baseline.epochs`, best epoch on `data.val_split`);
with `reference.equal_compute`, `<run_dir>/baseline_equal_compute/` is trained as long as the 2k
teachers and the student together, the comparison users ask for besides the converged one.
"""

from pathlib import Path

import click

from cpsd_tf import train
from cpsd_tf.data import prepare, records

BASELINE_DIR = "baseline"
EQUAL_COMPUTE_DIR = "baseline_equal_compute"


def _train_full(recipe, model_dir, epochs, title, why=""):
    """Train a full-label model into `model_dir` unless it is finished."""
    model_dir = Path(model_dir)
    if train.is_done(model_dir):
        click.echo(f"[{title}] finished already: {model_dir / train.MODEL_FILE}")
        return
    info = records.load_info(prepare.run(recipe))
    click.echo(f"[{title}] {recipe.model.backbone}/{recipe.model.head}, {info.num_classes} classes, {epochs} epochs{why}")
    metrics = train.fit(recipe, model_dir, num_classes=info.num_classes, class_names=info.classes, epochs=epochs,
                        title=title)
    click.echo(
        f"[{title}] best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} "
        f"at epoch {metrics['best_epoch']} ({metrics['best_weights']} weights) -> {model_dir}"
    )


def is_done(recipe, run_dir) -> bool:
    return train.is_done(Path(run_dir) / BASELINE_DIR)


def run(recipe, run_dir):
    """Train the baseline (building the data first if the recipe names a generator); skip if finished."""
    _train_full(recipe, Path(run_dir) / BASELINE_DIR, recipe.baseline.epochs or recipe.train.epochs, "baseline")


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
    prepare.run(recipe)
    epochs = equal_compute_epochs(recipe, run_dir)
    _train_full(recipe, Path(run_dir) / EQUAL_COMPUTE_DIR, epochs, "baseline_equal_compute", " (= 2k teachers + student)")
