"""The tiny scenes recipe of the trainer tests (a module fixture) and their helpers."""

import json
from pathlib import Path

import keras
import pytest

from cpsd_tf import recipe, train
from cpsd_tf.data import prepare

CLASSES = [str(i) for i in range(30)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A recipe over a tiny generated scenes data set (32 px), 1 epoch of 4 steps."""
    root = tmp_path_factory.mktemp("tiny")
    tree = {
        "run_dir": str(root / "run"),
        "data": {
            "dir": str(root / "data"),
            "generator": "scenes",
            "scenes": {"train": 64, "val": 32, "test": 32, "image_size": 32},
            "image_size": 32,
            "eval_splits": ["test", "test_ood"],
            "augment": {"flip": False, "translate": 0.1},
        },
        "partition": {"k": 2},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.003},
    }
    path = root / "tiny.yaml"
    path.write_text(json.dumps(tree))
    prepare.run(recipe.load(path))  # the data, so that each test can run alone
    return path


def _fit(r, model_dir, epochs, **kwargs):
    return train.fit(r, model_dir, num_classes=30, class_names=CLASSES, epochs=epochs, **kwargs)


def _leftovers(model_dir):
    """Temporary files left in a model folder (`io.atomic_path` names start with '.'; `.lock` is not one)."""
    return sorted(str(p.relative_to(model_dir)) for p in Path(model_dir).rglob(".*") if p.name != ".lock")


class CrashAtEpochEnd(keras.callbacks.Callback):
    """Interrupts training at the end of its first epoch, as Ctrl-C would."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt
