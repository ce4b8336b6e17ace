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
write never leaves a half-written file where a reader looks.
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from cpsd_tf import io
from cpsd_tf.checkpoints import (BACKUP_DIR, BEST_WEIGHTS_FILE, SELECTION_FILE, cleanup, ensure_space,
                                 remove_temporaries, saving, state_bytes)
from cpsd_tf.epoch_cost import EpochCost, clock, cost_metrics
from cpsd_tf.errors import UserError
from cpsd_tf.rundir import METRICS_FILE, MODEL_FILE


def _non_finite(values):
    """'nan' or 'inf' (the kind of the first bad value), or None when all are finite."""
    values = np.asarray(values)
    if np.isfinite(values).all():
        return None
    return "nan" if np.isnan(values).any() else "inf"


def _non_finite_advice(recipe):
    return f"lower train.lr (now {recipe.train.lr:g}) or check the data"


# --- validation schedule and epoch cost ----------------------------------------------------------------


def is_validated(epoch, epochs, every):
    """Whether epoch `epoch` (from 1) of `epochs` is scored on the selection split: every `every`-th and the last."""
    return epoch % every == 0 or epoch == epochs


def validate_every(recipe, role):
    """Epochs between validations of a model of `role`: its stage's `validate_every` (baseline, teachers,
    distill for a student), else `train.validate_every` (e.g. pretraining)."""
    section = {"baseline": recipe.baseline, "teacher": recipe.teachers, "student": recipe.distill}.get(role)
    return getattr(section, "validate_every", None) or recipe.train.validate_every


def _cost_callbacks(cost, selection, model_dir):
    """Two callbacks around ours: the first starts each epoch's clock and stops its training part; the last
    closes the epoch's record, keeps it in the selection state (saved, so it survives a resume) and shows
    the epoch-end cost in Keras' epoch line (`val_time`, `save_time`, seconds)."""
    import keras

    class StartClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            cost.begin(epoch)

        def on_epoch_end(self, epoch, logs=None):
            cost.train_done()

    class CloseClock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record = cost.finish()
            selection.state.setdefault("cost", []).append(record)
            with saving(model_dir, 0):
                io.write_json(selection.state_path, selection.state)
            if logs is not None:  # Keras' progress line runs after every callback and prints these logs
                if record["validated"]:
                    logs["val_time"] = record["validation_time_s"]
                logs["save_time"] = record["save_time_s"]

    return StartClock(), CloseClock()


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


def _learning_rate(optimizer):
    import keras

    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # mixed precision: LossScaleOptimizer
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _stop_on_non_finite_loss(title, recipe):
    import keras

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        """Raise at the first batch whose logged loss is NaN or infinite (before anything is saved).

        Keras logs the running mean of the epoch, so a bad batch keeps it bad: one float check per step,
        on a value Keras has already fetched for the other callbacks.
        """

        async_safe = True  # raising from Keras' callback thread still stops `fit` (at the next dispatch)

        def __init__(self):
            super().__init__()
            self.epoch = 1

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise UserError(f"{title}: the loss became {_non_finite(float(loss))} at epoch {self.epoch}, "
                                f"step {batch + 1}; {_non_finite_advice(recipe)}")

    return StopOnNonFiniteLoss()


def _backup_callback(model_dir, title, epochs, cost):
    import click
    import keras

    class Backup(keras.callbacks.BackupAndRestore):
        """Keras' BackupAndRestore (same files), with atomic, space-checked saves and one-line errors.

        Relies on the attributes of Keras 3's BackupAndRestore (`_weights_path`, `_current_epoch`, ...).
        """

        def __init__(self):
            super().__init__(str(Path(model_dir) / BACKUP_DIR), save_freq="epoch", delete_checkpoint=False)

        def on_train_begin(self, logs=None):
            state_path = Path(self._training_metadata_path)
            try:
                done = json.loads(state_path.read_text())["epoch"] if state_path.is_file() else None
                super().on_train_begin(logs)
            except (OSError, ValueError, KeyError, TypeError) as e:
                reason = (str(e).splitlines() or [type(e).__name__])[0]
                raise UserError(f"{self.backup_dir}: unreadable training backup of {title} ({reason}); "
                                f"delete it to train {title} from the start") from None
            if done is not None:
                if done < epochs:
                    click.echo(f"resuming {title} at epoch {done + 1}")
                else:
                    click.echo(f"resuming {title} after its last epoch ({epochs}): saving the model")

        def _save_model(self):
            with cost.measure("save"):
                self._save_backup()

        def _save_backup(self):
            folder = Path(self.backup_dir)
            folder.mkdir(parents=True, exist_ok=True)
            with saving(model_dir, state_bytes(self.model)), \
                    io.atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
            with saving(model_dir, 0):
                io.write_json(self._training_metadata_path, {"epoch": self._current_epoch, "batch": self._last_batch_seen})

    return Backup()


