"""The CLI skeleton: every verb of DESIGN.md is registered, has --help, and user errors exit 2."""

import errno
import os
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


# === One-line usage errors ===


@pytest.mark.parametrize(
    "args, fragment, command",
    [
        (["baseline", "--foo"], "No such option", "cpsd-tf baseline"),
        (["stats", "--data", "x"], "Missing option '--out'", "cpsd-tf stats"),
        (
            ["partition", "--stats", "s.json", "--out", "p.json", "--strategy", "bogus"],
            "'bogus' is not one of", "cpsd-tf partition",
        ),
        (["data", "csv", "--bogus"], "No such option", "cpsd-tf data csv"),
        (["bogus"], "No such command 'bogus'", "cpsd-tf"),
        (["--foo"], "No such option", "cpsd-tf"),
    ],
    ids=["unknown-option", "missing-option", "bad-choice", "nested-verb", "unknown-verb", "group-option"],
)
def test_usage_error_is_one_line(args, fragment, command):
    result = CliRunner().invoke(cli, args, prog_name="cpsd-tf")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and fragment in lines[0], lines[0]
    assert lines[0].endswith(f"({command} --help for usage)"), lines[0]
    assert result.stdout == ""


def test_bare_group_still_shows_its_help():
    result = CliRunner().invoke(cli, ["data"], prog_name="cpsd-tf")
    assert "Usage: cpsd-tf data" in result.output and "csv" in result.output


# === Faults of the environment: one line, exit 2; anything else stays an internal error ===


def _stats_raising(monkeypatch, tmp_path, fault):
    """Run `cpsd-tf stats` with the statistics stage replaced by `fault` (a function that raises)."""
    from cpsd_tf import stats as stats_mod

    monkeypatch.setattr(stats_mod, "run", lambda data_dir, split, out: fault())
    (tmp_path / "d").mkdir(exist_ok=True)
    return CliRunner().invoke(cli, ["stats", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "s.json")])


def _one_error_line(result):
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_disk_full_names_the_file(monkeypatch, tmp_path):
    def fault():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "partition.json"))

    line = _one_error_line(_stats_raising(monkeypatch, tmp_path, fault))
    assert line == (
        f"Error: disk full while writing {tmp_path / 'run' / 'partition.json'}: free space and rerun "
        "(finished stages are kept)"
    )


def test_disk_full_on_a_real_write_finds_the_file_without_filename(monkeypatch, tmp_path):
    """`file.write` raising ENOSPC carries no file name: the open file in the failing frame gives it."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")

    def fault():
        with open("/dev/full", "w") as f:
            f.write("x" * 100_000)

    line = _one_error_line(_stats_raising(monkeypatch, tmp_path, fault))
    assert line == "Error: disk full while writing /dev/full: free space and rerun (finished stages are kept)"


def test_permission_denied_names_the_path(monkeypatch, tmp_path):
    def fault():
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/runs/demo/recipe.yaml")

    line = _one_error_line(_stats_raising(monkeypatch, tmp_path, fault))
    assert line.startswith("Error: /srv/runs/demo/recipe.yaml: permission denied"), line


def test_read_only_file_system_names_the_path(monkeypatch, tmp_path):
    def fault():
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/stats.json")

    line = _one_error_line(_stats_raising(monkeypatch, tmp_path, fault))
    assert line.startswith("Error: /mnt/ro/stats.json: read-only file system"), line


def test_a_chained_fault_is_found_through_its_cause(monkeypatch, tmp_path):
    def fault():
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "out.json")
        except OSError as e:
            raise RuntimeError("saving failed") from e

    assert "disk full while writing out.json" in _one_error_line(_stats_raising(monkeypatch, tmp_path, fault))


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("a bug"), OSError(errno.EIO, "Input/output error", "x"), FileNotFoundError(2, "gone", "y")],
    ids=["runtime", "eio", "not-found"],
)
def test_other_errors_stay_internal(monkeypatch, tmp_path, exc):
    def fault():
        raise exc

    result = _stats_raising(monkeypatch, tmp_path, fault)
    assert result.exit_code == 1
    assert result.exception is exc


def test_usage_and_fault_handling_do_not_import_tensorflow():
    """`cpsd-tf --help` and usage errors stay fast: the CLI package must not pull TensorFlow in."""
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom cpsd_tf.cli import cli\n"
        "r = CliRunner().invoke(cli, ['baseline', '--foo'])\nassert r.exit_code == 2, r.output\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
