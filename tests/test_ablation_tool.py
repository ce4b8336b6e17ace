"""`tools/ablation.py --summarise-only --pick`: models of several runs per seed, summarised over the seeds."""

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "ablation.py"


def _results(run_dir, models):
    run_dir.mkdir(parents=True)
    report = {"splits": ["test", "test_ood"], "details": {},
              "models": {m: {s: {"mAP": v[i], "CF1": 50.0, "OF1": 60.0} for i, s in enumerate(["test", "test_ood"])}
                         for m, v in models.items()}}
    (run_dir / "results.json").write_text(json.dumps(report))


def _tool(*args, cwd):
    return subprocess.run([sys.executable, str(TOOL), "--summarise-only", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_picks_set_models_of_other_runs_side_by_side(tmp_path):
    for seed, (b, s, v) in enumerate([(80.0, 82.0, 85.0), (82.0, 83.0, 87.0)]):
        _results(tmp_path / f"plain-{seed}", {"baseline": (b, 30.0 + seed), "cpsd": (s, 31.0)})
        _results(tmp_path / f"views-{seed}", {"baseline": (v, 40.0)})
    result = _tool("--seeds", "0", "1", "--out", "summary", "--pick", "baseline=plain-{seed}:baseline",
                   "--pick", "baseline, views=views-{seed}:baseline", "--pick", "cpsd=plain-{seed}:cpsd", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())["summary"]
    assert list(summary) == ["baseline", "baseline, views", "cpsd"]
    assert summary["baseline"]["test"]["mAP"]["values"] == [80.0, 82.0]
    assert summary["baseline, views"]["test"]["mAP"]["mean"] == 86.0
    assert summary["baseline"]["test_ood"]["mAP"]["mean"] == 30.5
    assert "| baseline, views | 86.00 ± 1.41 | 40.00 ± 0.00 |" in result.stdout
    assert (tmp_path / "summary" / "results.png").stat().st_size > 0
    missing = _tool("--seeds", "0", "--out", "s2", "--pick", "cpsd=plain-{seed}:student", cwd=tmp_path)
    assert missing.returncode != 0 and "has no model 'student' (it has baseline, cpsd)" in missing.stderr
