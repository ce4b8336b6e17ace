"""What every model-training stage shares: lock the model folder, check its provenance, train, record.

A finished model also gets its calibrated per-class thresholds (`thresholds.json`, see
`cpsd_tf.thresholds`), chosen on the selection split once the model is selected.

`train_model` is the only way a stage writes a model folder, so every model of a run is locked while it
trains, refuses to resume or reuse work made from other recipe values, and remembers what it was made
from.
"""

from pathlib import Path

import click

from cpsd_tf import multiworker, rundir, thresholds, train
from cpsd_tf.data import prepare

# Recipe values every model depends on; stages add their own (teachers.*, distill.*, …).
MODEL_KEYS = ("seed", "data.image_size", "data.train_split", "data.val_split", "data.augment", "model", "train")


def model_values(recipe, *extra_keys, **extra_values):
    """Provenance values of a model: the shared keys, a stage's own keys, and its resolved epochs and lr.

    `train.epochs`, `train.lr` and `train.validate_every` are only fallbacks (resolved into `teachers.epochs`,
    `distill.lr`, … when the recipe loads), so they are left out: each stage records the keys it really used.
    """
    values = rundir.recipe_values(recipe, [*MODEL_KEYS, *extra_keys])
    for fallback in ("train.epochs", "train.lr", "train.validate_every"):
        values.pop(fallback, None)
    # How the training is spread over devices and machines is not what the model is made of: a model
    # trained on several workers is the single-process model, and may be evaluated or resumed without them.
    values.pop("train.strategy", None)
    values.update(extra_values)
    return values


def data_inputs(recipe, run_dir=None):
    """The upstream artefacts every model depends on: the data set, and the pretrained backbone if used."""
    inputs = {"data": prepare.fingerprint(recipe.data.dir)}
    if run_dir is not None:
        inputs.update(rundir.pretrain_inputs(recipe, run_dir))
    return inputs


def check_finished(model_dir, values, inputs, what, command):
    """Raise if a finished model was made from other values; True if it is finished and agrees."""
    if not rundir.model_is_done(model_dir):
        return False
    rundir.check_provenance(model_dir, values, inputs, what=what, command=command)
    return True


def train_model(recipe, model_dir, *, what, command, values, inputs, force=False, busy="fail", run_dir=None,
                **fit_kwargs):
    """Train one model into `model_dir` under its lock; skip it when finished with the same values.

    Args:
        recipe: the resolved recipe (its `train.lr` is the lr this model trains with).
        model_dir: Path of the model folder.
        what: str, the model in messages ("teacher cgp-0").
        command: str, the verb that trains it (named in messages).
        values, inputs: provenance of the model (see `rundir.check_provenance`).
        force: bool, redo a finished or half-trained model made from other values. Defaults to False.
        busy: "fail" (exit 2 naming the holder) or "skip" (return "busy") when another process holds the
            lock. Defaults to "fail".
        run_dir: the run directory, to resolve `model.weights: pretrain`. Defaults to None.
        **fit_kwargs: passed to `train.fit`.
    Returns:
        "trained", "skipped" (finished already) or "busy".
    """
    model_dir = Path(model_dir)
    if run_dir is not None:
        recipe = rundir.resolve_weights(recipe, run_dir)
    if not multiworker.is_chief():
        # A non-chief worker trains with the chief (which holds the lock and writes the folder) and
        # skips what the chief has finished; it writes nothing here.
        if rundir.model_is_done(model_dir):
            click.echo(f"[{command}] {what} finished already, skipped")
            return "skipped"
        train.fit(recipe, model_dir, **fit_kwargs)
        click.echo(f"[{command}] {what}: trained with the chief (worker 0), which writes {model_dir}")
        return "trained"
    try:
        with rundir.lock(model_dir, what):
            record = rundir.read_provenance(model_dir)
            if force and record:
                rundir.remove_artefact(model_dir)
            elif record:
                # finished or half-trained (resumable) work must come from the same values
                rundir.check_provenance(model_dir, values, inputs, what=what, command=command)
            if rundir.model_is_done(model_dir):
                click.echo(f"[{command}] {what} finished already, skipped")
                thresholds.ensure(recipe, model_dir)  # a model finished before thresholds existed
                return "skipped"
            if not record or force:
                rundir.write_provenance(model_dir, values, inputs)
            train.fit(recipe, model_dir, **fit_kwargs)
            thresholds.ensure(recipe, model_dir)
            return "trained"
    except rundir.Busy as e:
        if busy == "skip":
            click.echo(f"[{command}] {e.format_message()}: skipped here")
            return "busy"
        raise
