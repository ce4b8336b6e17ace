"""The trainer's epoch cost in metrics.json and `validate_every` (issue 14): timings, schedule, resume."""

import json

import pytest

from cpsd_tf import epoch_cost, recipe, stage, train
from cpsd_tf.errors import UserError

from helpers_train import CrashAtEpochEnd, _fit, _leftovers, tiny  # noqa: F401  (tiny: a module fixture)


def _count_validations(monkeypatch):
    """Epochs (from 1) at which the selection split was scored, raw and EMA passes apart."""
    calls = []
    real_predict = train.predict_logits

    def counting(model, ds):
        calls.append(len(calls))
        return real_predict(model, ds)

    monkeypatch.setattr(train, "predict_logits", counting)
    return calls


def test_metrics_hold_one_cost_entry_per_epoch(tiny, tmp_path):
    r = recipe.load(tiny, ["train.epochs=2"])
    metrics = _fit(r, tmp_path / "m", 2)
    for key in epoch_cost.COST_KEYS:
        assert len(metrics[key]) == 2 and all(v >= 0 for v in metrics[key]), key
    for kind in ("time", "cpu"):
        for epoch in range(2):
            parts = sum(metrics[f"{p}_{kind}_s"][epoch] for p in ("train", "validation", "save"))
            assert parts <= metrics[f"epoch_{kind}_s"][epoch] * 1.001 + 1e-3, (kind, epoch)
    assert all(v > 0 for v in metrics["train_time_s"] + metrics["validation_time_s"] + metrics["save_time_s"])
    assert metrics["validated_epochs"] == [1, 2]
    summary = metrics["epoch_cost"]
    assert summary["validate_every"] == 1 and summary["epochs_timed"] == 2
    assert summary["total_epoch_time_s"] == pytest.approx(sum(metrics["epoch_time_s"]), abs=2e-3)
    assert 0 < summary["epoch_end_time_share"] < 1 and summary["model_save_time_s"] > 0
    on_disk = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert on_disk["epoch_time_s"] == metrics["epoch_time_s"] and on_disk["epoch_cost"] == summary


@pytest.mark.parametrize("epochs, expected", [(4, [2, 4]), (3, [2, 3])])
def test_validate_every_scores_only_scheduled_epochs_and_selects_among_them(tiny, tmp_path, monkeypatch, epochs,
                                                                            expected):
    r = recipe.load(tiny, [f"train.epochs={epochs}", "train.validate_every=2"])
    calls = _count_validations(monkeypatch)
    metrics = _fit(r, tmp_path / "m", epochs)
    assert len(calls) == 2 * len(expected)  # raw and EMA weights of each validated epoch
    assert metrics["validated_epochs"] == expected and metrics["epoch_cost"]["validate_every"] == 2
    assert [h["epoch"] for h in metrics["history"] if "val_mAP_raw" in h] == expected
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, epochs + 1))  # every epoch has its record
    assert metrics["best_epoch"] in expected
    skipped = [e - 1 for e in range(1, epochs + 1) if e not in expected]
    assert all(metrics["validation_time_s"][i] == 0 for i in skipped)
    assert all(metrics["validation_time_s"][e - 1] > 0 for e in expected)


def test_validate_every_resumes_after_a_skipped_epoch(tiny, tmp_path, monkeypatch):
    """A crash after epoch 1 (not validated, so no best weights yet) resumes at epoch 2 with epoch 1's records."""
    r = recipe.load(tiny, ["train.epochs=2", "train.validate_every=2"])
    model_dir = tmp_path / "m"

    with pytest.raises(KeyboardInterrupt):
        _fit(r, model_dir, 2, extra_callbacks=[CrashAtEpochEnd()])
    assert not (model_dir / "best.weights.h5").exists()
    assert json.loads((model_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    calls = _count_validations(monkeypatch)
    metrics = _fit(r, model_dir, 2)
    assert len(calls) == 2 and metrics["best_epoch"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert all(v is not None and v >= 0 for v in metrics["epoch_time_s"])  # epoch 1's cost survived the crash
    assert _leftovers(model_dir) == []


def test_stage_validate_every_falls_back_to_train_and_is_provenance():
    tree = {"run_dir": "r", "data": {"dir": "d"}, "train": {"validate_every": 3}, "teachers": {"validate_every": 1}}
    r = recipe.from_dict(tree)
    assert (r.baseline.validate_every, r.teachers.validate_every, r.distill.validate_every) == (3, 1, 3)
    assert [train.validate_every(r, role) for role in ("baseline", "teacher", "student", "pretrain")] == [3, 1, 3, 3]
    values = stage.model_values(r, "teachers")
    assert values["teachers.validate_every"] == 1 and "train.validate_every" not in values


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "two"])
def test_validate_every_must_be_a_positive_integer(value):
    with pytest.raises(UserError) as caught:
        recipe.from_dict({"run_dir": "r", "data": {"dir": "d"}}, overrides=[f"train.validate_every={value}"])
    message = str(caught.value)
    assert message.startswith("--set train.validate_every: key 'train.validate_every': ") and "received" in message
    with pytest.raises(UserError, match="key 'distill.validate_every'"):
        recipe.from_dict({"run_dir": "r", "data": {"dir": "d"}, "distill": {"validate_every": 0}})
