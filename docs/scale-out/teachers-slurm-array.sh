#!/bin/bash
# Slurm job array: the 2k CPSD teachers of one run as 4 array tasks at once.
#   sbatch docs/scale-out/teachers-slurm-array.sh
# Each task runs `cpsd-tf teachers --shard auto`: SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) and
# SLURM_ARRAY_TASK_COUNT pick its share. The run directory and the data folder must be on a file system
# every node mounts; each teacher is trained under its folder's lock (flock), so a requeued task, or
# two tasks given the same share, never train one teacher twice.
# Before: `cpsd-tf data build` and `cpsd-tf partition` (once). After: `cpsd-tf run` (skips the teachers).
#SBATCH --job-name=cpsd-teachers
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --requeue
set -euo pipefail
cpsd-tf teachers --recipe recipes/coco_resnet101_tf.yaml --run-dir /shared/runs/coco --shard auto
