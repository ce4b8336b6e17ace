"""Test options (`large` tests, real keras.applications backbones, run only with --run-large) and the tiny
CPSD run that several modules read."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CPSD_TF_QUIET", "1")


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", default=False, help="also run tests marked large")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_cpsd_run(tmp_path_factory):
    """`cpsd-tf run` of the tiny recipe (2 epochs, k = 2, the CPSD student with online targets), trained once
    per session: the folder `run` beside its recipe `r.yaml`, its data `data` and what it printed, `output.txt`.
    Read it only; a test that changes it works on `helpers_recipes.copy_run(tiny_cpsd_run, tmp_path)`."""
    from click.testing import CliRunner

    from cpsd_tf.cli import cli

    from helpers_recipes import write_tiny_recipe

    root = tmp_path_factory.mktemp("tiny-cpsd")
    result = CliRunner().invoke(cli, ["run", "--recipe", str(write_tiny_recipe(root, epochs=2))])
    assert result.exit_code == 0, result.output
    (root / "output.txt").write_text(result.output)  # what the run printed
    return root / "run"
