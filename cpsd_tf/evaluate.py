"""`cpsd-tf evaluate`: metrics of trained models on evaluation splits, as a table and JSON.

A reading command: it names each model after its own records (never after the recipe it is given), and
on a read-only run directory it still prints the results (it only warns that it could not save them).
"""

from pathlib import Path

import click
import numpy as np

from cpsd_tf import io, rundir, train
from cpsd_tf import logits as logits_mod
from cpsd_tf.data import pipeline, prepare
from cpsd_tf.errors import UserError
from cpsd_tf.metrics import multilabel_metrics

TABLE_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
EVAL_FILE = "eval.json"


def evaluate_model(recipe, model, split, subset=None):
    """Metrics dict of `model` on `split` (restricted to `subset` columns for a teacher)."""
    data = recipe.data
    ds = pipeline.build(data.dir, split, image_size=data.image_size, batch_size=64, training=False, subset=subset)
    _, y = pipeline.labels_matrix(data.dir, split, subset=subset)
    logits = train.predict_logits(model, ds)
    if logits.shape != y.shape:
        raise UserError(f"model has {logits.shape[1]} outputs but split '{split}' has {y.shape[1]} label columns")
    return multilabel_metrics(y, logits, from_logits=True)


def format_table(rows):
    """rows: [(model, split, metrics)] -> a fixed-width text table."""
    header = f"{'model':<24} {'split':<10} " + " ".join(f"{k:>6}" for k in TABLE_KEYS)
    lines = [header, "-" * len(header)]
    for name, split, m in rows:
        lines.append(f"{name:<24} {split:<10} " + " ".join(f"{m[k]:6.2f}" for k in TABLE_KEYS))
    return "\n".join(lines)


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


def _teacher_ensembles(recipe, run_dir, splits):
    """Merged teacher logits evaluated as models: teachers_cgp, teachers_dgp and their mean."""
    out = {}
    for split in splits:
        _, y = pipeline.labels_matrix(recipe.data.dir, split)
        cgp = eval_logits(recipe, run_dir, "cgp", split)
        dgp = eval_logits(recipe, run_dir, "dgp", split)
        for name, scores in (("teachers_cgp", cgp), ("teachers_dgp", dgp), ("teachers_ensemble", (cgp + dgp) / 2)):
            out.setdefault(name, {})[split] = multilabel_metrics(y, scores, from_logits=True)
    return out


def results(recipe, run_dir):
    """Evaluate every full-label model and the teacher ensembles on the eval splits; write results.json/.md."""
    run_dir = rundir.require_run_dir(run_dir)
    prepare.require(recipe)
    splits = list(recipe.data.eval_splits)
    models = {}
    for name, model_dir in rundir.full_label_models(run_dir):
        keras_model = rundir.load_model(model_dir)
        models[name] = {s: evaluate_model(recipe, keras_model, s) for s in splits}
    if recipe.reference.teacher_ensembles and _teachers_ready(run_dir):
        models.update(_teacher_ensembles(recipe, run_dir, splits))
    if not models:
        raise UserError(f"{run_dir}: no trained model yet (train one with 'cpsd-tf baseline' or give --model)")
    report = {"models": {n: {s: {k: m[k] for k in TABLE_KEYS} for s, m in per.items()} for n, per in models.items()},
              "details": models, "splits": splits}
    table = format_table([(n, s, m) for n, per in models.items() for s, m in per.items()])
    click.echo(table)
    json_path, md_path = run_dir / rundir.RESULTS_JSON, run_dir / rundir.RESULTS_MD
    if _try_write(lambda: io.write_json(json_path, report), json_path):
        _try_write(lambda: io.write_text(md_path, f"# Results of {run_dir}\n\n```\n{table}\n```\n"), md_path)
        click.echo(f"Wrote {json_path} and {md_path}")
    return report


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
    subset = rundir.model_subset(path)
    per_split = {s: evaluate_model(recipe, keras_model, s, subset) for s in splits}
    name = path.name if path.is_dir() else path.parent.name
    click.echo(format_table([(name, s, m) for s, m in per_split.items()]))
    out = (path if path.is_dir() else path.parent) / EVAL_FILE
    _try_write(lambda: io.write_json(out, per_split), out)
    return per_split


def _evaluate_run_split(recipe, run_dir, split):
    run_dir = rundir.require_run_dir(run_dir)
    prepare.require(recipe, splits=[split])
    rows = [(name, split, evaluate_model(recipe, rundir.load_model(d), split))
            for name, d in rundir.full_label_models(run_dir)]
    if not rows:
        raise UserError(f"{run_dir}: no trained model yet (train one with 'cpsd-tf baseline' or give --model)")
    click.echo(format_table(rows))
    return rows
