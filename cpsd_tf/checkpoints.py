"""A model folder's training state on disk: file names, free-space checks, weights sizes, clean-up.

Every save of the trainer (`cpsd_tf.train`) goes through `saving`: the free space of the folder is checked
against the size of what is written first (the h5 and Keras writers crash the process on a full disk), and
a write failing with ENOSPC/EDQUOT all the same becomes one "disk full" `UserError`, with no temporary file
left (inside an `io.atomic_path` block).
"""

import contextlib
import errno
import math
import shutil
from pathlib import Path

import numpy as np

from cpsd_tf.errors import UserError
from cpsd_tf.rundir import METRICS_FILE, MODEL_FILE

SELECTION_FILE = "selection.json"
BEST_WEIGHTS_FILE = "best.weights.h5"
BACKUP_DIR = "backup"
BACKUP_WEIGHTS_FILE = "latest.weights.h5"  # the names Keras' BackupAndRestore reads
BACKUP_STATE_FILE = "training_metadata.json"
MB = 1 << 20
SPACE_MARGIN = MB  # besides the estimated bytes of a save: h5/zip overhead, JSON files, event files


# --- disk space ----------------------------------------------------------------------------------------


def free_bytes(folder):
    """Free bytes on the file system of `folder` (a function of its own, so tests can fake a full disk)."""
    return shutil.disk_usage(folder).free


def _disk_full(folder, needed, free=None):
    free = free_bytes(folder) if free is None else free
    return UserError(f"disk full: {folder} needs ~{math.ceil(needed / MB)} MB, {free // MB} MB free")


def ensure_space(folder, nbytes):
    """Raise a "disk full" `UserError` unless `folder` has `nbytes` + `SPACE_MARGIN` free."""
    needed = int(nbytes) + SPACE_MARGIN
    free = free_bytes(folder)
    if free < needed:
        raise _disk_full(folder, needed, free)


def _is_disk_full(error):
    text = str(error)
    return (getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text
            or "Disk quota exceeded" in text or "errno = 28," in text)  # h5py puts the C errno in its text


@contextlib.contextmanager
def saving(folder, nbytes):
    """Check `folder` has room for `nbytes` (plus margin), then run the block; ENOSPC in it -> "disk full".

    Wrap an `io.atomic_path` block in it: the temporary file is removed before the error is raised.

    Example:
        with saving(model_dir, 4 * MB), io.atomic_path(model_dir / "model.keras", suffix=".keras") as tmp:
            model.save(tmp)
    """
    ensure_space(folder, nbytes)
    try:
        yield
    except OSError as e:
        if _is_disk_full(e):
            raise _disk_full(folder, int(nbytes) + SPACE_MARGIN) from None
        raise


def _variables_bytes(variables):
    import tensorflow as tf

    return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in variables)


def state_bytes(trainer):
    """Bytes of one weights file of `trainer`: Keras saves its weights and its optimizer's variables.

    Before the optimizer is built (no step yet), its variables are counted as 3x the trainable weights
    (AdamW's two moments and the EMA copy).
    """
    n = _variables_bytes(trainer.weights)
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is not None:
        if optimizer.built:
            n += _variables_bytes(optimizer.variables)
        else:
            n += 3 * _variables_bytes(trainer.trainable_weights)
    return n


def remove_temporaries(model_dir):
    """Delete temporary files of this module's writers left by a killed process (`io.atomic_path` names)."""
    folders = {Path(model_dir): (MODEL_FILE, METRICS_FILE, SELECTION_FILE, BEST_WEIGHTS_FILE),
               Path(model_dir) / BACKUP_DIR: (BACKUP_WEIGHTS_FILE, BACKUP_STATE_FILE)}
    for folder, names in folders.items():
        for name in names:
            for tmp in folder.glob(f".{name}.*"):
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)


def cleanup(model_dir):
    """Remove the training state of a finished model folder (backup, selection, temporaries)."""
    shutil.rmtree(Path(model_dir) / BACKUP_DIR, ignore_errors=True)
    for name in (SELECTION_FILE, BEST_WEIGHTS_FILE):
        (Path(model_dir) / name).unlink(missing_ok=True)
    remove_temporaries(model_dir)
