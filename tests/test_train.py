"""The trainer and the model stages on a tiny scenes data set: baseline, teachers, evaluate, resume, faults."""

import errno
import json
import math
import re
from pathlib import Path

import keras
import pytest
from click.testing import CliRunner

from cpsd_tf import baseline, checkpoints, evaluate, io, partition, recipe, rundir, teachers, train
from cpsd_tf.cli import cli
from cpsd_tf.errors import UserError

from helpers_events import event_tags
from helpers_train import CrashAtEpochEnd, _fit, _leftovers, tiny  # noqa: F401  (tiny: a module fixture)


def test_ema_momentum_auto():
    assert train.ema_momentum("auto", 100) == pytest.approx(0.9)
    assert train.ema_momentum("auto", 10**7) == 0.9997
    assert train.ema_momentum(None, 100) is None and train.ema_momentum(0.99, 5) == 0.99


def test_optimizer_schedule_warms_up_then_decays():
    r = recipe.from_dict({"run_dir": "r", "data": {"dir": "d"}, "train": {"lr": 1e-3, "warmup": 0.2}})
    opt = train.make_optimizer(r.train, total_steps=100)
    lr = [float(opt.learning_rate_schedule(s)) if hasattr(opt, "learning_rate_schedule") else float(opt._learning_rate(s)) for s in (0, 20, 100)]
    assert lr[0] < lr[1] and lr[1] == pytest.approx(1e-3) and lr[2] < 1e-4


def test_baseline_then_evaluate(tiny, tmp_path):
    r = recipe.load(tiny)
    run_dir = tmp_path / "run"
    baseline.run(r, run_dir)
    model_dir = run_dir / "baseline"
    assert rundir.model_is_done(model_dir)
    assert not (model_dir / "backup").exists() and not (model_dir / "best.weights.h5").exists()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["num_classes"] == 30 and metrics["best_weights"] in ("raw", "ema")
    assert 0 <= metrics["select_metrics"]["mAP"] <= 100
    model = rundir.load_model(model_dir / "model.keras")
    assert model.output_shape == (None, 30)
    report = evaluate.run(r, run_dir)
    assert list(report["models"]) == ["baseline"] and list(report["models"]["baseline"]) == ["test", "test_ood"]
    assert set(report["models"]["baseline"]["test"]) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}
    assert json.loads((run_dir / "results.json").read_text())["models"] == report["models"]
    per_split = evaluate.run(r, run_dir, model=str(model_dir), split="test_ood")
    assert list(per_split) == ["test_ood"] and (model_dir / "eval.json").is_file()
    # TensorBoard event files hold loss, learning rate, validation mAP (once: no Keras `epoch_mAP`) and per-class AP.
    tags = event_tags(model_dir / "tensorboard")
    assert {"epoch_loss", "epoch_learning_rate", "val_mAP/raw"} <= tags and "epoch_mAP" not in tags
    assert sum(t.startswith("val_AP/") for t in tags) >= 20


CLASSES = [str(i) for i in range(30)]


