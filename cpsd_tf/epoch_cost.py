"""What an epoch of the trainer costs: wall and process CPU seconds of its training steps, its validation
and its saves (`cpsd_tf.train` measures them; `metrics.json` keeps them, see `cost_metrics`).
"""

import contextlib
import time

import numpy as np

COST_PARTS = ("epoch", "train", "validation", "save")
COST_KEYS = tuple(f"{part}_{kind}_s" for kind in ("time", "cpu") for part in COST_PARTS)


def clock():
    """(wall seconds, process CPU seconds) now, as an array (differences of two are durations)."""
    return np.array([time.perf_counter(), time.process_time()])


class EpochCost:
    """Wall and process CPU seconds of one epoch's parts: training steps, validation, saves.

    `begin` when the epoch starts, `train_done` when its steps are done, `measure("validation" | "save")`
    around the epoch-end work, `finish` for the epoch's record (the rest of the epoch end, e.g. logs, is in
    `epoch_*` only). CPU time is the whole process's (every thread, the input pipeline's too).

    Example:
        cost = EpochCost(); cost.begin(0)
        ...; cost.train_done()
        with cost.measure("validation"): ...
        cost.finish()  # {"epoch": 1, "validated": True, "epoch_time_s": ..., "train_cpu_s": ..., ...}
    """

    def __init__(self):
        self.epoch = None

    def begin(self, epoch):
        self.epoch, self.validated = epoch, False
        self.start = clock()
        self.parts = {part: np.zeros(2) for part in COST_PARTS}

    def train_done(self):
        self.parts["train"] = clock() - self.start

    @contextlib.contextmanager
    def measure(self, part):
        start = clock()
        try:
            yield
        finally:
            if self.epoch is not None:  # a save outside an epoch (none today) is not an epoch's cost
                self.parts[part] += clock() - start

    def finish(self):
        self.parts["epoch"] = clock() - self.start
        record = {"epoch": self.epoch + 1, "validated": self.validated}
        for i, kind in enumerate(("time", "cpu")):
            record.update({f"{part}_{kind}_s": round(float(self.parts[part][i]), 4) for part in COST_PARTS})
        self.epoch = None
        return record


def cost_metrics(records, epochs, every):
    """metrics.json's cost keys: one list per `COST_KEYS` (index = epoch - 1; null for an epoch whose
    record was lost to a crash) and `epoch_cost`: `validate_every`, totals, and the share of the epoch-end
    work (validation, saves, logs) in the epochs' wall and CPU time."""
    by_epoch = {r["epoch"]: r for r in records}
    rows = [by_epoch.get(e) for e in range(1, epochs + 1)]
    out = {key: [r[key] if r else None for r in rows] for key in COST_KEYS}
    known = [r for r in rows if r]
    totals = {key: round(sum(r[key] for r in known), 3) for key in COST_KEYS}
    summary = {"validate_every": every, "epochs_timed": len(known), **{f"total_{k}": v for k, v in totals.items()}}
    for kind in ("time", "cpu"):
        whole = totals[f"epoch_{kind}_s"]
        end = whole - totals[f"train_{kind}_s"]
        summary[f"epoch_end_{kind}_share"] = round(end / whole, 4) if whole > 0 else None
    out["epoch_cost"] = summary
    return out
