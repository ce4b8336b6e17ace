"""Multi-label metrics against scikit-learn (AP) and hand-computed / loop-based references."""

import json
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from cpsd_tf.metrics import average_precision_per_class, multilabel_metrics


def _sklearn_ap(y, s):
    return np.array([average_precision_score(y[:, c], s[:, c]) if y[:, c].any() else np.nan for c in range(y.shape[1])])


def _random_case(seed, n=300, m=7, decimals=None):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, m)) < rng.uniform(0.05, 0.5, size=m)).astype(np.int64)
    y[:, 2] = 0  # a class without positives
    s = np.clip(0.3 * y + rng.random((n, m)) * 0.8, 0, 1)
    if decimals is not None:
        s = np.round(s, decimals)  # many tied scores
    return y, s


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_ap_matches_sklearn(decimals):
    y, s = _random_case(decimals or 0, decimals=decimals)
    ap = average_precision_per_class(y, s)
    expected = _sklearn_ap(y, s)
    np.testing.assert_allclose(ap, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(ap[2]) and np.isfinite(np.delete(ap, 2)).all()
    result = multilabel_metrics(y, s, per_class=True)
    assert result["mAP"] == pytest.approx(100 * np.nanmean(expected), rel=1e-12)
    assert result["AP_per_class"][2] is None
    assert result["AP_per_class"][0] == pytest.approx(100 * expected[0])


def test_ap_constant_scores_and_float32_ties():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]])
    s = np.full((5, 2), 0.3, np.float32)
    s[:, 1] = np.float32([0.1, 0.7, 0.7, 0.7, 0.2])
    np.testing.assert_allclose(average_precision_per_class(y, s), _sklearn_ap(y, s.astype(np.float64)))
    assert average_precision_per_class(y, s)[0] == pytest.approx(3 / 5)  # one threshold: precision 3/5


def test_all_negative_class_is_left_out_of_map():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.9], [0.8, 0.1], [0.3, 0.5]])
    result = multilabel_metrics(y, s)
    assert result["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2)  # class 0 only
    assert np.isnan(multilabel_metrics(np.zeros((2, 2)), s[:2])["mAP"])


def test_threshold_metrics_hand_computed():
    # Class 2 is never predicted (precision 0), class 3 has no positives (recall 0); 0.5 counts as predicted.
    y = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]])
    s = np.array([[0.9, 0.6, 0.4, 0.1], [0.7, 0.2, 0.3, 0.8], [0.6, 0.5, 0.1, 0.2], [0.2, 0.1, 0.45, 0.3]])
    r = multilabel_metrics(y, s)
    # Per class Nc/Np/Ng: c0 2/3/3, c1 1/2/2, c2 0/0/2, c3 0/1/0.
    cp = cr = (2 / 3 + 1 / 2 + 0 + 0) / 4
    op, orr = 3 / 6, 3 / 7
    assert r["CP"] == pytest.approx(100 * cp) and r["CR"] == pytest.approx(100 * cr)
    assert r["CF1"] == pytest.approx(100 * cp)
    assert r["OP"] == pytest.approx(100 * op) and r["OR"] == pytest.approx(100 * orr)
    assert r["OF1"] == pytest.approx(100 * 2 * op * orr / (op + orr))
    # A higher threshold removes every prediction: everything 0, no division error.
    r = multilabel_metrics(y, s, threshold=0.95)
    assert all(r[k] == 0.0 for k in ("CP", "CR", "CF1", "OP", "OR", "OF1"))


def test_top3_hand_computed():
    y = np.array([[1, 1, 0, 0, 1], [0, 0, 1, 0, 0]])
    s = np.array([[0.9, 0.8, 0.7, 0.6, 0.55], [0.3, 0.1, 0.95, 0.4, 0.2]])
    r = multilabel_metrics(y, s)
    # Top-3 ∩ (p ≥ 0.5): row 0 -> {0, 1, 2}; row 1 -> {2} (labels 3 and 0 are in its top 3 but below 0.5).
    assert r["CP_top3"] == pytest.approx(100 * (1 + 1 + 0.5 + 0 + 0) / 5)
    assert r["CR_top3"] == pytest.approx(100 * (1 + 1 + 1 + 0 + 0) / 5)
    assert r["CF1_top3"] == pytest.approx(100 * 2 * 0.5 * 0.6 / 1.1)
    assert r["OP_top3"] == pytest.approx(75.0) and r["OR_top3"] == pytest.approx(75.0)
    assert r["OF1_top3"] == pytest.approx(75.0)
    # Without the top-3 restriction row 0 predicts all five labels.
    assert r["OP"] == pytest.approx(100 * 4 / 6) and r["OR"] == pytest.approx(100.0)


