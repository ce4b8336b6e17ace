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
    header = f"{'model':<16} {'split':<10} " + " ".join(f"{k:>6}" for k in TABLE_KEYS)
    lines = [header, "-" * len(header)]
    for name, split, m in rows:
        lines.append(f"{name:<16} {split:<10} " + " ".join(f"{m[k]:6.2f}" for k in TABLE_KEYS))
    return "\n".join(lines)


def trained_models(run_dir):
    """[(name, model folder)] of every finished model of a run."""
    run_dir = Path(run_dir)
    found = []
    for d in [run_dir / "baseline", *sorted((run_dir / "teachers").glob("*")), run_dir / "student"]:
        if train.is_done(d):
            found.append((d.name, d))
    return found


def run(recipe, run_dir, model=None, split=None):
    """Evaluate `model` (or every finished model of the run) on `split` (or the recipe's eval splits)."""
    prepare.run(recipe)
    splits = [split] if split else list(recipe.data.eval_splits)
    targets = [(Path(model).stem if Path(model).is_file() else Path(model).name, Path(model))] if model else trained_models(run_dir)
    if not targets:
        raise UserError(f"{run_dir}: no trained model yet (train one with 'cpsd-tf baseline' or give --model)")
    rows = []
    for name, path in targets:
        keras_model = load_model(path)
        subset = model_subset(path)
        results = {}
        for s in splits:
            results[s] = evaluate_model(recipe, keras_model, s, subset)
            rows.append((name, s, results[s]))
        out = (path if path.is_dir() else path.parent) / EVAL_FILE
        io.write_json(out, results)
    click.echo(format_table(rows))
    return rows
