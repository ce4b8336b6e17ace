"""The callbacks of `train.fit`: the epoch clock, the stop on a non-finite loss, the backup for resume,
the selection of the best epoch and the TensorBoard logs (see `cpsd_tf.train` for what each writes)."""

import json
import math
from pathlib import Path

import numpy as np

from cpsd_tf import io
from cpsd_tf.checkpoints import BACKUP_DIR, BEST_WEIGHTS_FILE, SELECTION_FILE, ensure_space, saving, state_bytes
from cpsd_tf.errors import UserError


def is_validated(epoch, epochs, every):
    """Whether epoch `epoch` (from 1) of `epochs` is scored on the selection split: every `every`-th and the last."""
    return epoch % every == 0 or epoch == epochs


def _non_finite(values):
    """'nan' or 'inf' (the kind of the first bad value), or None when all are finite."""
    values = np.asarray(values)
    if np.isfinite(values).all():
        return None
    return "nan" if np.isnan(values).any() else "inf"


def _non_finite_advice(recipe):
    return f"lower train.lr (now {recipe.train.lr:g}) or check the data"


def cost_clocks(cost, selection, model_dir):
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


def _learning_rate(optimizer):
    import keras

    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # mixed precision: LossScaleOptimizer
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def stop_on_non_finite_loss(title, recipe):
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


def backup(model_dir, title, epochs, cost):
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


def selection(model_dir, val_ds, val_y, class_names, has_ema, log_dir, title, recipe, *, epochs, every, cost,
              predict):
    """The callback that scores raw and EMA weights on the selection split (`predict(model, val_ds)` ->
    logits) on validated epochs and keeps the best."""
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
            scores = predict(self.model, val_ds)
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


def tensorboard_logs(model_dir, log_dir, recipe, hparams, selection):
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
