"""Step time of one model trained by 2 local worker processes against 1 (MultiWorkerMirroredStrategy).

    python tools/bench_multiworker.py --recipe recipes/demo.yaml [--epochs 3] [--threads 1]

Runs `cpsd-tf baseline --set train.strategy=multi_worker` first as one worker (no TF_CONFIG), then as two
workers on 127.0.0.1 (free ports, one TF_CONFIG each), same global batch, each in a scratch run directory,
and reads the training time of every epoch after the first (tracing) from the chief's `metrics.json`.
Prints one line per case and the ratio. On one machine the two workers share its cores, so the ratio
measures the cost of the collective all-reduce and of each worker's own input pipeline, not a speed-up.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cpsd_tf.multiworker import local_cluster


def run(recipe, run_dir, workers, epochs, threads, overrides):
    """Train the baseline on `workers` processes; the chief's metrics.json."""
    command = [sys.executable, "-m", "cpsd_tf", "baseline", "--recipe", recipe, "--run-dir", str(run_dir),
               "--set", "train.strategy=multi_worker", "--set", f"baseline.epochs={epochs}"]
    for item in overrides:
        command += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CPSD_TF_QUIET="1", TF_CPP_MIN_LOG_LEVEL="3", TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS=str(threads))
    configs = local_cluster(workers)
    procs = []
    for i in range(workers):
        if workers > 1:
            env = {**env, "TF_CONFIG": configs[i]}
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            sys.exit(f"{workers} worker(s) failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
    return json.loads((Path(run_dir) / "baseline" / "metrics.json").read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per case; the first is not timed (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per process (default 1)")
    args = parser.parse_args(argv)
    subprocess.run([sys.executable, "-m", "cpsd_tf", "data", "build", "--recipe", args.recipe,
                    *sum((["--set", o] for o in args.overrides), [])], check=True, stdout=subprocess.DEVNULL)
    load = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-mw-") as tmp:
        for workers in (1, 2):
            metrics = run(args.recipe, Path(tmp) / f"w{workers}", workers, args.epochs, args.threads, args.overrides)
            per_epoch = [t for t in metrics["train_time_s"][1:] if t is not None]
            results[workers] = statistics.median(per_epoch) / metrics["steps_per_epoch"]
            print(f"{workers} worker(s): {1000 * results[workers]:.1f} ms/step (global batch "
                  f"{metrics['batch_size']}, median of {len(per_epoch)} epochs)")
    print(f"2 workers / 1 worker step time: {results[2] / results[1]:.2f}x (load {load:.1f} -> {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
