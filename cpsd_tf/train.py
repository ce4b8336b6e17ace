"""The trainer shared by baseline, teachers and student: Keras `fit` on the tf.data pipeline.

AdamW (decoupled weight decay, none on biases and normalisation parameters), warm-up + cosine schedule,
weight EMA with raw and EMA weights both evaluated on the selection split every `validate_every` epochs
and at the last one (the better one is kept, as the official code does), a backup of the training state
each epoch for resume, TensorBoard logs (tags and steps: `cpsd_tf.tensorboard`) and `metrics.json`, which
also holds the cost of each epoch: wall and CPU time of its training steps, its validation and its saves
(`cpsd_tf.epoch_cost`).

A model folder holds, when finished: `model.keras`, `metrics.json`, `tensorboard/` (plus what other modules
add: `provenance.json`, `.lock`). While training it also holds `backup/` (resume state: weights with the
optimizer state, and the number of finished epochs), `selection.json` (best epoch so far and one record
per finished epoch) and `best.weights.h5` (the best weights so far).

Faults become one-line `UserError`s, and the folder keeps the state of the last finished epoch:
- a non-finite training loss stops training at the first bad batch; non-finite validation scores stop it
  at the end of the epoch, before anything of that epoch is saved;
- before each save the free space of the folder is checked against the size of what is written (the h5
  and Keras writers crash the process on a full disk); a write failing with ENOSPC/EDQUOT all the same
  leaves no temporary file and becomes the same "disk full" error (`cpsd_tf.checkpoints`).
Every file is written to a temporary name and renamed into place (the backup too), so an interrupted
write never leaves a half-written file where a reader looks. The callbacks that do this each epoch live in
`cpsd_tf.train_callbacks`.
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from cpsd_tf import io
from cpsd_tf import train_callbacks as callbacks
from cpsd_tf.checkpoints import (BEST_WEIGHTS_FILE, SELECTION_FILE, cleanup, ensure_space, remove_temporaries,
                                 saving, state_bytes)
from cpsd_tf.epoch_cost import EpochCost, clock, cost_metrics
from cpsd_tf.errors import UserError
from cpsd_tf.train_callbacks import is_validated
from cpsd_tf.rundir import METRICS_FILE, MODEL_FILE


# --- validation schedule ------------------------------------------------------------------------------


def validate_every(recipe, role):
    """Epochs between validations of a model of `role`: its stage's `validate_every` (baseline, teachers,
    distill for a student), else `train.validate_every` (e.g. pretraining)."""
    section = {"baseline": recipe.baseline, "teacher": recipe.teachers, "student": recipe.distill}.get(role)
    return getattr(section, "validate_every", None) or recipe.train.validate_every


def ema_momentum(setting, total_steps):
    """The EMA momentum for a run of `total_steps` ('auto': an averaging window of ~10 % of the run)."""
    if setting is None:
        return None
    if setting == "auto":
        return float(min(0.9997, max(0.0, 1.0 - 10.0 / max(total_steps, 1))))
    return float(setting)


def choose_strategy(name):
    """The `tf.distribute` strategy of a recipe ('auto': several workers when TF_CONFIG names them, else
    mirrored over several GPUs, else default)."""
    import tensorflow as tf

    from cpsd_tf import multiworker

    if multiworker.active():  # created at start-up for train.strategy multi_worker (or auto with TF_CONFIG)
        return multiworker.strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def make_optimizer(train_cfg, total_steps):
    """AdamW with a warm-up + cosine schedule peaking at `train.lr`, and optional weight EMA."""
    import keras

    warmup = int(round(train_cfg.warmup * total_steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=train_cfg.lr * 1e-2 if warmup else train_cfg.lr,
        decay_steps=max(total_steps - warmup, 1),
        alpha=1e-2,
        warmup_target=train_cfg.lr if warmup else None,
        warmup_steps=warmup,
    )
    momentum = ema_momentum(train_cfg.ema_momentum, total_steps)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=train_cfg.weight_decay,
        use_ema=momentum is not None,
        ema_momentum=momentum if momentum is not None else 0.99,
    )
    # Decay only kernels: biases, BatchNorm/LayerNorm scales and offsets, embeddings stay free.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "token", "position", "embedding"])
    return optimizer


def make_loss(loss_cfg):
    from cpsd_tf.losses import AsymmetricLoss

    return AsymmetricLoss(
        gamma_neg=loss_cfg.gamma_neg, gamma_pos=loss_cfg.gamma_pos, clip=loss_cfg.clip, normalize=loss_cfg.normalize
    )


def predict_logits(model, dataset, steps=None):
    """Logits of `model` on an `(images, targets)` dataset, as float32 NumPy [N, m]."""
    import warnings

    from cpsd_tf import multiworker

    if multiworker.active():  # every worker scores the whole split itself: no collective op, same result
        return multiworker.predict_local(model, dataset.take(steps) if steps else dataset)
    with warnings.catch_warnings():
        # TFRecord datasets have unknown cardinality, so Keras warns when the data ends; that is the end.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        return np.asarray(model.predict(dataset, steps=steps, verbose=0), dtype=np.float32)


def training_stream(recipe, batch, *, subset=None, images="all", mix=None, with_objects=False, with_index=False,
                    with_pass=False, with_step=False):
    """The repeated training stream `fit` trains on (`pipeline.build`), batches of `batch`.

    Deterministic (parallel steps in order, so batch t is the same in every run) when keyed by step (a
    mixed-view target table joins by t) or under a multi-worker strategy (each worker cuts its share out
    of its own copy of every global batch: the copies must agree). tf.data draws the shuffle order from
    TensorFlow's global seed and the op seed, so this sets the global seed to `recipe.seed` first (as `fit`
    does): the order does not depend on what the process ran before.
    """
    import tensorflow as tf

    from cpsd_tf import multiworker
    from cpsd_tf.data import pipeline

    data, train_cfg = recipe.data, recipe.train
    tf.random.set_seed(recipe.seed)
    return pipeline.build(
        data.dir, data.train_split, batch_size=batch, training=True, augment=data.augment, images=images,
        shuffle_buffer=train_cfg.shuffle_buffer, seed=recipe.seed, repeat=True, cache=train_cfg.cache,
        with_index=with_index, with_pass=with_pass, with_step=with_step, image_size=data.image_size, subset=subset,
        with_objects=with_objects, mix=mix, deterministic=True if with_step or multiworker.active() else None,
    )


def fit(recipe, model_dir, **options):
    """Train one model into `model_dir` (resuming from its backup) and return its `metrics.json` dict.

    A folder with a backup resumes after its last finished epoch (printing "resuming <title> at epoch N").
    `metrics["history"]` holds one record per epoch of the whole run, resumed or not: `epoch`,
    `val_mAP_raw` (and `val_mAP_ema`) on validated epochs, every training log of the epoch (`loss`, loss
    components) and `learning_rate`. The selection split is scored every `validate_every(recipe, role)`
    epochs and at the last one (`validated_epochs`); the best model is chosen among those. The epoch costs
    (`cost_metrics`: `epoch_time_s`, `train_time_s`, `validation_time_s`, `save_time_s`, their `*_cpu_s`,
    and the `epoch_cost` summary) are per epoch too. The records live in `selection.json` between runs, so
    they survive a resume; Keras' own `History` holds only the epochs of the last `fit` call and is not kept.

    Args:
        recipe: the resolved `Recipe`.
        model_dir: str or Path, folder of this model.

    Keyword args (`**options`, whose names and defaults are `_fit`'s):
        num_classes: int, outputs of the model (m, or |C_t| for a teacher).
        class_names: list of str, names of the outputs.
        subset: list of int or None, class columns of a teacher's sub-task. Defaults to None (all).
        images: str, "all" or "positive" (sub-task images). Defaults to "all".
        epochs: int, epochs to train.
        title: str, shown in logs and messages. Defaults to "model".
        extra_callbacks: Keras callbacks run after ours (e.g. a test's interruption). Defaults to ().
        loss: a Keras loss, or None for the recipe's ASL. Defaults to None.
        targets_fn: callable -> training targets, e.g. labels joined with cached teacher logits; its
            arguments by `targets_by`. Defaults to None (the labels).
        targets_by: str, what `targets_fn` joins by: "index" `(targets [B, m], index [B])` (clean-image
            logits), "pass" `(targets, pass [B], index [B])` (each augmented view, `view_targets.compute`)
            or "step" `(targets, step [B])` (each mixed batch, `view_targets.compute_steps`; the stream is
            then deterministic). Defaults to "index".
        init_from: path of a `.keras` model of the same architecture to start from. Defaults to None.
        wrap_model: callable (model) -> the Keras model that is compiled and fitted (e.g. a student
            wrapped with its teachers for online distillation); `model` is what is saved. Defaults to None.
        mix: callable or None, `views.mixer`: every training batch is mixed in the pipeline before the
            model (and online teachers) see it (`pipeline.build(mix=...)`). Defaults to None.
        with_objects: bool, the pipeline reads where the objects are, for a `mix` that labels by object.
            Defaults to False.

    Raises:
        UserError: no training image, a non-finite loss or validation score, a full disk, an unreadable
            backup. The folder then keeps the state of the last finished epoch, and no temporary file.
    """
    from cpsd_tf import multiworker

    folder = Path(model_dir)
    write_dir = multiworker.working_dir(folder)  # the model folder; a non-chief worker's own temporary copy
    try:
        return _fit(recipe, write_dir, **options)
    finally:
        multiworker.release(folder, write_dir)


def _fit(
    recipe,
    model_dir,
    *,
    num_classes,
    class_names,
    subset=None,
    images="all",
    epochs,
    title="model",
    extra_callbacks=(),
    loss=None,
    targets_fn=None,
    targets_by="index",
    init_from=None,
    wrap_model=None,
    mix=None,
    with_objects=False,
):
    """`fit` into `model_dir`, the folder this process writes (the arguments are documented at `fit`)."""
    import keras
    import tensorflow as tf

    from cpsd_tf import multiworker, rundir
    from cpsd_tf.data import pipeline
    from cpsd_tf.models import build_model

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(model_dir)
    data, train_cfg = recipe.data, recipe.train
    select_split = train_cfg.select_split or data.val_split
    keras.utils.set_random_seed(recipe.seed)
    if train_cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    n_train = pipeline.num_examples(data.dir, data.train_split, subset=subset, images=images)
    if n_train == 0:
        raise UserError(
            f"{title}: split '{data.train_split}' of {data.dir} has no image with a positive label among "
            f"{list(class_names)[:5]} (teachers.images: {images}); use teachers.images: all"
        )
    batch = min(train_cfg.batch_size, n_train)
    steps = max(n_train // batch, 1)
    total_steps = steps * epochs
    train_ds = training_stream(recipe, batch, subset=subset, images=images, mix=mix, with_objects=with_objects,
                               with_index=targets_fn is not None and targets_by != "step",
                               with_pass=targets_by == "pass", with_step=targets_by == "step")
    if targets_fn is not None:
        keys = {"index": ("index",), "pass": ("pass", "index"), "step": ("step",)}[targets_by]
        train_ds = train_ds.map(lambda f, y: (f["image"], targets_fn(y, *(f[k] for k in keys))),
                                num_parallel_calls=tf.data.AUTOTUNE)
    val_ds = pipeline.build(data.dir, select_split, batch_size=max(batch, 64), training=False, cache=True,
                            image_size=data.image_size, subset=subset)
    _, val_y = pipeline.labels_matrix(data.dir, select_split, subset=subset)

    strategy = choose_strategy(train_cfg.strategy)
    with strategy.scope():
        model = build_model(
            recipe.model.backbone, recipe.model.head, num_classes, data.image_size,
            weights=recipe.model.weights, head_options=recipe.model.head_options,
            class_names=class_names, class_indices=subset, name=title.replace("-", "_"),
        )
        if init_from is not None:
            model.set_weights(rundir.load_model(init_from).get_weights())
        trainer = model
        if wrap_model is not None:
            trainer = wrap_model(model)
            trainer(np.zeros((1, data.image_size, data.image_size, 3), np.float32))  # BackupAndRestore needs it built
        optimizer = make_optimizer(train_cfg, total_steps)
        trainer.compile(optimizer=optimizer, loss=loss or make_loss(train_cfg.loss), jit_compile=train_cfg.jit_compile)
    multiworker.adapt(trainer, train_ds)  # a no-op without a multi-worker strategy
    train_ds = multiworker.distribute(train_ds, batch)  # each worker's rows of every global batch
    # Fail before the first epoch rather than after it: an epoch saves the best weights and the backup.
    ensure_space(model_dir, 2 * state_bytes(trainer))

    from cpsd_tf import tensorboard as tb
    from cpsd_tf.losses import DistillationLoss

    log_dir = model_dir / tb.LOG_DIR
    role = ("student" if isinstance(loss, DistillationLoss) else "teacher" if subset is not None
            else "baseline" if title.startswith("baseline") else title)  # title "pretrain": role "pretrain"
    hparams = tb.model_hparams(recipe, title, role=role, epochs=epochs)
    every = validate_every(recipe, role)
    cost = EpochCost()
    selection = callbacks.selection(model_dir, val_ds, val_y, class_names, optimizer.use_ema, log_dir, title, recipe,
                                    epochs=epochs, every=every, cost=cost, predict=predict_logits)
    start_clock, close_clock = callbacks.cost_clocks(cost, selection, model_dir)
    fit_callbacks = [
        start_clock,
        callbacks.stop_on_non_finite_loss(title, recipe),
        selection,
        callbacks.backup(model_dir, title, epochs, cost),
        callbacks.tensorboard_logs(model_dir, log_dir, recipe, hparams, selection),
        close_clock,
        *extra_callbacks,
    ]
    # A live bar on a terminal; one line per epoch in logs and pipes (a bar there writes every step).
    verbose = 0 if os.environ.get("CPSD_TF_QUIET") == "1" else (1 if sys.stdout.isatty() else 2)
    trainer.fit(train_ds, epochs=epochs, steps_per_epoch=steps, callbacks=fit_callbacks, verbose=verbose,
                shuffle=False)  # the pipeline shuffles

    state = json.loads((model_dir / SELECTION_FILE).read_text())
    trainer.load_weights(model_dir / BEST_WEIGHTS_FILE)
    metrics = {
        "model": title,
        "num_classes": num_classes,
        "classes": list(class_names),
        "subset": list(subset) if subset is not None else None,
        "train_images": n_train,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch,
        "ema_momentum": ema_momentum(train_cfg.ema_momentum, total_steps),
        "select_split": select_split,
        "best_epoch": state["best_epoch"],
        "best_weights": state["best_weights"],
        "select_metrics": state.get("best_metrics"),
        "history": state["history"],
        "validated_epochs": [e for e in range(1, epochs + 1) if is_validated(e, epochs, every)],
        **cost_metrics(state.get("cost", []), epochs, every),
    }
    model_path = model_dir / MODEL_FILE
    start = clock()
    with saving(model_dir, state_bytes(trainer)), io.atomic_path(model_path, suffix=".keras") as tmp:
        model.save(tmp)
    wall, cpu = clock() - start  # the final model.keras: once per model, not an epoch's cost
    metrics["epoch_cost"].update(model_save_time_s=round(float(wall), 4), model_save_cpu_s=round(float(cpu), 4))
    try:
        with saving(model_dir, 0):
            io.write_json(model_dir / METRICS_FILE, metrics)
    except BaseException:
        model_path.unlink(missing_ok=True)  # a model without its metrics is not finished: rerun saves both
        raise
    cleanup(model_dir)
    if math.isnan(state["best_mAP"]):
        import click

        click.echo(f"warning: {title}: split '{select_split}' has no positive label for its classes, so no epoch "
                   f"could be selected on it; the last epoch was kept", err=True)
    return metrics
