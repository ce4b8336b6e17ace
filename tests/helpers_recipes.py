"""A tiny recipe over generated scenes data (32 px, a few dozen images), for stage tests."""

import json
import shutil


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


def copy_run(run, root):
    """Copy a tiny run made by `write_tiny_recipe` (its recipe, data and run folder) into `root`, with the
    absolute paths its recipes name moved along; return the copy's recipe path."""
    src = run.parent
    shutil.copytree(src, root, dirs_exist_ok=True)
    for name in ("r.yaml", "run/recipe.yaml"):
        path = root / name
        path.write_text(path.read_text().replace(str(src), str(root)))
    return root / "r.yaml"
