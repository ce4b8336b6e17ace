"""Test options: `large` tests (real keras.applications backbones, slower) run only with --run-large."""

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
