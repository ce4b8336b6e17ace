"""Multi-label metrics on NumPy arrays: mAP, CP/CR/CF1, OP/OR/OF1 and their top-3 variants.

Conventions (the usual MLIC ones, from ML-GCN's evaluation code, with its divide guards made explicit):

- **AP** of a class is scikit-learn's `average_precision_score`: Σ_n (R_n − R_{n−1})·P_n over the distinct
  score thresholds (tied scores form one threshold, no interpolation). **mAP** is the mean AP over the
  classes with at least one positive; a class without positives has AP = NaN and is left out.
- A label is **predicted** when its probability is ≥ `threshold` (ML-GCN: logit ≥ 0, i.e. p ≥ 0.5).
- Per class c: Nc = correct predictions, Np = predictions, Ng = positives.
  **CP** = mean over *all* classes of Nc/Np, with Nc/Np := 0 for a class that is never predicted
  (ML-GCN's `Np[Np == 0] = 1` gives the same 0). **CR** = mean over all classes of Nc/Ng, with
  Nc/Ng := 0 for a class without positives (ML-GCN would give NaN there).
  **OP** = ΣNc/ΣNp, **OR** = ΣNc/ΣNg (0 when the denominator is 0; unlike ML-GCN, never-predicted
  classes do not add 1 to ΣNp).
- **CF1** = 2·CP·CR/(CP + CR) from the averaged CP and CR (not the mean of per-class F1), **OF1** likewise
  from OP and OR; 0 when both are 0.
- **Top-3**: the predictions are the 3 highest-scoring labels of each image *that also pass the
  threshold*, exactly ML-GCN's `overall_topk` (a top-3 label below threshold is not predicted). Ties in
  the ranking go to the lower class index.

Everything `multilabel_metrics` reports is in percent, as plain Python floats (per-class AP optionally,
as a list); `average_precision_per_class` gives the raw per-class fractions as a NumPy array.
Scores are probabilities: pass logits through a sigmoid first, or use `from_logits=True`.
"""

import numpy as np
from scipy.special import expit

_NAMES = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def multilabel_metrics(y_true, scores, threshold=0.5, *, from_logits=False, top_k=3, per_class=False):
    """mAP, CP, CR, CF1, OP, OR, OF1 and top-k variants of a multi-label prediction, in percent.

    Args:
        y_true: array-like [N, m] of 0/1 (or bool) labels.
        scores: array-like [N, m] of probabilities; with `from_logits=True`, raw logits (a sigmoid
            gives the probabilities the threshold applies to, while AP and the top-k ranking use the
            logits themselves, which avoids ties from a saturated sigmoid). Must be finite.
        threshold: float in [0, 1], or array-like [m] of one per class (calibrated thresholds, see
            `cpsd_tf.thresholds`); a label is predicted when its probability is ≥ its threshold.
            Defaults to 0.5.
        from_logits: bool, whether `scores` are logits. Defaults to False.
        top_k: int ≥ 1, size of the top-k prediction set (clipped to m). Defaults to 3.
        per_class: bool, also return "AP_per_class": a list of m per-class APs in percent, with None
            for classes without positives (None, not NaN, so the dict stays valid JSON).
            Defaults to False.

    Returns:
        dict of Python floats with keys "mAP", "CP", "CR", "CF1", "OP", "OR", "OF1" and
        "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3" (suffix `_top{top_k}`),
        plus "AP_per_class" when `per_class`. "mAP" is NaN when no class has a positive.

    Raises:
        ValueError: shapes differ or are not 2-D, no examples, labels not 0/1, non-finite scores, or a
            threshold/top_k out of range.

    Example:
        >>> m = multilabel_metrics([[1, 0], [0, 1]], [[0.9, 0.2], [0.6, 0.7]])
        >>> m["mAP"], m["CP"], m["OR"]
        (100.0, 75.0, 100.0)
    """
    y, s = _check_inputs(y_true, scores)
    threshold = np.asarray(threshold, dtype=np.float64)
    if threshold.ndim > 1 or (threshold.ndim == 1 and threshold.shape[0] != s.shape[1]):
        raise ValueError(f"threshold must be a number or one per class ({s.shape[1]}). "
                         f"Received: shape={threshold.shape}")
    if not np.all((threshold >= 0.0) & (threshold <= 1.0)):
        raise ValueError(f"threshold must be a probability in [0, 1]. Received: threshold={threshold}")
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1. Received: top_k={top_k}")
    top_k = int(top_k)

    probs = expit(s) if from_logits else s
    predicted = probs >= threshold

    ap = _average_precision(y, s)
    has_positive = ~np.isnan(ap)
    result = {"mAP": float(100.0 * ap[has_positive].mean()) if has_positive.any() else float("nan")}
    result.update(_threshold_metrics(y, predicted))

    in_top = _top_k_mask(s, min(top_k, s.shape[1]))
    for name, value in _threshold_metrics(y, predicted & in_top).items():
        result[f"{name}_top{top_k}"] = value

    if per_class:
        result["AP_per_class"] = [None if np.isnan(a) else float(100.0 * a) for a in ap]
    return result


