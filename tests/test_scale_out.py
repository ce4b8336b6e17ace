"""Teachers across machines: `cpsd-tf teachers --shard auto` takes its share from the scheduler."""

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cpsd_tf import rundir, teachers
from cpsd_tf.cli import cli
from cpsd_tf.errors import UserError

from helpers_recipes import write_tiny_recipe


@pytest.mark.parametrize("environ, shard", [
    ({"JOB_COMPLETION_INDEX": "2", "CPSD_TF_SHARDS": "3"}, "2/3"),  # Kubernetes Indexed Job
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, "1/4"),  # sbatch --array=0-3
    ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "5"}, "1/3"),  # --array=5-7
])
def test_scheduler_variables_give_the_shard(environ, shard):
    assert teachers.scheduler_shard(environ) == shard


@pytest.mark.parametrize("environ, fragment", [
    ({}, "no scheduler index found"),
    ({"JOB_COMPLETION_INDEX": "0"}, "CPSD_TF_SHARDS (the number of tasks) is not"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "must be integers"),
])
def test_missing_or_bad_scheduler_variables_are_one_line(environ, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        teachers.scheduler_shard(environ)


def test_three_indexed_processes_train_every_teacher_exactly_once(tmp_path):
    """Three concurrent `--shard auto` processes (pods of an Indexed Job) on one shared run directory."""
    path = write_tiny_recipe(tmp_path, partition={"k": 3})
    for verb in ("data", "partition"):
        args = ["data", "build", "--recipe", str(path)] if verb == "data" else ["partition", "--recipe", str(path)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION"))}
    procs = [subprocess.Popen([sys.executable, "-m", "cpsd_tf", "teachers", "--recipe", str(path), "--shard", "auto"],
                              env={**env, "JOB_COMPLETION_INDEX": str(i), "CPSD_TF_SHARDS": "3"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(3)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    trained = [line.split()[1].rstrip(":") for out in outputs for line in out.splitlines()
               if line.startswith("[teachers] ") and ": best val mAP" in line]
    assert sorted(trained) == ["cgp-0", "cgp-1", "cgp-2", "dgp-0", "dgp-1", "dgp-2"]  # each once, none twice
    # process i trained exactly the i-th share
    for i, out in enumerate(outputs):
        mine = {line.split()[1].rstrip(":") for line in out.splitlines() if ": best val mAP" in line}
        assert mine == {["cgp-0", "cgp-1", "cgp-2", "dgp-0", "dgp-1", "dgp-2"][j] for j in (i, i + 3)}
    for name in trained:
        folder = tmp_path / "run" / "teachers" / name
        assert rundir.model_is_done(folder) and json.loads((folder / "provenance.json").read_text())["values"]
