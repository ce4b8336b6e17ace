"""`tools/ablation.py`: `--summarise-only --pick` (models of several runs per seed, summarised over the
seeds) and `--jobs` (seeds side by side)."""

import json
import os
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


FAKE_RUN = '''
import json, os, sys, time
args = sys.argv[1:]
if args[:2] == ["data", "build"]:
    with open("builds.txt", "a") as f:
        f.write(f"{time.time()}\\n")
    sys.exit(0)
run_dir = args[args.index("--run-dir") + 1]
seed = int([a for a in args if a.startswith("seed=")][0].split("=")[1])
start = time.time()
print("training seed", seed)
time.sleep(1.5)
if seed == 2:
    sys.exit("seed 2 breaks")
os.makedirs(run_dir)
report = {"splits": ["test"], "details": {},
          "models": {"baseline": {"test": {"mAP": 80.0 + seed, "CF1": 0.0, "OF1": 0.0}}},
          "ran": [start, time.time()], "threads": os.environ.get("TF_NUM_INTRAOP_THREADS")}
with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump(report, f)
'''


def test_jobs_train_seeds_side_by_side_and_name_the_one_that_failed(tmp_path):
    fake = tmp_path / "fake" / "cpsd_tf"  # stands in for `python -m cpsd_tf run`: no training in this test
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(FAKE_RUN)
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    env.pop("TF_NUM_INTRAOP_THREADS", None)
    run = subprocess.run([sys.executable, str(TOOL), "--seeds", "0", "1", "--jobs", "2", "--out", "sweep"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    a, b = (json.loads((tmp_path / "sweep" / f"seed-{s}" / "results.json").read_text()) for s in (0, 1))
    assert a["ran"][0] < b["ran"][1] and b["ran"][0] < a["ran"][1]  # the two seeds overlapped in time
    built = [float(t) for t in (tmp_path / "builds.txt").read_text().split()]
    assert len(built) == 1 and built[0] < min(a["ran"][0], b["ran"][0])  # the data once, before any seed
    assert a["threads"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert (tmp_path / "sweep" / "seed-1.log").read_text().strip() == "training seed 1"
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())["summary"]
    assert summary["baseline"]["test"]["mAP"]["values"] == [80.0, 81.0]

    failed = subprocess.run([sys.executable, str(TOOL), "--seeds", "2", "3", "--jobs", "2", "--out", "sweep2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert f"seed(s) 2 failed; see {Path('sweep2') / 'seed-2.log'}" in failed.stderr
    assert "seed 2 breaks" in (tmp_path / "sweep2" / "seed-2.log").read_text()
    assert (tmp_path / "sweep2" / "seed-3" / "results.json").is_file()  # the other seed went on
