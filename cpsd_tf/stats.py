"""Label statistics of a split (`cpsd-tf stats`), in the shared format of DESIGN.md.

`{"classes": [...], "class_counts": [n_i], "cooccurrence": [[e_ij]]}` with n_i the number of images
holding class i and e_ij the number holding both i and j (diagonal zero, as in the shipped COCO and
NUS-WIDE statistics).
"""


import numpy as np

from cpsd_tf import io
from cpsd_tf.data import records


def label_stats(y, classes) -> dict:
    """Statistics of a multi-hot matrix `y` [N, m] (vectorised: one matrix product).

    Example:
        >>> label_stats(np.array([[1, 1, 0], [1, 0, 0]]), ["a", "b", "c"])["cooccurrence"][0]
        [0, 1, 0]
    """
    y = np.asarray(y, dtype=np.int64)
    co = y.T @ y
    np.fill_diagonal(co, 0)
    return {
        "classes": list(classes),
        "num_images": int(y.shape[0]),
        "class_counts": y.sum(axis=0).tolist(),
        "cooccurrence": co.tolist(),
    }


def from_records(data_dir, split="train") -> dict:
    """Statistics of a split of a cpsd-tf data folder."""
    info = records.load_info(data_dir)
    _, y = records.read_labels(data_dir, split)
    stats = label_stats(y, info.classes)
    stats["dataset"] = f"{data_dir} ({split})"
    stats["split"] = split
    return stats


def load(path) -> dict:
    """Read and check a label-statistics file; anything malformed is a `UserError` naming the file."""
    stats = io.read_json(path, "label-statistics file", ("classes", "class_counts", "cooccurrence"))
    return stats


def run(data_dir, split, out) -> dict:
    """Compute the statistics of `split` and write them to `out` atomically."""
    stats = from_records(data_dir, split)
    io.write_json(out, stats, indent=None)
    return stats
