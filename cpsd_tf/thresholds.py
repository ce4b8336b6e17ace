"""Calibrated operating points: one probability threshold per class, chosen on the selection split.

ASL (γ− = 4) pushes probabilities up, so the usual 0.5 cut-off predicts far too many labels (on the demo,
a baseline's CP is well below its CR at 0.5). After a model is selected, each class gets the threshold
that maximises its F1 on the selection split (`val`):

- the threshold sits halfway between the lowest probability kept and the highest one left out, so a new
  image is judged by the gap the selection split left, not by one of its points;
- a class without a positive on the selection split has no F1 to maximise: it takes the **pooled**
  threshold, the one that maximises the F1 of all classes' decisions taken together (micro F1), which
  says where this model's probabilities of "present" begin in general.

The thresholds live in `<model folder>/thresholds.json` (`{"classes", "thresholds", "pooled", "split",
"no_positive"}`), are reported by `evaluate` beside the 0.5 figures, go into the SavedModel (`export`)
and are the default cut-off of `predict`.
"""

from pathlib import Path

import numpy as np

from cpsd_tf import io

THRESHOLDS_FILE = "thresholds.json"


def best_f1_threshold(y, p):
    """(threshold, F1) maximising the F1 of `p >= threshold` against the 0/1 labels `y` (1-D arrays).

    Only cuts between distinct probabilities are candidates; among equal F1s the higher threshold wins
    (fewer labels). Returns (None, 0.0) when `y` has no positive.
    """
    y = np.asarray(y, dtype=bool).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    positives = int(y.sum())
    if positives == 0:
        return None, 0.0
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    true_pos = np.cumsum(y_sorted)
    kept = np.arange(1, p.size + 1)
    # a cut after position i keeps the i+1 highest; it is only possible where the next value differs
    boundary = np.append(p_sorted[1:] < p_sorted[:-1], True)
    f1 = np.where(boundary, 2.0 * true_pos / (kept + positives), -1.0)
    best = int(np.argmax(f1))  # first maximum: the fewest labels kept
    below = p_sorted[best + 1] if best + 1 < p.size else 0.0
    return float((p_sorted[best] + below) / 2.0), float(f1[best])


def calibrate(y_true, probs):
    """Per-class F1-maximising thresholds of probabilities `probs` [N, m] against labels `y_true` [N, m].

    Returns:
        dict with "thresholds" (list of m floats in [0, 1]), "pooled" (the micro-F1 threshold, used for
        classes without positives) and "no_positive" (their column indices).
    """
    y = np.asarray(y_true) > 0.5
    p = np.asarray(probs, dtype=np.float64)
    pooled, _ = best_f1_threshold(y, p)
    pooled = 0.5 if pooled is None else pooled  # no positive anywhere: nothing to learn from
    thresholds, no_positive = [], []
    for c in range(p.shape[1]):
        t, _ = best_f1_threshold(y[:, c], p[:, c])
        if t is None:
            no_positive.append(c)
            t = pooled
        thresholds.append(float(t))
    return {"thresholds": thresholds, "pooled": float(pooled), "no_positive": no_positive}


def selection_split(recipe):
    return recipe.train.select_split or recipe.data.val_split


def compute(recipe, model_dir, model=None):
    """Thresholds of the model in `model_dir` on the recipe's selection split (a record, not written)."""
    from scipy.special import expit

    from cpsd_tf import rundir, train
    from cpsd_tf.data import pipeline

    model_dir = Path(model_dir)
    model = model if model is not None else rundir.load_model(model_dir)
    data, split = recipe.data, selection_split(recipe)
    subset = rundir.model_subset(model_dir)
    ds = pipeline.build(data.dir, split, image_size=data.image_size, batch_size=64, training=False, subset=subset)
    _, y = pipeline.labels_matrix(data.dir, split, subset=subset)
    probs = expit(train.predict_logits(model, ds).astype(np.float64))
    record = calibrate(y, probs)
    classes = rundir.model_classes(model_dir, probs.shape[1])
    record["no_positive"] = [classes[c] for c in record["no_positive"]]
    return {"classes": classes, "split": split, **record}


def write(model_dir, record):
    io.write_json(Path(model_dir) / THRESHOLDS_FILE, record)


def read(model_dir):
    """The stored thresholds as float32 [m], or None when the model folder has none."""
    path = Path(model_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    record = io.read_json(path, "thresholds file", ("thresholds",))
    return np.asarray(record["thresholds"], dtype=np.float32)


def ensure(recipe, model_dir):
    """Write `thresholds.json` of a finished model that has none (the caller holds the model's lock)."""
    if not (Path(model_dir) / THRESHOLDS_FILE).is_file():
        write(model_dir, compute(recipe, model_dir))


def for_model(recipe, model_dir, model=None):
    """The stored thresholds of a model, or ones computed now on the selection split (not written)."""
    stored = read(model_dir)
    if stored is not None:
        return stored
    return np.asarray(compute(recipe, model_dir, model)["thresholds"], dtype=np.float32)
