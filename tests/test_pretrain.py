"""Backbone pretraining on the scenes single-object split (cpsd_tf.pretrain)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpsd_tf import pretrain, rundir
from cpsd_tf import recipe as recipe_mod
from cpsd_tf.data import records, scenes
from cpsd_tf.errors import UserError
from cpsd_tf.pretrain import PretrainConfig

SCENES = {"train": 48, "val": 16, "test": 16, "image_size": 32}
CONFIG = PretrainConfig(enabled=True, epochs=1, batch_size=16, lr=0.01)


def _recipe(root, single=64, single_val=32, generator="scenes", weights=None):
    tree = {
        "run_dir": str(root / "run"),
        "data": {"dir": str(root / "data"), "generator": generator,
                 "scenes": {**SCENES, "single": single, "single_val": single_val},
                 "image_size": 32, "eval_splits": ["test"], "augment": {"flip": False}},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": weights},
        "train": {"epochs": 1, "batch_size": 16, "cache": True},
        "pretrain": {"enabled": weights == "pretrain"},
    }
    return recipe_mod.from_dict(tree)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    scenes.generate(root / "data", scenes.ScenesConfig(**SCENES, single=64, single_val=32), seed=0)
    recipe = _recipe(root)
    metrics = pretrain.run(recipe, root / "run", config=CONFIG)
    return root, recipe, metrics


def test_pretrain_writes_backbone_weights_and_metrics(pretrained):
    root, recipe, metrics = pretrained
    run_dir = root / "run"
    assert rundir.pretrain_weights_path(run_dir) == run_dir / "pretrain" / "backbone.weights.h5"
    assert rundir.pretrain_weights_path(run_dir).is_file() and pretrain.is_done(recipe, run_dir)
    on_disk = json.loads((run_dir / "pretrain" / "metrics.json").read_text())
    assert on_disk == metrics
    assert on_disk["epochs"] == 1 and on_disk["train_images"] == 64 and on_disk["val_images"] == 32
    assert on_disk["split"] == "single" and on_disk["val_split"] == "single_val" and on_disk["select_split"] == "single_val"
    assert on_disk["num_classes"] == 30 and on_disk["classes"] == scenes.CLASSES
    assert 0.0 <= on_disk["accuracy"] <= 100.0 and 0.0 < on_disk["mAP"] <= 100.0
    assert on_disk["pretrain"] == CONFIG.model_dump()
    leftovers = [p.name for p in (run_dir / "pretrain").iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert not leftovers  # no temporary files


def test_saved_backbone_loads_into_a_fresh_one(pretrained):
    from cpsd_tf.rundir import load_model
    from cpsd_tf.models import build_backbone, build_model

    root, _, _ = pretrained
    path = rundir.pretrain_weights_path(root / "run")
    source = load_model(root / "run" / "pretrain" / "model.keras").get_layer("backbone").get_weights()
    loaded = build_backbone("tiny_cnn", 32, weights=str(path)).get_weights()
    fresh = build_backbone("tiny_cnn", 32, weights=None).get_weights()
    assert len(loaded) == len(source) == len(fresh)
    for a, b in zip(loaded, source):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, source))  # pretraining changed something
    # the way every model of the run gets it: model.weights -> build_model(weights=...)
    model = build_model("tiny_cnn", "linear", 30, 32, weights=str(path))
    for a, b in zip(model.get_layer("backbone").get_weights(), source):
        np.testing.assert_array_equal(a, b)


def test_finished_pretraining_is_not_redone(pretrained):
    root, recipe, metrics = pretrained
    path = rundir.pretrain_weights_path(root / "run")
    before = path.stat().st_mtime_ns
    assert pretrain.run(recipe, root / "run", config=CONFIG) == metrics
    assert path.stat().st_mtime_ns == before
    # finished work made from other values is refused, naming the key, and kept
    with pytest.raises(UserError, match=r"was made with epochs=1, this recipe asks epochs=2.*--force"):
        pretrain.run(recipe, root / "run", config=CONFIG.model_copy(update={"epochs": 2}))
    assert path.stat().st_mtime_ns == before


def test_resolve_weights(tmp_path):
    with pytest.raises(UserError, match="model.weights.*pretrain.enabled is false"):
        recipe_mod.from_dict({"run_dir": "r", "data": {"dir": "d"}, "model": {"weights": "pretrain"}})
    recipe = _recipe(tmp_path, weights="pretrain")
    resolved = rundir.resolve_weights(recipe, tmp_path / "elsewhere")
    assert resolved.model.weights == str(tmp_path / "elsewhere" / "pretrain" / "backbone.weights.h5")
    assert resolved.data == recipe.data and recipe.model.weights == "pretrain"
    plain = _recipe(tmp_path, weights=None)
    assert rundir.resolve_weights(plain, tmp_path) is plain


def test_provenance_inputs_name_the_pretraining(pretrained):
    root, recipe, _ = pretrained
    run_dir = root / "run"
    ident = json.loads((run_dir / "pretrain" / "provenance.json").read_text())["id"]
    uses = _recipe(root, weights="pretrain")
    assert rundir.pretrain_inputs(uses, run_dir) == {"pretrain": ident}
    assert rundir.pretrain_inputs(rundir.resolve_weights(uses, run_dir), run_dir) == {"pretrain": ident}
    assert rundir.pretrain_inputs(recipe, run_dir) == {}  # model.weights: null


def test_pretrain_recipe_trains_on_single_from_scratch(tmp_path):
    recipe = _recipe(tmp_path, weights="pretrain")
    pre = pretrain.pretrain_recipe(recipe, CONFIG)
    assert pre.data.train_split == "single" and pre.data.val_split == "single_val"
    assert pre.model.weights is None and pre.model.backbone == "tiny_cnn"
    assert (pre.train.epochs, pre.train.lr, pre.train.batch_size) == (1, 0.01, 16)
    assert recipe.data.train_split == "train" and recipe.train.lr == 1e-4  # the original is untouched


def test_is_done_only_looks(tmp_path):
    assert not pretrain.is_done(None, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_single_split_is_a_user_error(tmp_path):
    scenes.generate(tmp_path / "data", scenes.ScenesConfig(**SCENES), seed=0)
    with pytest.raises(UserError, match=r"has no split\(s\) \['single', 'single_val'\] to pretrain on.*set data.scenes.single"):
        pretrain.run(_recipe(tmp_path, single=0), tmp_path / "run", config=CONFIG)
    with pytest.raises(UserError, match=r"has no split\(s\) \['single_val'\].*pretrain.val_split"):
        pretrain.run(_recipe(tmp_path, generator=None), tmp_path / "run",
                     config=CONFIG.model_copy(update={"split": "train"}))
    assert not (tmp_path / "run").exists()
    assert "single" not in records.load_info(tmp_path / "data").splits  # the stage never writes data


def test_config_is_strict():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="epoch"):
        PretrainConfig(epoch=3)
    with pytest.raises(ValidationError):
        PretrainConfig(lr=0)
    assert PretrainConfig().enabled is False


def test_the_recipe_section_does_not_import_tensorflow():
    code = ("import sys; from cpsd_tf.recipe import PretrainConfig; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
