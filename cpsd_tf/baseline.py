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
