"""`cpsd-tf pretrain`: pretrain the backbone on single-object images, the scenes stand-in for ImageNet.

The paper's models start from ImageNet weights, which an offline machine cannot fetch. On the bundled
scenes benchmark, the `single` split (`data.scenes.single` > 0: one glyph per image, no scene, no
occluder, never a train image) plays ImageNet's part: the recipe's architecture (`model.backbone` /
`model.head`, all m classes, random init) is trained on it with the project's trainer (`train.fit`:
ASL, AdamW, warm-up + cosine, EMA, best epoch on the held-out `single_val`), and the BACKBONE's weights
are saved. Every model of the run then starts from them when `model.weights` is `pretrain` (resolved by
`rundir.resolve_weights` to `rundir.pretrain_weights_path(run_dir)`) or that file's path.

Artefacts, in `<run_dir>/pretrain/` (each written atomically; `backbone.weights.h5` last):
    backbone.weights.h5  `model.get_layer("backbone").save_weights(...)` of the selected epoch; loads
                         with `build_backbone(name, size, weights=path)` (i.e. `model.weights`).
    metrics.json         `train.fit`'s metrics plus "accuracy" (top-1, %) and "mAP" on `val_split`,
                         "val_images", "pretrain" (the config) and "seconds".
    model.keras          the whole pretrained classifier (backbone + head), for inspection.
    provenance.json      the recipe values it was made from (`stage.train_model`); `.lock` while training.
    tensorboard/         training curves.
The stage is locked, resumable and provenance-checked like every model stage (`stage.train_model`).

The recipe section is `cpsd_tf.recipe.PretrainConfig`; paths and weight resolution live in `cpsd_tf.rundir`.

Example:
    cfg = PretrainConfig(enabled=True, epochs=10)
    run(recipe, "runs/demo", config=cfg)      # -> runs/demo/pretrain/backbone.weights.h5
    recipe = rundir.resolve_weights(recipe, "runs/demo")   # model.weights: pretrain -> that path
"""

import time
from typing import Optional

import click
import numpy as np

from cpsd_tf import io, rundir, stage
from cpsd_tf.data import pipeline, prepare, records
from cpsd_tf.errors import UserError
from cpsd_tf.metrics import multilabel_metrics
from cpsd_tf.recipe import PretrainConfig
from cpsd_tf.train import predict_logits

METRICS_FILE = rundir.METRICS_FILE


def config_of(recipe) -> PretrainConfig:
    """The recipe's `pretrain` section, or the defaults when the recipe has none."""
    return getattr(recipe, "pretrain", None) or PretrainConfig()


def is_done(recipe, run_dir) -> bool:
    """Whether the pretrained backbone and its metrics exist (only looks; `recipe` is unused)."""
    del recipe
    return rundir.pretrain_weights_path(run_dir).is_file() and (rundir.pretrain_dir(run_dir) / METRICS_FILE).is_file()


def pretrain_recipe(recipe, config: PretrainConfig):
    """The recipe `train.fit` gets: trains on `config.split`, selects on `config.val_split`, random init."""
    data = recipe.data.model_copy(
        update={"train_split": config.split, "val_split": config.val_split, "eval_splits": [config.val_split]}
    )
    train_cfg = recipe.train.model_copy(
        update={"epochs": config.epochs, "lr": config.lr, "batch_size": config.batch_size,
                "warmup": config.warmup, "select_split": None}
    )
    model = recipe.model.model_copy(update={"weights": None})
    return recipe.model_copy(update={"data": data, "train": train_cfg, "model": model})


def _require_splits(recipe, config):
    """The data set's info; it must hold the pretraining splits (this stage never writes data)."""
    data_dir = prepare.require(recipe)
    info = records.load_info(data_dir)
    missing = [s for s in (config.split, config.val_split) if s not in info.splits]
    if missing:
        if recipe.data.generator == "scenes" and recipe.data.scenes.single < 1:
            hint = ("set data.scenes.single (e.g. 10000) and build the data again (a new data.dir, or "
                    "'cpsd-tf data build --recipe R --force')")
        else:
            hint = "set pretrain.split / pretrain.val_split to splits it has"
        raise UserError(
            f"data.dir '{data_dir}' has no split(s) {missing} to pretrain on (its splits: "
            f"{sorted(info.splits)}); {hint}, or pretrain.enabled: false"
        )
    return info


