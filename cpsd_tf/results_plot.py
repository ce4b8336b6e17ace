"""`results.png`: the results of a run (or of several seeds) in one picture.

Left: mAP of every model on every evaluation split, with error bars (one standard deviation) when the
figures are means over seeds (`tools/ablation.py`). Right: per-class AP of the student against the
converged baseline on the last evaluation split (the out-of-context one on the scenes benchmark): a point
above the diagonal is a class the student ranks better.
"""

import numpy as np

# the order models are drawn in (others follow in their own order)
MODEL_ORDER = ("baseline", "baseline_equal_compute", "sd", "random", "cgpd", "dgpd", "cpsd",
               "teachers_cgp", "teachers_dgp", "teachers_ensemble")


def _models(report, order=None):
    names = list(report["models"])
    if order:
        return [m for m in order if m in names] + [m for m in names if m not in order]
    return [m for m in MODEL_ORDER if m in names] + [m for m in names if m not in MODEL_ORDER]


def plot(report, out, title="Results", errors=None, student="cpsd", order=None):
    """Draw the figure of a results.json-like `report` into the PNG `out`.

    Args:
        report: {"models": {model: {split: {"mAP": …}}}, "details": {model: {split: {"AP_per_class": […]}}}};
            "details" is optional (without it, the right panel is left out).
        out: str or Path of the PNG.
        title: str, the figure title. Defaults to "Results".
        errors: {model: {split: std}} for error bars, or None. Defaults to None.
        student: str, the model compared with the baseline class by class. Defaults to "cpsd".
        order: list of model names to draw in this order, or None for `MODEL_ORDER`. Defaults to None.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = _models(report, order)
    found = {s for m in models for s in report["models"][m]}
    splits = [s for s in report.get("splits", []) if s in found] + sorted(found - set(report.get("splits", [])))
    per_class = _per_class(report, student, splits)
    panels = len(splits) + (1 if per_class else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 0.9 + 0.42 * max(len(models), 5)), squeeze=False)
    for ax, split in zip(axes[0], splits):
        _bars(ax, report, models, split, errors)
    if per_class:
        _scatter(axes[0][-1], *per_class, student)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)


def _bars(ax, report, models, split, errors):
    """One split: a horizontal bar per model, the baseline's value as a dashed line."""
    values = np.array([report["models"][m].get(split, {}).get("mAP", np.nan) for m in models], dtype=float)
    stds = [(errors or {}).get(m, {}).get(split, 0.0) for m in models] if errors else None
    y = np.arange(len(models))
    colors = ["tab:grey" if m.startswith("baseline") else "tab:olive" if m.startswith("teachers") else "tab:blue"
              for m in models]
    ax.barh(y, values, xerr=stds, color=colors, capsize=3)
    finite = values[np.isfinite(values)]
    if finite.size:  # start near the lowest bar so differences of a point stay visible
        low, high = finite.min(), finite.max()
        pad = max(1.0, 0.15 * (high - low))
        ax.set_xlim(max(0.0, low - 3 * pad), min(100.0, high + (4 if errors else 2) * pad))
    for yi, v, e in zip(y, values, stds or [0.0] * len(models)):
        if np.isfinite(v):
            text = f"{v:.2f} ± {e:.2f}" if errors else f"{v:.2f}"
            ax.annotate(text, (v + (e or 0.0), yi), va="center", fontsize=8, xytext=(3, 0), textcoords="offset points")
    if "baseline" in models and np.isfinite(values[models.index("baseline")]):
        ax.axvline(values[models.index("baseline")], color="tab:grey", linestyle="--", linewidth=1)
    ax.set_yticks(y, models)
    ax.invert_yaxis()
    ax.set_xlabel("mAP (%)" + (", mean ± std over seeds" if errors else ""))
    ax.set_title(f"mAP on {split}")
    ax.grid(axis="x", alpha=0.3)


def _per_class(report, student, splits):
    details = report.get("details", {})
    if not splits or "baseline" not in details or student not in details:
        return None
    split = splits[-1]
    base = details["baseline"].get(split, {}).get("AP_per_class")
    other = details[student].get(split, {}).get("AP_per_class")
    if not base or not other or len(base) != len(other):
        return None
    pairs = np.array([(b, o) for b, o in zip(base, other) if b is not None and o is not None], dtype=float)
    return (pairs, split) if len(pairs) else None


def _scatter(ax, pairs, split, student):
    base, other = pairs[:, 0], pairs[:, 1]
    better = int(np.sum(other > base))
    ax.scatter(base, other, s=18, alpha=0.8)
    low = max(0.0, min(base.min(), other.min()) - 2)
    high = min(100.0, max(base.max(), other.max()) + 2)
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.set_xlabel(f"baseline AP on {split} (%)")
    ax.set_ylabel(f"{student} AP on {split} (%)")
    ax.set_title(f"AP per class: {student} above\nthe baseline on {better} of {len(base)} classes\n"
                 f"(mean {np.mean(other - base):+.2f})", fontsize=10)
    ax.grid(alpha=0.3)
