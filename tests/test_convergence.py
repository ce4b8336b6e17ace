"""Whether a model reached its plateau: the val curve of its metrics.json, as `evaluate` reports it."""

import pytest

from cpsd_tf import convergence


def metrics(values, epochs=None, ema=None, every=1):
    history = []
    for i, v in enumerate(values):
        epoch = (i + 1) * every
        record = {"epoch": epoch, "loss": 1.0, "val_mAP_raw": v}
        if ema is not None:
            record["val_mAP_ema"] = ema[i]
        history.append(record)
    history.append({"epoch": len(values) * every + 1, "loss": 1.0})  # an epoch without validation
    return {"epochs": epochs or len(values) * every, "best_epoch": None, "history": history}


def test_a_curve_still_climbing_is_rising():
    s = convergence.summary(metrics([10, 20, 30, 40, 50, 60, 70, 80]))  # cut at epoch 6: 60 -> 80
    assert s["last_quarter_rise"] == pytest.approx(20) and s["rising"] and s["best_val_mAP"] == 80


def test_a_plateau_is_not_rising_and_a_late_best_by_noise_does_not_count():
    s = convergence.summary(metrics([50, 80, 90, 90.2, 90.1, 90.3, 90.4, 90.5]))
    assert s["last_quarter_rise"] == pytest.approx(0.2) and not s["rising"]
    assert convergence.RISE_POINTS == 0.5  # the threshold the docs state


def test_ema_weights_count_and_sparse_validation():
    s = convergence.summary(metrics([10, 20, 30, 40], ema=[15, 25, 35, 45], every=5, epochs=20))
    # validated at 5, 10, 15, 20: the cut is at epoch 15, the best before it 35 (ema), the best 45
    assert s["epochs"] == 20 and s["last_quarter_rise"] == pytest.approx(10) and s["rising"]


def test_no_curve_and_no_early_point():
    assert convergence.summary({"epochs": 3, "history": [{"epoch": 1, "loss": 1.0}]}) is None
    assert convergence.summary(metrics([float("nan")] * 4)) is None  # no class with a positive in val
    s = convergence.summary(metrics([float("nan"), 30, 40, 45]))
    assert s["best_val_mAP"] == 45 and s["last_quarter_rise"] == pytest.approx(5)
    s = convergence.summary(metrics([70], epochs=1))
    assert s["last_quarter_rise"] is None and not s["rising"]


def test_table_flags_the_rising_models():
    rows = [("baseline", convergence.summary(metrics([10, 20, 30, 40]))),
            ("cpsd", convergence.summary(metrics([40, 40, 40, 40])))]
    text, rising = convergence.table(rows, "val")
    assert rising == ["baseline"]
    lines = text.splitlines()
    assert lines[0].startswith("Training (val mAP on 'val'")
    assert lines[3].split()[:5] == ["baseline", "4", "40.00", "+10.00", "rising"]  # no best epoch recorded
    assert lines[4].split() == ["cpsd", "4", "40.00", "+0.00"]
