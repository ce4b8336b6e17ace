"""Calibrated per-class thresholds (`cpsd_tf.thresholds`): F1-maximising cuts, the pooled fallback, metrics."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from cpsd_tf import thresholds
from cpsd_tf.metrics import multilabel_metrics


def test_best_f1_threshold_hand_computed():
    # sorted: 0.9(1) 0.8(0) 0.7(1) 0.2(0): keeping 3 gives F1 = 2·2/(3+2) = 0.8, keeping 1 gives 2/3
    t, f1 = thresholds.best_f1_threshold([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.2])
    assert f1 == pytest.approx(0.8)
    assert t == pytest.approx((0.7 + 0.2) / 2)


def test_best_f1_threshold_never_splits_ties_and_prefers_fewer_labels():
    # 0.6 is tied between a positive and a negative: the cut can only fall above or below both
    t, f1 = thresholds.best_f1_threshold([1, 1, 0, 0], [0.6, 0.9, 0.6, 0.1])
    # keep 0.9 only: F1 2/3; keep 0.9 and both 0.6: 2·2/(3+2) = 0.8; keep all: 2/3
    assert f1 == pytest.approx(0.8) and t == pytest.approx(0.35)
    t, f1 = thresholds.best_f1_threshold([1, 0], [0.7, 0.7])  # one cut only: keep both
    assert f1 == pytest.approx(2 / 3) and t == pytest.approx(0.35)
    assert thresholds.best_f1_threshold([0, 0], [0.3, 0.4]) == (None, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_threshold_reaches_the_best_f1_any_cut_gives(seed):
    """Against scikit-learn: no threshold on a fine grid beats the chosen one, per class."""
    rng = np.random.default_rng(seed)
    y = rng.random((300, 4)) < [0.1, 0.3, 0.5, 0.0]
    p = np.clip(0.55 + 0.3 * y + 0.25 * rng.standard_normal(y.shape), 0, 1)  # ASL-like: shifted up
    record = thresholds.calibrate(y, p)
    assert record["no_positive"] == [3]
    assert record["thresholds"][3] == record["pooled"]
    for c in range(3):
        chosen = f1_score(y[:, c], p[:, c] >= record["thresholds"][c])
        grid = max(f1_score(y[:, c], p[:, c] >= t) for t in np.linspace(0, 1, 401))
        assert chosen >= grid - 1e-12
        assert chosen > f1_score(y[:, c], p[:, c] >= 0.5)  # 0.5 is the wrong point for shifted scores


def test_metrics_take_one_threshold_per_class():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    p = np.array([[0.9, 0.3], [0.4, 0.35], [0.8, 0.2]])
    per_class = multilabel_metrics(y, p, threshold=[0.5, 0.25])
    # class 0: predicted {0, 2}, both right; class 1: predicted {0, 1}, one right of two positives
    assert per_class["CP"] == pytest.approx(100 * (1 + 0.5) / 2)
    assert per_class["CR"] == pytest.approx(100 * (1 + 0.5) / 2)
    assert multilabel_metrics(y, p, threshold=[0.5, 0.5])["CP"] == multilabel_metrics(y, p)["CP"]
    with pytest.raises(ValueError, match="one per class"):
        multilabel_metrics(y, p, threshold=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multilabel_metrics(y, p, threshold=[0.5, 1.5])


def test_trained_model_gets_thresholds_and_results_show_both_operating_points(tmp_path):
    """baseline → thresholds.json on val; evaluate → calibrated metrics, legend and results.png."""
    import json

    from scipy.special import expit

    from cpsd_tf import baseline, evaluate, recipe, rundir, train
    from cpsd_tf.data import pipeline, prepare

    tree = {
        "run_dir": str(tmp_path / "run"),
        "data": {"dir": str(tmp_path / "data"), "generator": "scenes", "image_size": 32,
                 "scenes": {"train": 64, "val": 48, "test": 32, "image_size": 32},
                 "eval_splits": ["test", "test_ood"], "augment": {"flip": False, "translate": 0.1}},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.003},
    }
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(tree))
    r = recipe.load(path)
    prepare.run(r)
    run_dir = tmp_path / "run"
    baseline.run(r, run_dir)
    folder = run_dir / "baseline"
    record = json.loads((folder / thresholds.THRESHOLDS_FILE).read_text())
    assert record["split"] == "val" and len(record["thresholds"]) == len(record["classes"]) == 30
    assert all(0.0 <= t <= 1.0 for t in record["thresholds"])

    # On the split they were chosen on, no class's F1 is below its F1 at 0.5.
    model = rundir.load_model(folder)
    ds = pipeline.build(r.data.dir, "val", image_size=32, batch_size=64, training=False)
    _, y = pipeline.labels_matrix(r.data.dir, "val")
    p = expit(train.predict_logits(model, ds).astype(np.float64))
    cuts = np.asarray(record["thresholds"])
    for c in np.flatnonzero(y.sum(axis=0) > 0):
        assert f1_score(y[:, c], p[:, c] >= cuts[c]) >= f1_score(y[:, c], p[:, c] >= 0.5) - 1e-12

    report = evaluate.run(r, run_dir)
    assert set(report["models"]["baseline"]["test"]) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}  # contract
    calibrated = report["details"]["baseline"]["test"]["calibrated"]
    assert set(calibrated) == {"CP", "CR", "CF1", "OP", "OR", "OF1"}
    md = (run_dir / "results.md").read_text()
    assert "At the calibrated per-class thresholds:" in md and "CF1 = " not in md and "selection split 'val'" in md
    png = (run_dir / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    from helpers_events import event_tags

    assert "results" in event_tags(run_dir / "tensorboard")  # the figure in TensorBoard too
