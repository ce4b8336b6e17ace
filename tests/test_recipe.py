"""Recipes: validation on load, `--set` overrides, the resolved copy in the run directory."""

from pathlib import Path

import pytest
import yaml

from cpsd_tf import recipe
from cpsd_tf.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"run_dir": "runs/x", "data": {"dir": "data/x"}}


def _write(tmp_path, tree):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    r = recipe.load(path)
    assert r.data.image_size > 0 and r.partition.k >= 1


def test_demo_values():
    r = recipe.load(ROOT / "recipes" / "demo.yaml")
    assert r.model.backbone == "tiny_cnn" and r.partition.k == 3
    assert r.data.eval_splits == ["test", "test_ood"]


def test_frozen():
    r = recipe.from_dict(MINIMAL)
    with pytest.raises(Exception):
        r.partition.k = 3


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "partition": {"kk": 3}})
    with pytest.raises(UserError) as e:
        recipe.load(path)
    msg = e.value.format_message()
    assert str(path) in msg and "partition.kk" in msg and "k, tau, strategy" in msg


def test_wrong_type_names_received(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "partition": {"k": "three"}})
    with pytest.raises(UserError, match=r"key 'partition.k'.*integer.*received 'three'"):
        recipe.load(path)


def test_out_of_range(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "partition": {"tau": 0}})
    with pytest.raises(UserError, match=r"partition.tau.*greater than 0.*received 0"):
        recipe.load(path)


def test_literal_lists_allowed_values(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "partition": {"strategy": "kmeans"}})
    with pytest.raises(UserError, match=r"'spectral' or 'random'.*received 'kmeans'"):
        recipe.load(path)


def test_missing_required_key(tmp_path):
    path = _write(tmp_path, {"run_dir": "r"})
    with pytest.raises(UserError, match=r"missing required key 'data'"):
        recipe.load(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: invalid YAML at line"):
        recipe.load(path)
    with pytest.raises(UserError, match="no such recipe file"):
        recipe.load(tmp_path / "nope.yaml")
    path.write_text("- a list\n")
    with pytest.raises(UserError, match="must be a mapping"):
        recipe.load(path)


def test_overrides_coerce_types(tmp_path):
    path = _write(tmp_path, MINIMAL)
    r = recipe.load(path, ["partition.k=4", "partition.tau=1.5", "partition.balanced=true",
                           "data.eval_splits=[test, test_ood]", "data.scenes.train=100"])
    assert r.partition.k == 4 and r.partition.tau == 1.5 and r.partition.balanced is True
    assert r.data.eval_splits == ["test", "test_ood"] and r.data.scenes.train == 100


def test_override_errors_name_the_option(tmp_path):
    path = _write(tmp_path, MINIMAL)
    with pytest.raises(UserError, match=r"--set partition.k: key 'partition.k'.*received 0"):
        recipe.load(path, ["partition.k=0"])
    with pytest.raises(UserError, match=r"--set partition.nope: unknown key"):
        recipe.load(path, ["partition.nope=1"])
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        recipe.load(path, ["partition.k"])
    with pytest.raises(UserError, match="is not a section"):
        recipe.load(path, ["run_dir.x=1"])


def test_resolved_recipe_written_and_reloads(tmp_path):
    r = recipe.load(ROOT / "recipes" / "demo.yaml", ["partition.k=2"])
    written = recipe.write_resolved(r, tmp_path / "run")
    assert written.name == "recipe.yaml"
    again = recipe.load(written)
    assert again == r and again.partition.k == 2


def test_unknown_key_inside_optional_section(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "data": {"dir": "d", "augment": {"cutout": {"sise": 0.5}}}})
    with pytest.raises(UserError, match=r"data.augment.cutout.sise.*allowed keys here: probability, size"):
        recipe.load(path)
