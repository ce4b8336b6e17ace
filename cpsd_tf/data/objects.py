"""Where each image's objects are: `<data_dir>/<split>.objects.npz`, beside the split's shards.

One float32 array `objects` [N, K, 5]: row k of record i (its `index`) is (class, top, left, bottom,
right), coordinates as fractions of the image's height and width, class -1 pads. Mixed views that label
by object (`cpsd_tf.views`, `labels: objects`) read it through `pipeline.build(with_objects=True)`.

Who writes one: `cpsd-tf data scenes` (every split) and the COCO converter (from the annotations'
`bbox`). A split written without boxes loses any objects file an earlier version of it had, so a file
never describes other images than its split's; `table` also checks each record's object classes against
its labels.
"""

from pathlib import Path

import numpy as np

from cpsd_tf import io
from cpsd_tf.data import records
from cpsd_tf.errors import UserError

OBJECTS_FILE = "{split}.objects.npz"


def path(data_dir, split) -> Path:
    """`<data_dir>/<split>.objects.npz`."""
    return Path(data_dir) / OBJECTS_FILE.format(split=split)


def write(data_dir, split, objects):
    """Write a split's objects file atomically.

    Args:
        data_dir: str or Path, the data folder.
        split: str, the split name.
        objects: list (one per record, in `index` order) of lists of (class, top, left, bottom, right),
            coordinates as fractions of the image's height and width.
    """
    k = max([len(o) for o in objects] + [1])
    table = np.full((len(objects), k, 5), -1.0, np.float32)
    for i, rows in enumerate(objects):
        if rows:
            table[i, : len(rows)] = np.asarray(rows, np.float32)
    with io.atomic_path(path(data_dir, split), suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, objects=table)


def remove(data_dir, split):
    """Remove a split's objects file if there is one (its split was rewritten without boxes)."""
    path(data_dir, split).unlink(missing_ok=True)


def table(data_dir, split) -> np.ndarray:
    """float32 [N, K, 5], the split's objects file (see the module docstring).

    Raises:
        UserError: the file is missing, unreadable, of another size than the split, or a record's object
            classes are not its labels.
    """
    where = path(data_dir, split)
    if not where.is_file():
        raise UserError(f"{where}: not found; labels by object need where each object is, which `cpsd-tf data "
                        "scenes` and the COCO converter write (a folder made before they did: convert or generate "
                        "it again into a new folder) and other data sets do not have: use views.labels: area")
    try:
        with np.load(where) as f:
            out = np.asarray(f["objects"], np.float32)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{where}: not a readable objects file ({type(e).__name__}: {e})") from None
    index, labels = records.read_labels(data_dir, split)
    n = len(index)
    if out.ndim != 3 or out.shape[0] != n or out.shape[2] != 5:
        raise UserError(f"{where}: objects of shape {list(out.shape)}, expected [{n}, K, 5] for split '{split}'")
    _check_classes(where, out, index, labels)
    return out


def _check_classes(where, out, index, labels):
    """Each record's object classes must be its labels (else the file is another split's)."""
    hot = np.zeros((out.shape[0], labels.shape[1]), bool)
    rows, cols = np.nonzero(out[:, :, 0] >= 0)
    classes = out[rows, cols, 0].astype(np.int64)
    if classes.size and (classes.max() >= labels.shape[1] or (classes != out[rows, cols, 0]).any()):
        raise UserError(f"{where}: holds class values that are not class indices of this data set")
    hot[rows, classes] = True
    wrong = np.nonzero((hot != labels.astype(bool)).any(axis=1))[0]
    if wrong.size:
        i = int(wrong[0])
        raise UserError(f"{where}: record {int(index[i])} has objects of classes {np.nonzero(hot[i])[0].tolist()} "
                        f"but labels {np.nonzero(labels[i])[0].tolist()} ({wrong.size} record(s) differ): the file "
                        f"does not describe this split; write the split again")
