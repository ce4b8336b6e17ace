"""Calibrated thresholds end to end: `thresholds.json` → `predict` default, SavedModel asset and `labels`."""

import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cpsd_tf import export, thresholds
from cpsd_tf.cli import cli
from cpsd_tf.data import preprocess
from cpsd_tf.models import build_model

CLASSES = ["cat", "dog", "sky", "tree"]
SIZE = 16


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A model folder whose thresholds.json sits between its probabilities on a known image."""
    root = tmp_path_factory.mktemp("calibrated")
    model = build_model("tiny_cnn", "linear", num_classes=len(CLASSES), image_size=SIZE)
    image = tf.io.encode_png(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).numpy()
    (root / "img.png").write_bytes(image)
    batch = preprocess.preprocess_eval(tf.constant(image), SIZE)[tf.newaxis]
    probs = tf.sigmoid(model(batch, training=False)).numpy()[0]
    # class 0 and 2 just pass their threshold, 1 and 3 just miss theirs (any 0.5 rule would differ)
    cuts = np.where(np.arange(len(CLASSES)) % 2 == 0, probs - 1e-3, probs + 1e-3).clip(0, 1)
    folder = root / "run" / "student"
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps({"classes": CLASSES}))
    thresholds.write(folder, {"classes": CLASSES, "thresholds": cuts.tolist(), "pooled": 0.5, "split": "val",
                              "no_positive": []})
    recipe = root / "r.yaml"
    recipe.write_text(json.dumps({"run_dir": str(root / "run"), "data": {"dir": str(root / "no-data"), "image_size": SIZE},
                                  "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None}}))
    return {"root": root, "folder": folder, "recipe": recipe, "image": root / "img.png", "probs": probs, "cuts": cuts}


def _predicted(model, image, *extra):
    result = CliRunner().invoke(cli, ["predict", "--model", str(model), "--json", *extra, str(image)])
    assert result.exit_code == 0, result.output
    return [x["label"] for x in json.loads(result.output)["predictions"][0]["labels"]]


def test_predict_and_serving_use_the_calibrated_thresholds(calibrated):
    c = calibrated
    assert sorted(_predicted(c["folder"], c["image"])) == ["cat", "sky"]
    everything = _predicted(c["folder"], c["image"], "--threshold", "0")
    assert sorted(everything) == sorted(CLASSES)  # --threshold overrides the calibrated ones

    out = c["root"] / "serving"
    result = CliRunner().invoke(cli, ["export", "--recipe", str(c["recipe"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "outputs['labels']" in result.output and "DT_BOOL" in result.output
    asset = (out / "1" / "assets" / export.THRESHOLDS_ASSET).read_text().split()
    np.testing.assert_array_equal(np.array(asset, np.float32), c["cuts"].astype(np.float32))
    served = tf.saved_model.load(str(out / "1")).signatures["serving_default"](
        images=tf.constant([c["image"].read_bytes()]))
    assert served["labels"].numpy().tolist() == [[True, False, True, False]]
    assert sorted(_predicted(out, c["image"])) == ["cat", "sky"]


def test_a_model_without_calibration_serves_labels_at_one_half(calibrated, tmp_path):
    import keras

    model = keras.saving.load_model(calibrated["folder"] / "model.keras")
    export.write_saved_model(model, CLASSES, tmp_path / "s")
    assert (tmp_path / "s" / "assets" / export.THRESHOLDS_ASSET).read_text().split() == ["0.5"] * len(CLASSES)
    served = tf.saved_model.load(str(tmp_path / "s")).signatures["serving_default"](
        images=tf.constant([calibrated["image"].read_bytes()]))
    np.testing.assert_array_equal(served["labels"].numpy(), served["probabilities"].numpy() >= 0.5)
