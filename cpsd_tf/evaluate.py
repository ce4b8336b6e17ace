"""`cpsd-tf evaluate`: metrics of trained models on evaluation splits, as a table and JSON.

A reading command: it names each model after its own records (never after the recipe it is given), and
on a read-only run directory it still prints the results (it only warns that it could not save them).
"""

from pathlib import Path

import click
import numpy as np

from cpsd_tf import convergence, io, rundir, thresholds, train
from cpsd_tf import logits as logits_mod
from cpsd_tf.data import pipeline, prepare
from cpsd_tf.errors import UserError
from cpsd_tf.metrics import multilabel_metrics

TABLE_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
CALIBRATED_KEYS = ("CP", "CR", "CF1", "OP", "OR", "OF1")
EVAL_FILE = "eval.json"
RESULTS_TAG = "results"  # the results figure in <run_dir>/tensorboard/

LEGEND = """\
mAP: mean over classes of the average precision (threshold-free; the paper's main figure).
CP / CR / CF1: per-class precision and recall, averaged over classes, and the F1 of those two means;
OP / OR / OF1: the same over all decisions pooled. A label counts as predicted when its probability is
at least the threshold: 0.5 in the first table (the papers' convention), the model's calibrated per-class
thresholds in the second (chosen on the selection split '{split}' to maximise each class's F1; classes
without a positive there take the pooled-F1 threshold; stored in each model's thresholds.json).
All in percent. Models: baseline (converged, chosen on '{split}'), baseline_equal_compute (as long as the
2k teachers and the student together), cpsd (the student), sd / cgpd / dgpd / random (ablation students),
teachers_cgp / teachers_dgp (merged sub-task teachers), teachers_ensemble (mean of the two)."""


def evaluate_model(recipe, model, split, subset=None, calibrated=None):
    """Metrics dict of `model` on `split` (restricted to `subset` columns for a teacher).

    With `calibrated` (per-class thresholds [m]), the dict also holds "calibrated": CP … OF1 at those.
    """
    data = recipe.data
    ds = pipeline.build(data.dir, split, image_size=data.image_size, batch_size=64, training=False, subset=subset)
    _, y = pipeline.labels_matrix(data.dir, split, subset=subset)
    logits = train.predict_logits(model, ds)
    if logits.shape != y.shape:
        raise UserError(f"model has {logits.shape[1]} outputs but split '{split}' has {y.shape[1]} label columns")
    return scores_metrics(y, logits, calibrated)


def scores_metrics(y, logits, calibrated=None):
    """Metrics of logits at 0.5 (with per-class AP) and, given per-class thresholds, at those."""
    out = multilabel_metrics(y, logits, from_logits=True, per_class=True)
    if calibrated is not None:
        at = multilabel_metrics(y, logits, threshold=calibrated, from_logits=True)
        out["calibrated"] = {k: at[k] for k in CALIBRATED_KEYS}
    return out


def format_table(rows, calibrated=False):
    """rows: [(model, split, metrics)] -> a fixed-width text table (the calibrated metrics with `calibrated`)."""
    keys = CALIBRATED_KEYS if calibrated else TABLE_KEYS
    header = f"{'model':<24} {'split':<10} " + " ".join(f"{k:>6}" for k in keys)
    lines = [header, "-" * len(header)]
    for name, split, m in rows:
        m = m.get("calibrated") if calibrated else m
        if m is not None:
            lines.append(f"{name:<24} {split:<10} " + " ".join(f"{m[k]:6.2f}" for k in keys))
    return "\n".join(lines)


def report_text(rows, split):
    """Both tables with their titles and the legend (results.md, and what evaluate prints)."""
    parts = ["At threshold 0.5:", format_table(rows)]
    if any("calibrated" in m for _, _, m in rows):
        parts += ["", "At the calibrated per-class thresholds:", format_table(rows, calibrated=True)]
    return "\n".join(parts), LEGEND.format(split=split)


def _try_write(write, path):
    """Write an output of a reading command; a read-only or full disk only costs a warning."""
    try:
        write()
        return True
    except (OSError, UserError) as e:
        reason = e.strerror if isinstance(e, OSError) else e.format_message()
        click.echo(f"warning: could not write {path} ({reason}); results printed only", err=True)
        return False


def eval_logits(recipe, run_dir, teacher_set, split):
    """Merged logits of a teacher set on an evaluation split, cached under logits/eval/ when possible."""
    path = rundir.logits_path(run_dir, teacher_set, split)
    inputs = logits_mod.set_inputs(run_dir, teacher_set)
    if path.is_file() and rundir.read_provenance(path).get("inputs") == inputs:
        return np.load(path)
    merged = logits_mod.predict_set(recipe, run_dir, teacher_set, split)

    def write():
        with io.atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, merged)
        rundir.write_provenance(path, {"split": split}, inputs)

    try:
        write()
    except (OSError, UserError):
        pass  # a cache only
    return merged


def _teachers_ready(run_dir):
    try:
        return all(rundir.model_is_done(d) for s in ("cgp", "dgp") for _, d, _ in rundir.teachers_of(run_dir, s))
    except UserError:
        return False


def _ensemble_logits(recipe, run_dir, split):
    cgp = eval_logits(recipe, run_dir, "cgp", split)
    dgp = eval_logits(recipe, run_dir, "dgp", split)
    return {"teachers_cgp": cgp, "teachers_dgp": dgp, "teachers_ensemble": (cgp + dgp) / 2}