def average_precision_per_class(y_true, scores) -> np.ndarray:
    """Average precision of each class, as fractions in [0, 1] (not percent), NaN without positives.

    Equal to `sklearn.metrics.average_precision_score(y_true[:, c], scores[:, c])` for every class c
    with a positive (tied scores count as one threshold), one sort of the [m, N] score matrix
    and binary searches. Any monotone score works (probabilities or logits).

    Args:
        y_true: array-like [N, m] of 0/1 (or bool) labels.
        scores: array-like [N, m] of finite scores, higher meaning more likely.

    Returns:
        float64 array [m].

    Example:
        >>> average_precision_per_class([[1, 0], [0, 0], [1, 0]], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.3]])
        array([0.83333333,        nan])
    """
    y, s = _check_inputs(y_true, scores)
    return _average_precision(y, s)


def _average_precision(y, s):
    # sklearn's AP is Σ_thresholds (ΔR)·P over the distinct scores: each positive adds 1/P_total times
    # the precision at its own score, counting every item scored >= it (its ties included):
    #     AP = mean over positives i of  #{positives j: s_j >= s_i} / #{items j: s_j >= s_i}.
    # Both counts come from binary searches in sorted scores; sorting values (no argsort) over
    # contiguous class rows is the only O(N log N) step.
    s_t = np.ascontiguousarray(s.T)
    y_t = np.ascontiguousarray(y.T)
    n = s_t.shape[1]
    sorted_scores = np.sort(s_t, axis=1)
    ap = np.full(s_t.shape[0], np.nan)
    for c in range(s_t.shape[0]):
        pos_scores = np.sort(s_t[c, y_t[c]])
        if pos_scores.size == 0:
            continue
        items_at_or_above = n - np.searchsorted(sorted_scores[c], pos_scores, side="left")
        positives_at_or_above = pos_scores.size - np.searchsorted(pos_scores, pos_scores, side="left")
        ap[c] = np.mean(positives_at_or_above / items_at_or_above)
    return ap


def _top_k_mask(s, k):
    """Boolean [N, m] mask of each row's k highest scores; among ties the lower class index wins."""
    remaining = s.copy()
    mask = np.zeros(s.shape, dtype=bool)
    rows = np.arange(s.shape[0])
    for _ in range(k):  # k argmax passes (argmax takes the first maximum) beat a full sort for k = 3
        best = np.argmax(remaining, axis=1)
        mask[rows, best] = True
        remaining[rows, best] = -np.inf
    return mask


def _threshold_metrics(y, predicted):
    """CP, CR, CF1, OP, OR, OF1 in percent (conventions in the module docstring)."""
    correct = np.sum(y & predicted, axis=0, dtype=np.int64)
    n_pred = np.sum(predicted, axis=0, dtype=np.int64)
    n_true = np.sum(y, axis=0, dtype=np.int64)
    cp = float(np.mean(_safe_divide(correct, n_pred)))
    cr = float(np.mean(_safe_divide(correct, n_true)))
    op = float(_safe_divide(correct.sum(), n_pred.sum()))
    orr = float(_safe_divide(correct.sum(), n_true.sum()))
    values = (cp, cr, _f1(cp, cr), op, orr, _f1(op, orr))
    return {name: 100.0 * v for name, v in zip(_NAMES, values)}


def _safe_divide(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _f1(p, r):
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def _check_inputs(y_true, scores):
    y = np.asarray(y_true)
    s = np.asarray(scores)
    if s.dtype not in (np.float32, np.float64):  # float32 stays: halves the sort time, same ties
        s = s.astype(np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(
            f"y_true and scores must both be 2-D [num_examples, num_classes] arrays of the same shape. "
            f"Received: y_true.shape={y.shape}, scores.shape={s.shape}"
        )
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"no examples or no classes to evaluate. Received: shape={y.shape}")
    if y.dtype != bool:
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise ValueError(
                f"y_true must hold only 0/1 labels; found {int(bad.sum())} other values "
                f"(e.g. {y[bad][0]!r})"
            )
        y = y == 1
    finite = np.isfinite(s)
    if not finite.all():
        raise ValueError(f"scores must be finite; found {int((~finite).sum())} NaN/inf values")
    return y, s
