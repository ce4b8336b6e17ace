"""The trainer shared by baseline, teachers and student: Keras `fit` on the tf.data pipeline.

AdamW (decoupled weight decay, none on biases and normalisation parameters), warm-up + cosine schedule,
weight EMA with raw and EMA weights both evaluated each epoch on the selection split (the better one is
kept, as the official code does), `BackupAndRestore` for resume, TensorBoard logs and `metrics.json`.

A model folder holds, when finished: `model.keras`, `metrics.json`, `tensorboard/`. While training it
also holds `backup/` (resume state) and `selection.json` + `best.weights.h5` (best epoch so far).
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from cpsd_tf import io
from cpsd_tf.errors import UserError

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"


def is_done(model_dir) -> bool:
    return (Path(model_dir) / MODEL_FILE).is_file() and (Path(model_dir) / METRICS_FILE).is_file()


def ema_momentum(setting, total_steps):
    """The EMA momentum for a run of `total_steps` ('auto': an averaging window of ~10 % of the run)."""
    if setting is None:
        return None
    if setting == "auto":
        return float(min(0.9997, max(0.0, 1.0 - 10.0 / max(total_steps, 1))))
    return float(setting)


def choose_strategy(name):
    """The `tf.distribute` strategy of a recipe ('auto': mirrored over several GPUs, else default)."""
    import tensorflow as tf

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

    with warnings.catch_warnings():
        # TFRecord datasets have unknown cardinality, so Keras warns when the data ends; that is the end.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        return np.asarray(model.predict(dataset, steps=steps, verbose=0), dtype=np.float32)


def _selection_callback(model_dir, val_ds, val_y, class_names, has_ema, log_dir):
    import keras
    import tensorflow as tf

    from cpsd_tf.metrics import multilabel_metrics

    class SelectBest(keras.callbacks.SwapEMAWeights):
        """Each epoch: val mAP of raw and EMA weights; keep the best weights seen (resumable state)."""

        def __init__(self):
            super().__init__(swap_on_epoch=False)
            self.state_path = Path(model_dir) / "selection.json"
            self.best_path = Path(model_dir) / "best.weights.h5"
            self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "selection"))
            self.state = {"best_mAP": -1.0, "best_epoch": -1, "best_weights": None, "history": []}

        def on_train_begin(self, logs=None):
            if self.state_path.is_file() and self.best_path.is_file():
                self.state = json.loads(self.state_path.read_text())

        def _score(self):
            scores = predict_logits(self.model, val_ds)
            return multilabel_metrics(val_y, scores, from_logits=True, per_class=True)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            candidates = {"raw": self._score()}
            if has_ema:
                self._swap_variables()
                try:
                    candidates["ema"] = self._score()
                finally:
                    self._swap_variables()
            which = max(candidates, key=lambda k: candidates[k]["mAP"])
            best = candidates[which]
            logs["val_mAP"] = candidates["raw"]["mAP"]
            if has_ema:
                logs["val_mAP_ema"] = candidates["ema"]["mAP"]
            record = {"epoch": epoch + 1, **{f"val_mAP_{k}": v["mAP"] for k, v in candidates.items()}}
            record.update({k: float(v) for k, v in logs.items() if k in ("loss", "learning_rate")})
            self.state["history"].append(record)
            # NaN mAP: the selection split has no positive for these classes, so there is nothing to
            # select on; the latest epoch is kept (the caller warns).
            if self.state["best_epoch"] < 0 or math.isnan(best["mAP"]) or best["mAP"] > self.state["best_mAP"]:
                if which == "ema":
                    self._swap_variables()
                try:
                    with io.atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                        self.model.save_weights(tmp)
                finally:
                    if which == "ema":
                        self._swap_variables()
                self.state.update(best_mAP=best["mAP"], best_epoch=epoch + 1, best_weights=which,
                                  best_metrics={k: v for k, v in best.items() if k != "AP_per_class"})
            io.write_json(self.state_path, self.state)
            with self.writer.as_default(step=epoch + 1):
                for k, v in candidates.items():
                    tf.summary.scalar(f"val_mAP/{k}", v["mAP"])
                for name, ap in zip(class_names, candidates["raw"]["AP_per_class"]):
                    if ap is not None:
                        tf.summary.scalar(f"val_AP/{name}", ap)
            self.writer.flush()

    return SelectBest()


def fit(
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
    init_from=None,
    wrap_model=None,
):
    """Train one model into `model_dir` (resuming from its backup) and return its `metrics.json` dict.

    Args:
        recipe: the resolved `Recipe`.
        model_dir: str or Path, folder of this model.
        num_classes: int, outputs of the model (m, or |C_t| for a teacher).
        class_names: list of str, names of the outputs.
        subset: list of int or None, class columns of a teacher's sub-task. Defaults to None (all).
        images: str, "all" or "positive" (sub-task images). Defaults to "all".
        epochs: int, epochs to train.
        title: str, shown in logs. Defaults to "model".
        extra_callbacks: Keras callbacks run after ours (e.g. a test's interruption). Defaults to ().
        loss: a Keras loss, or None for the recipe's ASL. Defaults to None.
        targets_fn: callable (targets [B, m], index [B]) -> training targets, e.g. labels joined with
            cached teacher logits. Defaults to None (the labels).
        init_from: path of a `.keras` model of the same architecture to start from. Defaults to None.
        wrap_model: callable (model) -> the Keras model that is compiled and fitted (e.g. a student
            wrapped with its teachers for online distillation); `model` is what is saved. Defaults to None.
    """
    import keras
    import tensorflow as tf

    from cpsd_tf.data import pipeline
    from cpsd_tf.models import build_model

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
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
    common = dict(image_size=data.image_size, subset=subset, normalize=recipe.model.normalize)
    train_ds = pipeline.build(
        data.dir, data.train_split, batch_size=batch, training=True, augment=data.augment, images=images,
        shuffle_buffer=train_cfg.shuffle_buffer, seed=recipe.seed, repeat=True, cache=train_cfg.cache,
        with_index=targets_fn is not None, **common,
    )
    if targets_fn is not None:
        train_ds = train_ds.map(lambda f, y: (f["image"], targets_fn(y, f["index"])), num_parallel_calls=tf.data.AUTOTUNE)
    val_ds = pipeline.build(data.dir, select_split, batch_size=max(batch, 64), training=False, cache=True, **common)
    _, val_y = pipeline.labels_matrix(data.dir, select_split, subset=subset)

    strategy = choose_strategy(train_cfg.strategy)
    with strategy.scope():
        model = build_model(
            recipe.model.backbone, recipe.model.head, num_classes, data.image_size,
            weights=recipe.model.weights, head_options=recipe.model.head_options,
            class_names=class_names, class_indices=subset, name=title.replace("-", "_"),
        )
        if init_from is not None:
            from cpsd_tf.evaluate import load_model

            model.set_weights(load_model(init_from).get_weights())
        trainer = model
        if wrap_model is not None:
            trainer = wrap_model(model)
            trainer(np.zeros((1, data.image_size, data.image_size, 3), np.float32))  # BackupAndRestore needs it built
        optimizer = make_optimizer(train_cfg, total_steps)
        trainer.compile(optimizer=optimizer, loss=loss or make_loss(train_cfg.loss), jit_compile=train_cfg.jit_compile)

    log_dir = model_dir / "tensorboard"
    callbacks = [
        _selection_callback(model_dir, val_ds, val_y, class_names, optimizer.use_ema, log_dir),
        keras.callbacks.BackupAndRestore(str(model_dir / "backup"), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False, update_freq="epoch"),
        *extra_callbacks,
    ]
    # A live bar on a terminal; one line per epoch in logs and pipes (a bar there writes every step).
    verbose = 0 if os.environ.get("CPSD_TF_QUIET") == "1" else (1 if sys.stdout.isatty() else 2)
    history = trainer.fit(train_ds, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # the pipeline shuffles

    state = json.loads((model_dir / "selection.json").read_text())
    trainer.load_weights(model_dir / "best.weights.h5")
    with io.atomic_path(model_dir / MODEL_FILE, suffix=".keras") as tmp:
        model.save(tmp)
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
        "keras_history": {k: [float(x) for x in v] for k, v in history.history.items()},
    }
    io.write_json(model_dir / METRICS_FILE, metrics)
    _cleanup(model_dir)
    if math.isnan(state["best_mAP"]):
        import click

        click.echo(f"warning: {title}: split '{select_split}' has no positive label for its classes, so no epoch "
                   f"could be selected on it; the last epoch was kept", err=True)
    return metrics


def _cleanup(model_dir):
    import shutil

    shutil.rmtree(Path(model_dir) / "backup", ignore_errors=True)
    for name in ("selection.json", "best.weights.h5"):
        path = Path(model_dir) / name
        if path.exists():
            path.unlink()