def evaluate_single(model, recipe, split):
    """Top-1 accuracy and mAP (both in %) of `model` on a single-object split, and its size."""
    data = recipe.data
    ds = pipeline.build(data.dir, split, image_size=data.image_size, batch_size=256, training=False)
    _, y = pipeline.labels_matrix(data.dir, split)
    logits = predict_logits(model, ds)
    one = y.sum(axis=1) == 1  # single-object images (all of them in a `single` split)
    accuracy = float(100.0 * np.mean(logits[one].argmax(1) == y[one].argmax(1))) if one.any() else float("nan")
    m = multilabel_metrics(y, logits, from_logits=True)
    return {"accuracy": accuracy, "mAP": m["mAP"], "val_images": int(len(y))}


def run(recipe, run_dir, force=False, config: Optional[PretrainConfig] = None):
    """Pretrain the recipe's architecture on the single-object split; save its backbone's weights.

    Finished work made from the same values is kept (work made from other values is refused, naming
    the key, unless `force`), like every model stage (`stage.train_model`: lock, provenance, resume).

    Args:
        recipe: the resolved `Recipe`.
        run_dir: str or Path, the run directory.
        force: bool, redo finished pretraining. Defaults to False.
        config: PretrainConfig or None. Defaults to None: the recipe's `pretrain` section.

    Returns:
        The metrics dict of `<run_dir>/pretrain/metrics.json`.
    """
    config = config or config_of(recipe)
    out = rundir.pretrain_dir(run_dir)
    what = "pretrained backbone"
    t0 = time.perf_counter()
    info = _require_splits(recipe, config)
    pre = pretrain_recipe(recipe, config)
    values = stage.model_values(pre, epochs=config.epochs, lr=config.lr, validate_every=pre.train.validate_every)
    inputs = stage.data_inputs(recipe)
    if force:
        rundir.pretrain_weights_path(run_dir).unlink(missing_ok=True)
    elif is_done(recipe, run_dir) and stage.check_finished(out, values, inputs, what, "pretrain"):
        click.echo(f"[pretrain] finished already: {rundir.pretrain_weights_path(run_dir)}")
        return rundir.model_metrics(out)
    n = info.splits[config.split]
    if pre.train.cache and pre.train.shuffle_buffer < n and n * pre.data.image_size**2 * 3 <= 2**30:
        # cached images are read in order: let the buffer hold the whole split (see pipeline.build)
        pre = pre.model_copy(update={"train": pre.train.model_copy(update={"shuffle_buffer": n})})
    click.echo(
        f"[pretrain] {recipe.model.backbone}/{recipe.model.head} on '{config.split}' ({n} images, "
        f"{info.num_classes} classes), {config.epochs} epochs, lr {config.lr}"
    )
    stage.train_model(pre, out, what=what, command="pretrain", values=values, inputs=inputs, force=force,
                      num_classes=info.num_classes, class_names=info.classes, epochs=config.epochs,
                      title="pretrain")
    with rundir.lock(out, what):
        model = rundir.load_model(out)
        scores = evaluate_single(model, pre, config.val_split)
        fit_metrics = rundir.model_metrics(out)
        metrics = {
            **fit_metrics,
            **scores,
            "split": config.split,
            "val_split": config.val_split,
            "pretrain": config.model_dump(),
            "weights": rundir.PRETRAIN_WEIGHTS,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        io.write_json(out / METRICS_FILE, metrics)
        with io.atomic_path(rundir.pretrain_weights_path(run_dir), suffix=".weights.h5") as tmp:
            model.get_layer("backbone").save_weights(tmp)
    click.echo(
        f"[pretrain] '{config.val_split}' accuracy {scores['accuracy']:.2f} %, mAP {scores['mAP']:.2f} "
        f"(best epoch {metrics.get('best_epoch')}) -> {rundir.pretrain_weights_path(run_dir)}"
    )
    return metrics