def test_interrupted_training_resumes(tiny, tmp_path, capsys, monkeypatch):
    r = recipe.load(tiny, ["train.epochs=2"])
    model_dir = tmp_path / "m"

    with pytest.raises(KeyboardInterrupt):
        _fit(r, model_dir, 2, extra_callbacks=[CrashAtEpochEnd()])
    assert not rundir.model_is_done(model_dir) and (model_dir / "backup").is_dir()
    assert "resuming" not in capsys.readouterr().out

    # The rerun resumes at epoch 2, then its final save hits a full disk the free-space check did not see.
    def save_on_full_disk(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", save_on_full_disk)
    with pytest.raises(UserError, match=rf"^disk full: {re.escape(str(model_dir))} needs ~\d+ MB, \d+ MB free$"):
        _fit(r, model_dir, 2)
    out = capsys.readouterr().out
    assert out.count("resuming model at epoch 2\n") == 1 and out.count("resuming") == 1
    assert not (model_dir / "model.keras").exists() and not (model_dir / "metrics.json").exists()
    assert (model_dir / "backup").is_dir() and (model_dir / "best.weights.h5").is_file()
    assert _leftovers(model_dir) == []
    monkeypatch.undo()

    # Both epochs are trained: the last run only saves, and metrics.json holds the whole history.
    metrics = _fit(r, model_dir, 2)
    assert "resuming model after its last epoch (2)" in capsys.readouterr().out
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert all(math.isfinite(h["loss"]) and h["learning_rate"] > 0 and "val_mAP_raw" in h for h in metrics["history"])
    assert "keras_history" not in metrics
    assert json.loads((model_dir / "metrics.json").read_text())["history"] == metrics["history"]
    assert sorted(p.name for p in model_dir.iterdir()) == ["metrics.json", "model.keras", "tensorboard"]
    assert _leftovers(model_dir) == []


def test_nan_loss_stops_at_the_first_bad_batch(tiny, tmp_path):
    import tensorflow as tf

    r = recipe.load(tiny, ["train.epochs=2"])  # 64 images in batches of 16: 4 steps per epoch
    model_dir = tmp_path / "m"
    calls = tf.Variable(0)

    def loss(y, logits):  # finite for 5 batches, NaN from the 6th on (epoch 2, step 2)
        calls.assign_add(1)
        return tf.where(calls > 5, float("nan"), keras.ops.mean(keras.ops.square(logits - y)))

    class CountBatches(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            CountBatches.seen += 1

    with pytest.raises(UserError) as caught:
        _fit(r, model_dir, 2, loss=loss, extra_callbacks=[CountBatches()])
    assert str(caught.value) == "model: the loss became nan at epoch 2, step 2; lower train.lr (now 0.003) or check the data"
    assert CountBatches.seen == 5  # stopped on the bad batch itself
    # The folder keeps epoch 1: its backup, selection record and best weights; nothing of epoch 2.
    assert not rundir.model_is_done(model_dir)
    assert [h["epoch"] for h in json.loads((model_dir / "selection.json").read_text())["history"]] == [1]
    assert json.loads((model_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert (model_dir / "best.weights.h5").is_file() and _leftovers(model_dir) == []


def test_non_finite_validation_scores_are_a_one_line_error(tiny, tmp_path, monkeypatch):
    """An exploding model (e.g. train.lr=1e6) overflows its logits while ASL's clipped loss can stay finite."""
    r = recipe.load(tiny)
    model_dir = tmp_path / "m"
    real_predict = train.predict_logits
    monkeypatch.setattr(train, "predict_logits", lambda model, ds: real_predict(model, ds) + float("inf"))
    with pytest.raises(UserError) as caught:
        _fit(r, model_dir, 1)
    assert str(caught.value) == ("model: the validation scores (raw weights) became inf at epoch 1; "
                                 "lower train.lr (now 0.003) or check the data")
    assert not rundir.model_is_done(model_dir) and not (model_dir / "best.weights.h5").exists()
    assert not (model_dir / "selection.json").exists() and not (model_dir / "backup").exists()
    assert _leftovers(model_dir) == []


def test_full_disk_keeps_the_last_finished_epoch(tiny, tmp_path, monkeypatch):
    r = recipe.load(tiny, ["train.epochs=2"])
    model_dir = tmp_path / "m"
    free = {"bytes": 1 << 40}
    monkeypatch.setattr(checkpoints, "free_bytes", lambda folder: free["bytes"])

    class FillDisk(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # runs after epoch 1 is saved
            free["bytes"] = 100 << 10

    with pytest.raises(UserError, match=rf"^disk full: {re.escape(str(model_dir))} needs ~\d+ MB, 0 MB free$"):
        _fit(r, model_dir, 2, extra_callbacks=[FillDisk()])
    assert [h["epoch"] for h in json.loads((model_dir / "selection.json").read_text())["history"]] == [1]
    assert json.loads((model_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert (model_dir / "best.weights.h5").is_file() and not (model_dir / "model.keras").exists()
    assert _leftovers(model_dir) == []
    # A disk full from the start fails before the first epoch.
    with pytest.raises(UserError, match="^disk full: "):
        _fit(r, tmp_path / "other", 1)
    assert list((tmp_path / "other").iterdir()) == []


def test_saving_checks_space_and_turns_enospc_into_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "free_bytes", lambda folder: 3 * checkpoints.MB)
    with pytest.raises(UserError) as caught:
        with checkpoints.saving(tmp_path, 10 * checkpoints.MB):
            pytest.fail("the block must not run without room")
    assert str(caught.value) == f"disk full: {tmp_path} needs ~11 MB, 3 MB free"
    monkeypatch.setattr(checkpoints, "free_bytes", lambda folder: 1 << 40)
    h5py_text = "Unable to synchronously close file (file write failed: errno = 28, error message = 'No space left on device')"
    for error in (OSError(errno.ENOSPC, "No space left on device"), OSError(h5py_text)):
        with pytest.raises(UserError, match="^disk full: "):
            with checkpoints.saving(tmp_path, checkpoints.MB), io.atomic_path(tmp_path / "model.keras", suffix=".keras") as tmp:
                tmp.write_bytes(b"half")
                raise error
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(PermissionError):  # other I/O errors stay what they are
        with checkpoints.saving(tmp_path, 0):
            raise PermissionError(errno.EACCES, "Permission denied")

def test_teachers_only_shard_and_outputs(tiny, tmp_path):
    r = recipe.load(tiny)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match="cpsd-tf partition"):
        teachers.run(r, run_dir, only="cgp-1")  # a stage never runs another: the partition comes first
    partition.run(r, run_dir)
    teachers.run(r, run_dir, only="cgp-1")
    part = json.loads((run_dir / "partition.json").read_text())
    done = sorted(p.name for p in (run_dir / "teachers").iterdir())
    assert done == ["cgp-1"]
    model = rundir.load_model(run_dir / "teachers" / "cgp-1")
    assert model.output_shape == (None, len(part["cgp"][1]))
    assert not teachers.is_done(r, run_dir)
    everyone = rundir.teacher_list(r, run_dir)
    assert [t[2] for t in everyone] == part["cgp"] + part["dgp"]
    names = [t[0] for t in teachers.select(everyone, shard="1/2")]
    assert names == ["cgp-1", "dgp-1"]
    with pytest.raises(UserError, match="unknown teacher"):
        teachers.select(everyone, only="cgp-9")
    with_random = recipe.load(tiny, ["ablation=[random]"])
    assert not partition.is_done(with_random, run_dir)  # is_done only looks: it writes nothing
    assert not (run_dir / "partition_random.json").exists()
    partition.run(with_random, run_dir)
    assert [t[0] for t in rundir.teacher_list(with_random, run_dir)][-2:] == ["random-0", "random-1"]
    with pytest.raises(UserError, match="expected i/n"):
        teachers.parse_shard("x")


def test_cli_teachers_bad_shard(tiny):
    result = CliRunner().invoke(cli, ["teachers", "--recipe", str(tiny), "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard '3/2'" in result.output