def test_top3_ties_go_to_lower_class_index():
    y = np.array([[0, 0, 0, 1]])
    s = np.array([[0.9, 0.9, 0.9, 0.9]])
    assert multilabel_metrics(y, s)["OR_top3"] == 0.0  # classes 0, 1, 2 are the top 3
    assert multilabel_metrics(y, s, top_k=4)["OR_top4"] == 100.0


def _ml_gcn_reference(y, s, threshold, k=None):
    """Loop transcription of ML-GCN's evaluation (explicit guards instead of Np[Np == 0] = 1)."""
    n, m = s.shape
    pred = s >= threshold
    if k is not None:
        top = np.zeros_like(pred)
        for i in range(n):
            top[i, np.argsort(-s[i], kind="stable")[:k]] = True
        pred &= top
    nc, np_, ng = (y & pred).sum(0), pred.sum(0), y.sum(0)
    cp = sum(nc[c] / np_[c] for c in range(m) if np_[c]) / m
    cr = sum(nc[c] / ng[c] for c in range(m) if ng[c]) / m
    op, orr = nc.sum() / np_.sum(), nc.sum() / ng.sum()
    return {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr), "OP": op, "OR": orr, "OF1": 2 * op * orr / (op + orr)}


def test_against_loop_reference_and_logits():
    rng = np.random.default_rng(7)
    y = rng.random((80, 9)) < 0.3
    logits = rng.normal(0, 2, size=(80, 9)) + 2 * y
    probs = 1 / (1 + np.exp(-logits))
    r = multilabel_metrics(y.astype(np.float32), probs, threshold=0.6)
    for key, value in _ml_gcn_reference(y, probs, 0.6).items():
        assert r[key] == pytest.approx(100 * value, rel=1e-12)
    for key, value in _ml_gcn_reference(y, probs, 0.6, k=3).items():
        assert r[f"{key}_top3"] == pytest.approx(100 * value, rel=1e-12)
    from_logits = multilabel_metrics(y, logits, threshold=0.6, from_logits=True)
    assert from_logits.keys() == r.keys()
    for key in r:
        assert from_logits[key] == pytest.approx(r[key], rel=1e-9)
    assert all(type(v) is float for v in r.values())
    json.dumps(multilabel_metrics(y, probs, per_class=True), allow_nan=False)


@pytest.mark.parametrize(
    "y,s,match",
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), r"same shape.*\(4, 3\).*\(4, 2\)"),
        (np.zeros(4), np.zeros(4), "2-D"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "no examples"),
        (np.full((2, 2), -1), np.zeros((2, 2)), "0/1"),
        (np.zeros((2, 2)), np.array([[0.1, np.nan], [0.2, 0.3]]), "finite"),
    ],
)
def test_bad_inputs(y, s, match):
    with pytest.raises(ValueError, match=match):
        multilabel_metrics(y, s)


def test_bad_options():
    y, s = np.zeros((2, 2)), np.zeros((2, 2))
    with pytest.raises(ValueError, match="threshold"):
        multilabel_metrics(y, s, threshold=1.5)
    with pytest.raises(ValueError, match="top_k"):
        multilabel_metrics(y, s, top_k=0)


def test_coco_sized_input_is_fast():
    rng = np.random.default_rng(0)
    y = rng.random((40_000, 80)) < 0.04
    s = rng.random((40_000, 80)).astype(np.float32)
    start = time.perf_counter()
    multilabel_metrics(y, s, per_class=True)
    assert time.perf_counter() - start < 2.0
