"""The trainer and the model stages on a tiny scenes data set: baseline, teachers, evaluate, resume."""

import json

import keras
import pytest
from click.testing import CliRunner

from cpsd_tf import baseline, evaluate, recipe, teachers, train
from cpsd_tf.cli import cli
from cpsd_tf.errors import UserError

from helpers_events import event_tags


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A recipe over a tiny generated scenes data set (32 px), 1 epoch of 4 steps."""
    root = tmp_path_factory.mktemp("tiny")
    tree = {
        "run_dir": str(root / "run"),
        "data": {
            "dir": str(root / "data"),
            "generator": "scenes",
            "scenes": {"train": 64, "val": 32, "test": 32, "image_size": 32},
            "image_size": 32,
            "eval_splits": ["test", "test_ood"],
            "augment": {"flip": False, "translate": 0.1},
        },
        "partition": {"k": 2},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.003},
    }
    path = root / "tiny.yaml"
    path.write_text(json.dumps(tree))
    return path


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
    assert train.is_done(model_dir)
    assert not (model_dir / "backup").exists() and not (model_dir / "best.weights.h5").exists()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["num_classes"] == 30 and metrics["best_weights"] in ("raw", "ema")
    assert 0 <= metrics["select_metrics"]["mAP"] <= 100
    model = evaluate.load_model(model_dir / "model.keras")
    assert model.output_shape == (None, 30)
    report = evaluate.run(r, run_dir)
    assert list(report["models"]) == ["baseline"] and list(report["models"]["baseline"]) == ["test", "test_ood"]
    assert set(report["models"]["baseline"]["test"]) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}
    assert json.loads((run_dir / "results.json").read_text())["models"] == report["models"]
    per_split = evaluate.run(r, run_dir, model=str(model_dir), split="test_ood")
    assert list(per_split) == ["test_ood"] and (model_dir / "eval.json").is_file()
    # TensorBoard event files hold loss, learning rate, validation mAP and per-class AP.
    tags = event_tags(model_dir / "tensorboard")
    assert {"epoch_loss", "epoch_learning_rate", "epoch_mAP", "val_mAP/raw"} <= tags
    assert sum(t.startswith("val_AP/") for t in tags) >= 20


def test_interrupted_training_resumes(tiny, tmp_path):
    r = recipe.load(tiny, ["train.epochs=2"])
    model_dir = tmp_path / "m"

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(r, model_dir, num_classes=30, class_names=[str(i) for i in range(30)], epochs=2,
                  extra_callbacks=[Crash()])
    assert not train.is_done(model_dir) and (model_dir / "backup").is_dir()
    metrics = train.fit(r, model_dir, num_classes=30, class_names=[str(i) for i in range(30)], epochs=2)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert len(metrics["keras_history"]["loss"]) == 1  # only the second epoch ran again


def test_teachers_only_shard_and_outputs(tiny, tmp_path):
    r = recipe.load(tiny)
    run_dir = tmp_path / "run"
    teachers.run(r, run_dir, only="cgp-1")
    part = json.loads((run_dir / "partition.json").read_text())
    done = sorted(p.name for p in (run_dir / "teachers").iterdir())
    assert done == ["cgp-1"]
    model = evaluate.load_model(run_dir / "teachers" / "cgp-1")
    assert model.output_shape == (None, len(part["cgp"][1]))
    assert not teachers.is_done(r, run_dir)
    everyone = teachers.teacher_list(r, run_dir)
    assert [t[2] for t in everyone] == part["cgp"] + part["dgp"]
    names = [t[0] for t in teachers.select(everyone, shard="1/2")]
    assert names == ["cgp-1", "dgp-1"]
    with pytest.raises(UserError, match="unknown teacher"):
        teachers.select(everyone, only="cgp-9")
    with_random = recipe.load(tiny, ["ablation=[random]"])
    assert [t[0] for t in teachers.teacher_list(with_random, run_dir)][-2:] == ["random-0", "random-1"]
    assert (run_dir / "partition_random.json").is_file()
    with pytest.raises(UserError, match="expected i/n"):
        teachers.parse_shard("x")


def test_cli_teachers_bad_shard(tiny):
    result = CliRunner().invoke(cli, ["teachers", "--recipe", str(tiny), "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard '3/2'" in result.output