def _selection_callback(model_dir, val_ds, val_y, class_names, has_ema, log_dir, title, recipe, *, epochs, every,
                        cost):
    import keras

    from cpsd_tf import tensorboard as tb
    from cpsd_tf.metrics import multilabel_metrics

    class SelectBest(keras.callbacks.SwapEMAWeights):
        """Each validated epoch (`is_validated`): val mAP of raw and EMA weights; keep the best weights seen.

        Every epoch gets a history record (with `val_mAP_*` when validated) in the resumable state file.
        Logs `selection/val_mAP/raw`, `val_mAP/ema` and `val_AP/<class>` (raw) at step = epoch number (from 1).
        """

        def __init__(self):
            super().__init__(swap_on_epoch=False)
            self.state_path = Path(model_dir) / SELECTION_FILE
            self.best_path = Path(model_dir) / BEST_WEIGHTS_FILE
            self.writer = tb.EventWriter(Path(log_dir) / tb.SELECTION_DIR)
            self.state = {"best_mAP": -1.0, "best_epoch": -1, "best_weights": None, "history": []}

        def on_train_begin(self, logs=None):
            if self.state_path.is_file():
                state = json.loads(self.state_path.read_text())
                if state["best_epoch"] < 0 or self.best_path.is_file():  # no best yet: only skipped epochs
                    self.state = state

        def on_epoch_begin(self, epoch, logs=None):
            # Resumed: forget records of epochs the backup does not hold (a crash between this callback's
            # save and the backup's), so each epoch has one record. Their best weights, if best, stay:
            # they are weights that were trained and scored.
            for key in ("history", "cost"):
                self.state[key] = [h for h in self.state.get(key, []) if h["epoch"] <= epoch]

        def _score(self, epoch, which):
            scores = predict_logits(self.model, val_ds)
            kind = _non_finite(scores)
            if kind:
                raise UserError(f"{title}: the validation scores ({which} weights) became {kind} at epoch {epoch + 1}; "
                                f"{_non_finite_advice(recipe)}")
            return multilabel_metrics(val_y, scores, from_logits=True, per_class=True)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            train_logs = {k: float(v) for k, v in logs.items() if not k.startswith("val_") and np.isscalar(v)}
            record = {"epoch": epoch + 1, **train_logs, "learning_rate": _learning_rate(self.model.optimizer)}
            if not is_validated(epoch + 1, epochs, every):
                self.state["history"].append(record)
                with cost.measure("save"), saving(model_dir, 0):
                    io.write_json(self.state_path, self.state)
                return
            cost.validated = True
            with cost.measure("validation"):
                candidates = {"raw": self._score(epoch, "raw")}
                if has_ema:
                    self._swap_variables()
                    try:
                        candidates["ema"] = self._score(epoch, "EMA")
                    finally:
                        self._swap_variables()
            # Room for this epoch's saves (best weights, then the backup), checked before either is written.
            ensure_space(model_dir, 2 * state_bytes(self.model))
            which = max(candidates, key=lambda k: candidates[k]["mAP"])
            best = candidates[which]
            logs["val_mAP"] = candidates["raw"]["mAP"]
            if has_ema:
                logs["val_mAP_ema"] = candidates["ema"]["mAP"]
            record = {"epoch": epoch + 1, **{f"val_mAP_{k}": v["mAP"] for k, v in candidates.items()}, **train_logs,
                      "learning_rate": record["learning_rate"]}
            self.state["history"].append(record)
            # NaN mAP: the selection split has no positive for these classes, so there is nothing to
            # select on; the latest epoch is kept (the caller warns).
            if self.state["best_epoch"] < 0 or math.isnan(best["mAP"]) or best["mAP"] > self.state["best_mAP"]:
                if which == "ema":
                    self._swap_variables()
                try:
                    with cost.measure("save"), saving(model_dir, state_bytes(self.model)), \
                            io.atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                        self.model.save_weights(tmp)
                finally:
                    if which == "ema":
                        self._swap_variables()
                self.state.update(best_mAP=best["mAP"], best_epoch=epoch + 1, best_weights=which,
                                  best_metrics={k: v for k, v in best.items() if k != "AP_per_class"})
            with cost.measure("save"), saving(model_dir, 0):
                io.write_json(self.state_path, self.state)
            scalars = {f"val_mAP/{k}": v["mAP"] for k, v in candidates.items()}
            scalars.update({f"val_AP/{name}": ap for name, ap in zip(class_names, candidates["raw"]["AP_per_class"])
                            if ap is not None})
            with saving(model_dir, 0):
                self.writer.scalars(scalars, step=epoch + 1)

        def on_train_end(self, logs=None):
            self.writer.close()

    return SelectBest()


