"""Progress off a terminal (`cpsd_tf.progress`): a few plain count lines on stderr, never a redrawn bar."""

import re

import pytest
from click.testing import CliRunner

from cpsd_tf import progress
from cpsd_tf.cli import cli


def _lines(text, label):
    return [line for line in text.splitlines() if line.startswith(label)]


def test_off_a_terminal_counts_at_quarters_then_done(capsys):
    with progress.progress_bar(range(8), label="Writing train") as bar:
        assert sum(1 for _ in bar) == 8
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = _lines(err, "Writing train")
    assert [re.sub(r"[0-9.]+ s$", "T s", line) for line in lines] == [
        "Writing train 2/8 (25%) after T s",
        "Writing train 4/8 (50%) after T s",
        "Writing train 6/8 (75%) after T s",
        "Writing train 8/8 done in T s",
    ]


def test_manual_updates_jumping_past_milestones_print_one_line(capsys):
    with progress.progress_bar(length=10, label="passes") as bar:
        bar.update(6)  # past 25 % and 50 %: one line
        bar.update(4)  # the end: the summary line only
    lines = _lines(capsys.readouterr().err, "passes")
    assert [line.split(" after")[0].split(" done")[0] for line in lines] == ["passes 6/10 (60%)", "passes 10/10"]
    assert lines[-1].startswith("passes 10/10 done in ")


def test_unknown_length_prints_counts_every_interval(capsys, monkeypatch):
    monkeypatch.setattr(progress._Quiet, "INTERVAL", 0.0)
    with progress.progress_bar(iter(range(3)), label="reading") as bar:
        for _ in bar:
            pass
    lines = _lines(capsys.readouterr().err, "reading")
    assert [line.split(", after")[0] for line in lines[:3]] == [f"reading {n} so far" for n in (1, 2, 3)]
    assert lines[-1].startswith("reading 3 done in ")


def test_a_failure_prints_no_done_line(capsys):
    with pytest.raises(RuntimeError):
        with progress.progress_bar(range(4), label="work") as bar:
            for i in bar:
                if i == 2:
                    raise RuntimeError("boom")
    lines = _lines(capsys.readouterr().err, "work")
    assert len(lines) == 2 and lines[0].startswith("work 1/4 (25%)") and lines[1].startswith("work 2/4 (50%)")


def test_data_scenes_off_a_terminal_shows_counts(tmp_path):
    """`CliRunner` (like a pipe) is no terminal: "Generating train" shows its counts, then its total."""
    result = CliRunner().invoke(
        cli, ["data", "scenes", "--out", str(tmp_path / "s"), "--train", "12", "--val", "4", "--test", "4",
              "--image-size", "24"]
    )
    assert result.exit_code == 0, result.output
    lines = _lines(result.stderr, "Generating train")
    counts = [re.search(r"(\d+/\d+)", line).group(1) for line in lines]
    assert counts == ["3/12", "6/12", "9/12", "12/12"], result.stderr
    assert "(25%)" in lines[0] and "done in" in lines[-1]
    assert "\r" not in result.stderr