def _teacher_ensembles(recipe, run_dir, splits):
    """Merged teacher logits evaluated as models: teachers_cgp, teachers_dgp and their mean.

    Their calibrated thresholds come from their merged logits on the selection split, as a model's do.
    """
    from scipy.special import expit

    select = thresholds.selection_split(recipe)
    _, y_select = pipeline.labels_matrix(recipe.data.dir, select)
    calibrated = {name: np.asarray(thresholds.calibrate(y_select, expit(scores.astype(np.float64)))["thresholds"])
                  for name, scores in _ensemble_logits(recipe, run_dir, select).items()}
    out = {}
    for split in splits:
        _, y = pipeline.labels_matrix(recipe.data.dir, split)
        for name, scores in _ensemble_logits(recipe, run_dir, split).items():
            out.setdefault(name, {})[split] = scores_metrics(y, scores, calibrated[name])
    return out


def _training(run_dir, model_dirs):
    """[(name, `convergence.summary`)] of the run's full-label models, then of every finished teacher."""
    rows = [(name, d) for name, d in model_dirs]
    for teacher_set in ("cgp", "dgp"):
        try:
            rows += [(f"teacher {name}", d) for name, d, _ in rundir.teachers_of(run_dir, teacher_set)
                     if rundir.model_is_done(d)]
        except UserError:  # no partition yet
            pass
    out = []
    for name, d in rows:
        summary = convergence.summary(rundir.model_metrics(d))
        if summary is not None:
            out.append((name, summary))
    return out


def results(recipe, run_dir):
    """Evaluate every full-label model and the teacher ensembles on the eval splits; write results.json/.md."""
    run_dir = rundir.require_run_dir(run_dir)
    prepare.require(recipe)
    splits = list(recipe.data.eval_splits)
    models = {}
    for name, model_dir in rundir.full_label_models(run_dir):
        keras_model = rundir.load_model(model_dir)
        calibrated = thresholds.for_model(recipe, model_dir, keras_model)
        models[name] = {s: evaluate_model(recipe, keras_model, s, calibrated=calibrated) for s in splits}
    if recipe.reference.teacher_ensembles and _teachers_ready(run_dir):
        models.update(_teacher_ensembles(recipe, run_dir, splits))
    if not models:
        raise UserError(f"{run_dir}: no trained model yet (train one with 'cpsd-tf baseline' or give --model)")
    training = _training(run_dir, rundir.full_label_models(run_dir))
    report = {"models": {n: {s: {k: m[k] for k in TABLE_KEYS} for s, m in per.items()} for n, per in models.items()},
              "details": models, "splits": splits, "training": dict(training)}
    select = thresholds.selection_split(recipe)
    tables, legend = report_text([(n, s, m) for n, per in models.items() for s, m in per.items()], select)
    if training:
        text, rising = convergence.table(training, select)
        tables += "\n\n" + text
    click.echo(tables)
    if training and rising:
        click.echo(f"note: {', '.join(rising)} still rose by >= {convergence.RISE_POINTS:g} val mAP in the last "
                   f"quarter of training: compare after training longer (baseline.epochs, teachers.epochs, "
                   f"distill.epochs)", err=True)
    json_path, md_path = run_dir / rundir.RESULTS_JSON, run_dir / rundir.RESULTS_MD
    png_path = run_dir / rundir.RESULTS_PNG
    if _try_write(lambda: io.write_json(json_path, report), json_path):
        _try_write(lambda: io.write_text(md_path, f"# Results of {run_dir}\n\n```\n{tables}\n```\n\n{legend}\n"),
                   md_path)
        written = [json_path, md_path]
        if _try_write(lambda: _write_figure(report, png_path, run_dir), png_path):
            written.append(png_path)
        click.echo("Wrote " + ", ".join(str(p) for p in written))
    return report


def _write_figure(report, png_path, run_dir):
    """results.png, also logged to `<run_dir>/tensorboard/` (tag "results", step = number of models shown)."""
    from cpsd_tf import results_plot, tensorboard

    with io.atomic_path(png_path, suffix=".png") as tmp:
        results_plot.plot(report, tmp, title=f"Results of {run_dir}")
    tensorboard.log_image(run_dir / tensorboard.LOG_DIR, RESULTS_TAG, png_path, step=len(report["models"]))


def is_done(recipe, run_dir) -> bool:
    return (Path(run_dir) / rundir.RESULTS_JSON).is_file()


def run(recipe, run_dir, model=None, split=None):
    """Evaluate `model` on `split` (default: the eval splits), or, with no model, the whole run (results.json)."""
    if model is None:
        return results(recipe, run_dir) if split is None else _evaluate_run_split(recipe, run_dir, split)
    prepare.require(recipe, splits=[split] if split else None)
    splits = [split] if split else list(recipe.data.eval_splits)
    path = Path(model)
    keras_model = rundir.load_model(path)
    folder = path if path.is_dir() else path.parent
    subset = rundir.model_subset(path)
    calibrated = thresholds.for_model(recipe, folder, keras_model)
    per_split = {s: evaluate_model(recipe, keras_model, s, subset, calibrated) for s in splits}
    name = folder.name
    tables, legend = report_text([(name, s, m) for s, m in per_split.items()], thresholds.selection_split(recipe))
    click.echo(tables)
    out = folder / EVAL_FILE
    _try_write(lambda: io.write_json(out, per_split), out)
    return per_split


def _evaluate_run_split(recipe, run_dir, split):
    run_dir = rundir.require_run_dir(run_dir)
    prepare.require(recipe, splits=[split])
    rows = []
    for name, d in rundir.full_label_models(run_dir):
        keras_model = rundir.load_model(d)
        rows.append((name, split, evaluate_model(recipe, keras_model, split,
                                                 calibrated=thresholds.for_model(recipe, d, keras_model))))
    if not rows:
        raise UserError(f"{run_dir}: no trained model yet (train one with 'cpsd-tf baseline' or give --model)")
    click.echo(report_text(rows, thresholds.selection_split(recipe))[0])
    return rows
