"""Run a recipe for several seeds and report mean ± std of every model on every evaluation split.

    python tools/ablation.py --recipe recipes/scenes_ablation.yaml --seeds 0 1 2

Each seed runs `cpsd-tf run --recipe R --run-dir <out>/seed-<S> --set seed=<S>` in its own process
(finished stages are skipped, so an interrupted sweep resumes), then `<out>/summary.json` and
`<out>/summary.md` hold, per model and split, the mean and standard deviation (ddof=1) of mAP, CF1 and
OF1 over the seeds, and the per-seed values. The training data stay the same for all seeds
(`data.seed`); the seed changes initialisation, shuffling, augmentation and the partition's k-means.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

METRICS = ("mAP", "CF1", "OF1")


def summarise(per_seed):
    """{seed: results.json dict} -> {model: {split: {metric: {mean, std, values}}}}."""
    summary = {}
    for seed, report in sorted(per_seed.items()):
        for model, splits in report["models"].items():
            for split, metrics in splits.items():
                for key in METRICS:
                    slot = summary.setdefault(model, {}).setdefault(split, {}).setdefault(key, {"values": []})
                    slot["values"].append(metrics[key])
    for splits in summary.values():
        for metrics in splits.values():
            for slot in metrics.values():
                v = slot["values"]
                slot["mean"] = statistics.fmean(v)
                slot["std"] = statistics.stdev(v) if len(v) > 1 else 0.0
    return summary


def table(summary, seeds):
    splits = sorted({s for per in summary.values() for s in per})
    lines = [f"mAP, mean ± std over seeds {', '.join(map(str, seeds))}", "",
             "| model | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for model, per in summary.items():
        cells = [f"{per[s]['mAP']['mean']:.2f} ± {per[s]['mAP']['std']:.2f}" if s in per else "" for s in splits]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/scenes_ablation.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    args = parser.parse_args()
    out = Path(args.out)
    per_seed = {}
    for seed in args.seeds:
        run_dir = out / f"seed-{seed}"
        cmd = [sys.executable, "-m", "cpsd_tf", "run", "--recipe", args.recipe, "--run-dir", str(run_dir),
               "--set", f"seed={seed}", "--set", f"partition.seed={seed}"]
        for o in args.overrides:
            cmd += ["--set", o]
        start = time.time()
        print(f"== seed {seed}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
        print(f"== seed {seed} took {time.time() - start:.0f} s", flush=True)
        per_seed[seed] = json.loads((run_dir / "results.json").read_text())
    summary = summarise(per_seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"recipe": args.recipe, "seeds": args.seeds,
                                                  "overrides": args.overrides, "summary": summary}, indent=2))
    text = table(summary, args.seeds)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
