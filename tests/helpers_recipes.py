"""A tiny recipe over generated scenes data (32 px, a few dozen images), for stage tests."""

import json


def write_tiny_recipe(root, *, train=48, val=16, test=16, epochs=1, **sections):
    """Write `root/r.yaml` (JSON is YAML) for a run in `root/run` on data in `root/data`; return its path.

    Extra keyword arguments replace whole top-level sections (e.g. `ablation=["sd"]`).
    """
    tree = {
        "run_dir": str(root / "run"),
        "data": {"dir": str(root / "data"), "generator": "scenes",
                 "scenes": {"train": train, "val": val, "test": test, "image_size": 32},
                 "image_size": 32, "eval_splits": ["test", "test_ood"], "augment": {"flip": False}},
        "partition": {"k": 2},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None},
        "train": {"epochs": epochs, "batch_size": 16},
        **sections,
    }
    path = root / "r.yaml"
    path.write_text(json.dumps(tree))
    return path
