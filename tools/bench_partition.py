"""Time of the label partition (spectral CGP + DGP) with one BLAS/OpenMP thread against the default pools.

    python tools/bench_partition.py [--stats ../shared/data/coco2014_train_label_stats.json ...] [--rounds 5]

Cases: each `--stats` file (real label statistics: classes, class_counts, cooccurrence), plus a synthetic
20,000-image × 1,000-class label matrix. Per case, the two variants run interleaved in one process for
`--rounds` rounds after a warm-up; printed: median wall and CPU seconds of the solver (eigen-decomposition
and k-means on both affinities, what `partition_labels` runs under `threadpool_limits(1)`), the ratio, and
whether both variants found the same clusters. The load average before and after tells whether the
machine was shared.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_stats(images=20_000, classes=1_000, seed=0):
    """Label statistics of a random multi-label matrix with grouped co-occurrence (a stand-in for m = 1,000)."""
    from cpsd_tf.stats import label_stats

    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 50, size=classes)
    scene = rng.integers(0, 50, size=images)
    p = np.where(groups[None, :] == scene[:, None], 0.08, 0.002)
    y = (rng.random((images, classes)) < p).astype(np.int8)
    return label_stats(y, [f"c{i}" for i in range(classes)])


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench(name, stats, k, rounds):
    from threadpoolctl import threadpool_limits

    from cpsd_tf import partition

    _, counts, cooc = partition.check_stats(stats, name)
    p_plus, p_minus = partition.affinities(counts, cooc, partition.DEFAULT_TAU)

    def solve():
        return partition.get_strategy("spectral")(p_plus, p_minus, k, 0, False, {})

    variants = {"1 thread": 1, "default threads": None}
    times = {v: [] for v in variants}
    found = {}
    for r in range(rounds + 1):  # round 0 warms up
        for variant, limit in variants.items():
            with threadpool_limits(limits=limit):
                clusters, wall, cpu = timed(solve)
            found[variant] = clusters
            if r:
                times[variant].append((wall, cpu))
    m = len(counts)
    same = found["1 thread"] == found["default threads"]
    base = statistics.median(w for w, _ in times["1 thread"])
    for variant in variants:
        wall = statistics.median(w for w, _ in times[variant])
        cpu = statistics.median(c for _, c in times[variant])
        print(f"{name} (m = {m}, k = {k}) {variant:>15}: {wall:7.3f} s wall, {cpu:7.3f} s CPU, "
              f"{wall / base:5.2f}x the 1-thread wall time")
    print(f"{name}: same clusters with both: {same}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", nargs="*", default=[], help="label statistics JSON files")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    for path in args.stats:
        bench(Path(path).stem, json.loads(Path(path).read_text()), args.k, args.rounds)
    bench("synthetic", synthetic_stats(), args.k, args.rounds)
    print(f"load average {load:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
