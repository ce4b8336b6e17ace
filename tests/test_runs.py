"""`cpsd-tf run`: stages in order, finished ones skipped."""

import json

from click.testing import CliRunner

from cpsd_tf import runs
from cpsd_tf.cli import cli

from helpers_recipes import write_tiny_recipe


def test_partition_with_recipe_builds_the_data_first(tmp_path):
    path = write_tiny_recipe(tmp_path)
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "dataset.json").is_file()
    assert (tmp_path / "run" / "partition.json").is_file() and (tmp_path / "run" / "recipe.yaml").is_file()


def test_changed_keys():
    assert runs._changed_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0}) == ["a.c", "d"]


def test_missing_data_without_generator(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"run_dir": str(tmp_path / "run"), "data": {"dir": str(tmp_path / "none")}}))
    result = CliRunner().invoke(cli, ["run", "--recipe", str(path)])
    assert result.exit_code == 2
    assert "holds no dataset.json and the recipe names no data.generator" in result.output