def _tensorboard_callback(model_dir, log_dir, recipe, hparams, selection):
    import keras

    from cpsd_tf import tensorboard as tb

    class TensorBoardLogs(keras.callbacks.Callback):
        """The model's TensorBoard logs besides `selection/` (tags: `cpsd_tf.tensorboard`).

        Start: the recipe text and the HParams session in `log_dir`. Each epoch: the training logs in
        `train/` at step = epoch number (from 1): `epoch_loss`, `epoch_learning_rate`, a student's loss terms
        `loss/<term>`; the `val_*` logs are the selection callback's, logged by it. End: the best selection
        mAP of `selection` (the HParams metric).
        """

        def on_train_begin(self, logs=None):
            self.root = tb.EventWriter(log_dir)
            self.train = tb.EventWriter(Path(log_dir) / tb.TRAIN_DIR)
            with saving(model_dir, 0):
                tb.log_model_start(self.root, recipe, hparams, trial_id=model_dir)

        def on_epoch_end(self, epoch, logs=None):
            scalars = {tb.train_tag(k): float(v) for k, v in (logs or {}).items()
                       if not k.startswith("val_") and np.isscalar(v)}
            scalars["epoch_learning_rate"] = _learning_rate(self.model.optimizer)
            with saving(model_dir, 0):
                self.train.scalars(scalars, step=epoch + 1)

        def on_train_end(self, logs=None):
            with saving(model_dir, 0):
                tb.log_best(self.root, selection.state["best_mAP"], selection.state["best_epoch"])
            self.root.close()
            self.train.close()

    return TensorBoardLogs()


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
        targets_by_pass: bool, call `targets_fn(targets, pass, index)` with the data pass of each record
            (teacher targets of each augmented view, `view_targets`). Defaults to False.
        targets_fn: callable (targets [B, m], index [B]) -> training targets, e.g. labels joined with
            cached teacher logits. Defaults to None (the labels).
        init_from: path of a `.keras` model of the same architecture to start from. Defaults to None.
        wrap_model: callable (model) -> the Keras model that is compiled and fitted (e.g. a student
            wrapped with its teachers for online distillation); `model` is what is saved. Defaults to None.
        with_objects: bool, batches are `({"image", "objects"}, targets)` (`pipeline.build`), for a
            `wrap_model` that labels mixed views by object (`views`). Defaults to False.

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
    targets_by_pass=False,
    init_from=None,
    wrap_model=None,
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
    train_ds = pipeline.build(
        data.dir, data.train_split, batch_size=batch, training=True, augment=data.augment, images=images,
        shuffle_buffer=train_cfg.shuffle_buffer, seed=recipe.seed, repeat=True, cache=train_cfg.cache,
        with_index=targets_fn is not None, with_pass=targets_by_pass, image_size=data.image_size, subset=subset,
        with_objects=with_objects,
        # several workers each cut their share out of their own copy of every global batch: the copies must agree
        deterministic=True if multiworker.active() else None,
    )
    if targets_fn is not None and targets_by_pass:
        train_ds = train_ds.map(lambda f, y: (f["image"], targets_fn(y, f["pass"], f["index"])),
                                num_parallel_calls=tf.data.AUTOTUNE)
    elif targets_fn is not None:
        train_ds = train_ds.map(lambda f, y: (f["image"], targets_fn(y, f["index"])), num_parallel_calls=tf.data.AUTOTUNE)
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
    selection = _selection_callback(model_dir, val_ds, val_y, class_names, optimizer.use_ema, log_dir, title, recipe,
                                    epochs=epochs, every=every, cost=cost)
    start_clock, close_clock = _cost_callbacks(cost, selection, model_dir)
    callbacks = [
        start_clock,
        _stop_on_non_finite_loss(title, recipe),
        selection,
        _backup_callback(model_dir, title, epochs, cost),
        _tensorboard_callback(model_dir, log_dir, recipe, hparams, selection),
        close_clock,
        *extra_callbacks,
    ]
    # A live bar on a terminal; one line per epoch in logs and pipes (a bar there writes every step).
    verbose = 0 if os.environ.get("CPSD_TF_QUIET") == "1" else (1 if sys.stdout.isatty() else 2)
    trainer.fit(train_ds, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
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
