"""Did a model reach its plateau within its schedule? Read from the val curve in its `metrics.json`.

A comparison between two models is fair only when neither is still rising: a model stopped on its way up
loses to one given more epochs, whatever the method (on the scenes benchmark, the views baseline gains
+2.9 / +16.5 mAP from 60 to 120 epochs). `evaluate` reports, for each model, its epochs, best epoch and
how much its selection mAP rose in the last quarter of its schedule; a rise of `RISE_POINTS` or more
marks it "rising": train it longer before reading the comparison.

"Not rising" means a plateau within the model's own schedule. A one-cycle schedule anneals towards its
end, so a longer schedule may still reach higher (a scenes teacher peaked at val 92.3 within 120 epochs
and reached 93.7 within 240).
"""

import math

RISE_POINTS = 0.5  # val mAP points gained in the last quarter that mark a model as still rising
LAST_SHARE = 0.25  # the share of the schedule whose gain is measured


def curve(metrics):
    """[(epoch, val mAP)] of the validated epochs of a `metrics.json` dict: the better of the raw and the
    EMA weights at each epoch, as model selection reads them."""
    out = []
    for record in metrics.get("history") or []:
        values = [record.get(k) for k in ("val_mAP_raw", "val_mAP_ema") if record.get(k) is not None]
        values = [v for v in values if math.isfinite(v)]  # NaN: no class of the model has a positive in val
        if values:
            out.append((int(record["epoch"]), float(max(values))))
    return out


def summary(metrics):
    """{"epochs", "best_epoch", "best_val_mAP", "last_quarter_rise", "rising"} of one model, or None
    without a val curve (no validated epoch with a finite mAP). `last_quarter_rise` is the best val mAP minus the best before the last quarter of
    the epochs (None when no epoch was validated before it)."""
    points = curve(metrics)
    if not points:
        return None
    epochs = int(metrics.get("epochs") or points[-1][0])
    cut = epochs - max(1, round(LAST_SHARE * epochs))
    early = [v for e, v in points if e <= cut]
    best = max(v for _, v in points)
    rise = best - max(early) if early else None
    return {"epochs": epochs, "best_epoch": metrics.get("best_epoch"), "best_val_mAP": best,
            "last_quarter_rise": rise, "rising": rise is not None and rise >= RISE_POINTS}


def table(rows, split):
    """Text table of `rows` [(name, summary)] and the list of the rising names."""
    lines = [f"Training (val mAP on '{split}'; rise: gained in the last quarter of the epochs; rising: "
             f">= {RISE_POINTS:g}, still climbing when training stopped):",
             f"{'model':<24} {'epochs':>6} {'best epoch':>10} {'val mAP':>8} {'rise':>6}",
             "-" * 58]
    rising = []
    for name, s in rows:
        rise = "" if s["last_quarter_rise"] is None else f"{s['last_quarter_rise']:+.2f}"
        best_epoch = "" if s["best_epoch"] is None else str(s["best_epoch"])
        flag = "  rising" if s["rising"] else ""
        lines.append(f"{name:<24} {s['epochs']:>6} {best_epoch:>10} {s['best_val_mAP']:>8.2f} {rise:>6}{flag}")
        if s["rising"]:
            rising.append(name)
    return "\n".join(lines), rising
