"""`cpsd-tf baseline`: full-label models trained without distillation.

`<run_dir>/baseline/` is the converged baseline (`baseline.epochs`, best epoch on `data.val_split`);
with `reference.equal_compute`, `<run_dir>/baseline_equal_compute/` is trained as long as the 2k
teachers and the student together, the comparison users ask for besides the converged one.
Both train on the mixed views of `baseline.views` (`cpsd_tf.views`; default none), to compare a student
distilled on mixed views with a baseline trained on the same views.
"""

import click

from cpsd_tf import multiworker, rundir, stage, views
from cpsd_tf.data import pipeline, prepare, records


def _train_full(recipe, run_dir, model_dir, epochs, title, force, why=""):
    info = records.load_info(prepare.require(recipe))
    values = stage.model_values(recipe, "baseline.views", **{"train.lr": recipe.train.lr, f"{title}.epochs": epochs,
                                           "baseline.validate_every": recipe.baseline.validate_every})
    if not force and stage.check_finished(model_dir, values, stage.data_inputs(recipe, run_dir), title, "baseline"):
        click.echo(f"[baseline] {title} finished already, skipped")
        return
    kind = recipe.baseline.views.kind
    mixed = f", {kind} views" if kind != "none" else ""
    click.echo(f"[{title}] {recipe.model.backbone}/{recipe.model.head}, {info.num_classes} classes, {epochs} epochs"
               f"{why}{mixed}")
    stage.train_model(recipe, model_dir, what=title, command="baseline", values=values,
                      inputs=stage.data_inputs(recipe, run_dir), force=force, run_dir=run_dir, num_classes=info.num_classes,
                      class_names=info.classes, epochs=epochs, title=title,
                      mix=views.mixer(recipe.baseline.views, recipe.seed),
                      with_objects=views.by_object(recipe.baseline.views))
    metrics = rundir.model_metrics(model_dir)
    if metrics and multiworker.is_chief():  # another worker wrote nothing there
        click.echo(
            f"[{title}] best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} "
            f"at epoch {metrics['best_epoch']} ({metrics['best_weights']} weights) -> {model_dir}"
        )


def is_done(recipe, run_dir) -> bool:
    return rundir.model_is_done(rundir.baseline_dir(run_dir))


def run(recipe, run_dir, force=False):
    """Train the converged baseline (the data must exist); skip it when finished."""
    _train_full(recipe, run_dir, rundir.baseline_dir(run_dir), recipe.baseline.epochs, "baseline", force)


def equal_compute_epochs(recipe, run_dir):
    """Epochs of a baseline trained as long as the CPSD teachers and the student together.

    Teachers and student share the architecture, so a step costs about the same; a teacher trained on
    its positive images only (`teachers.images: positive`) is counted at its share of the train split.
    """
    data = recipe.data
    n = pipeline.num_examples(data.dir, data.train_split)
    total = 0.0
    for teacher_set in ("cgp", "dgp"):
        for _, _, subset in rundir.teachers_of(run_dir, teacher_set):
            share = pipeline.num_examples(data.dir, data.train_split, subset=subset, images=recipe.teachers.images) / n
            total += recipe.teachers.epochs * share
    return int(round(total + recipe.distill.epochs))


def is_equal_compute_done(recipe, run_dir) -> bool:
    return rundir.model_is_done(rundir.equal_compute_dir(run_dir))


def run_equal_compute(recipe, run_dir, force=False):
    """Train the equal-compute baseline into `<run_dir>/baseline_equal_compute/`."""
    prepare.require(recipe)
    epochs = equal_compute_epochs(recipe, run_dir)
    _train_full(recipe, run_dir, rundir.equal_compute_dir(run_dir), epochs, "baseline_equal_compute", force,
                " (= 2k teachers + student)")
