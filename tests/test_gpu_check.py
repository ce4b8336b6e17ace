"""tools/gpu_check.py: a clean message without a GPU; with --cpu, the measuring path runs end to end."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"


def _run(*args):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, timeout=300)


def _recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"),
        "data": {"dir": str(tmp_path / "data"), "image_size": 16},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None},
        "train": {"batch_size": 4},
    }))
    return path


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    done = _run("--recipe", str(_recipe(tmp_path)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("devices: CPU:0")
    assert lines[1] == "strategy (train.strategy=auto): _DefaultDistributionStrategy, 1 replica(s)"
    assert lines[2].startswith("no GPU visible to TensorFlow: nothing to measure here")


def test_cpu_mode_times_both_steps(tmp_path):
    done = _run("--recipe", str(_recipe(tmp_path)), "--cpu", "--steps", "2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "tiny_cnn + linear, 16 px, batch 4, mixed_float16, 2 steps each" in out
    assert "baseline: " in out and "student (stored targets): " in out and "student / baseline step time: " in out


def test_bad_recipe_is_one_line_and_exit_2(tmp_path):
    done = _run("--recipe", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"Error: {tmp_path / 'missing.yaml'}: no such recipe file"]
