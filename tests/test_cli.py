"""The CLI skeleton: every verb of DESIGN.md is registered, has --help, and user errors exit 2."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from cpsd_tf.cli import cli

VERBS = [
    ["data", "scenes"], ["data", "coco"], ["data", "nuswide"], ["data", "csv"], ["stats"], ["partition"],
    ["baseline"], ["teachers"], ["logits"], ["distill"], ["evaluate"], ["export"], ["run"], ["cam"], ["predict"],
]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_help_on_every_verb(verb):
    result = CliRunner().invoke(cli, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_missing_option_is_a_usage_error():
    result = CliRunner().invoke(cli, ["stats", "--data", "x"])
    assert result.exit_code == 2
    assert "Missing option '--out'" in result.output


def test_user_error_is_one_line_without_traceback(tmp_path):
    """Through the real console script: one line on stderr, exit 2, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-c", "from cpsd_tf.cli import main; main()", "stats", "--data", str(tmp_path), "--out", "s.json"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and "dataset.json: no such file" in lines[0]
    assert "Traceback" not in proc.stderr
