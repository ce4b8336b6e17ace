"""`cpsd-tf evaluate`: metrics of trained models on evaluation splits, as a table and JSON."""

import json
from pathlib import Path

import click

from cpsd_tf import io, train
from cpsd_tf.data import prepare
from cpsd_tf.errors import UserError

TABLE_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
EVAL_FILE = "eval.json"


def load_model(path):
    """Load a `.keras` model written by cpsd-tf (custom layers and losses registered by import)."""
    import keras

    import cpsd_tf.losses  # noqa: F401  (registers AsymmetricLoss)
    import cpsd_tf.models  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if path.is_dir():
        path = path / train.MODEL_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a loadable Keras model ({str(e).splitlines()[0]})") from None


def model_subset(model_path):
    """The class columns a model predicts (a teacher's cluster), from the `metrics.json` beside it."""
    meta = Path(model_path).parent / train.METRICS_FILE if Path(model_path).is_file() else Path(model_path) / train.METRICS_FILE
    if meta.is_file():
        return json.loads(meta.read_text()).get("subset")
    return None


def model_classes(model_path, num_outputs):
    """Output names of a trained model: `metrics.json` beside it, else class-0 … class-(m-1)."""
    model_path = Path(model_path)
    meta = (model_path if model_path.is_dir() else model_path.parent) / train.METRICS_FILE
    if meta.is_file():
        classes = json.loads(meta.read_text()).get("classes")
        if classes and len(classes) == num_outputs:
            return list(classes)
    return [f"class-{i}" for i in range(num_outputs)]


def evaluate_model(recipe, model, split, subset=None):
    """Metrics dict of `model` on `split` (restricted to `subset` columns for a teacher)."""
    from cpsd_tf.data import pipeline
    from cpsd_tf.metrics import multilabel_metrics

    data = recipe.data
    ds = pipeline.build(data.dir, split, image_size=data.image_size, batch_size=64, training=False,
                        subset=subset, normalize=recipe.model.normalize)
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


RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def _teacher_ensembles(recipe, run_dir, splits):
    """Merged teacher logits evaluated as models: teachers_cgp, teachers_dgp and their mean."""
    from cpsd_tf import logits as logits_mod
    from cpsd_tf.data import pipeline
    from cpsd_tf.metrics import multilabel_metrics

    out = {}
    for split in splits:
        _, y = pipeline.labels_matrix(recipe.data.dir, split)
        cgp = logits_mod.ensure(recipe, run_dir, "cgp", split)
        dgp = logits_mod.ensure(recipe, run_dir, "dgp", split)
        for name, scores in (("teachers_cgp", cgp), ("teachers_dgp", dgp), ("teachers_ensemble", (cgp + dgp) / 2)):
            out.setdefault(name, {})[split] = multilabel_metrics(y, scores, from_logits=True)
    return out


def run_models(run_dir, recipe):
    """[(results name, model folder)] of the finished full-label models of a run, in report order."""
    from cpsd_tf import distill

    run_dir = Path(run_dir)
    found = [("baseline", run_dir / "baseline"), ("baseline_equal_compute", run_dir / "baseline_equal_compute")]
    found += [(name, d) for name, _, d in distill.students(recipe, run_dir)]
    return [(name, d) for name, d in found if train.is_done(d)]


def results(recipe, run_dir):
    """Evaluate every full-label model and the teacher ensembles on the eval splits; write results.json/.md."""
    from cpsd_tf import teachers

    prepare.run(recipe)
    splits = list(recipe.data.eval_splits)
    models = {}
    for name, model_dir in run_models(run_dir, recipe):
        keras_model = load_model(model_dir)
        models[name] = {s: evaluate_model(recipe, keras_model, s) for s in splits}
    if recipe.reference.teacher_ensembles and teachers.is_done(recipe, run_dir):
        models.update(_teacher_ensembles(recipe, run_dir, splits))
    if not models:
        raise UserError(f"{run_dir}: no trained model yet (train one with 'cpsd-tf baseline' or give --model)")
    report = {"models": {n: {s: {k: m[k] for k in TABLE_KEYS} for s, m in per.items()} for n, per in models.items()},
              "details": models, "splits": splits}
    io.write_json(Path(run_dir) / RESULTS_JSON, report)
    table = format_table([(n, s, m) for n, per in models.items() for s, m in per.items()])
    io.write_text(Path(run_dir) / RESULTS_MD, f"# Results of {run_dir}\n\n```\n{table}\n```\n")
    click.echo(table)
    return report


def is_done(recipe, run_dir) -> bool:
    return (Path(run_dir) / RESULTS_JSON).is_file()


def run(recipe, run_dir, model=None, split=None):
    """Evaluate `model` on `split` (default: the eval splits), or, with no model, the whole run (results.json)."""
    if model is None:
        return results(recipe, run_dir) if split is None else _evaluate_run_split(recipe, run_dir, split)
    prepare.run(recipe, splits=[split] if split else None)
    splits = [split] if split else list(recipe.data.eval_splits)
    path = Path(model)
    keras_model = load_model(path)
    subset = model_subset(path)
    per_split = {s: evaluate_model(recipe, keras_model, s, subset) for s in splits}
    io.write_json((path if path.is_dir() else path.parent) / EVAL_FILE, per_split)
    name = path.name if path.is_dir() else path.parent.name
    click.echo(format_table([(name, s, m) for s, m in per_split.items()]))
    return per_split


def _evaluate_run_split(recipe, run_dir, split):
    prepare.run(recipe, splits=[split])
    rows = []
    for name, model_dir in run_models(run_dir, recipe):
        rows.append((name, split, evaluate_model(recipe, load_model(model_dir), split)))
    if not rows:
        raise UserError(f"{run_dir}: no trained model yet (train one with 'cpsd-tf baseline' or give --model)")
    click.echo(format_table(rows))
    return rows
