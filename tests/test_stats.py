"""Label statistics (`cpsd-tf stats`)."""

import json

import numpy as np
from click.testing import CliRunner

from cpsd_tf import stats
from cpsd_tf.cli import cli
from cpsd_tf.data import records


def test_label_stats_matches_loops():
    rng = np.random.default_rng(0)
    y = (rng.random((50, 6)) < 0.3).astype(np.uint8)
    s = stats.label_stats(y, list("abcdef"))
    for i in range(6):
        assert s["class_counts"][i] == int(y[:, i].sum())
        for j in range(6):
            expected = 0 if i == j else int(np.sum(y[:, i] & y[:, j]))
            assert s["cooccurrence"][i][j] == expected


def test_stats_command(tmp_path):
    recs = [records.Record(b"\x89PNG", f"{i}", labels) for i, labels in enumerate([[0, 1], [1], [], [0, 1, 2]])]
    records.write_split(tmp_path / "d", "train", ["a", "b", "c"], recs)
    out = tmp_path / "s.json"
    result = CliRunner().invoke(cli, ["stats", "--data", str(tmp_path / "d"), "--split", "train", "--out", str(out)])
    assert result.exit_code == 0, result.output
    s = json.loads(out.read_text())
    assert s["classes"] == ["a", "b", "c"]
    assert s["class_counts"] == [2, 3, 1]
    assert s["cooccurrence"][0][1] == 2 and s["cooccurrence"][1][2] == 1 and s["cooccurrence"][2][2] == 0


def test_stats_bad_split(tmp_path):
    recs = [records.Record(b"x", "0", [0])]
    records.write_split(tmp_path / "d", "train", ["a"], recs)
    result = CliRunner().invoke(cli, ["stats", "--data", str(tmp_path / "d"), "--split", "val", "--out", "s.json"])
    assert result.exit_code == 2
    assert "no split 'val'" in result.output
