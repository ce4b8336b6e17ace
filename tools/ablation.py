"""Run a recipe for several seeds and report mean ± std of every model on every evaluation split.

    python tools/ablation.py --recipe recipes/scenes_ablation.yaml --seeds 0 1 2

Each seed runs `cpsd-tf run --recipe R --run-dir <out>/seed-<S> --set seed=<S>` in its own process
(finished stages are skipped, so an interrupted sweep resumes), then `<out>/summary.json` and
`<out>/summary.md` hold, per model and split, the mean and standard deviation (ddof=1) of mAP, CF1 and
OF1 over the seeds, and the per-seed values; `<out>/results.png` draws the means with one-std error bars
(and the per-class AP of the student against the baseline, averaged over seeds).
`--summarise-only` skips training and summarises run directories that exist (`--runs DIR ...`), or models
picked from several runs of each seed (`--pick LABEL=DIR:MODEL`, `{seed}` in DIR standing for each of
`--seeds`), e.g. to set a student beside a baseline trained in a run of its own:

    python tools/ablation.py --summarise-only --seeds 0 1 2 --out runs/views-summary \
        --pick "baseline=runs/k6-{seed}:baseline" --pick "baseline, views=runs/bvo-{seed}:baseline" \
        --pick "cpsd=runs/k6tv-{seed}:student"

The training data stay the same for all seeds (`data.seed`); the seed changes initialisation, shuffling,
augmentation and the partition's k-means.

`--jobs N` builds the recipe's data set first, then trains N seeds at a time, each process with cores / N
TensorFlow threads (unless TF_NUM_INTRAOP_THREADS is set) and its output in `<out>/seed-<S>.log`; a seed
that fails does not stop the others, and the tool then exits non-zero naming it. On this 2-core machine,
two single-thread runs side by side train at about 8 s per epoch each, where one alone (one thread) takes
6.5 s: scenes_ablation models.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def picked(picks, seed):
    """A results.json-like dict of the models `picks` (["LABEL=DIR:MODEL", ...]) name for one seed."""
    report = {"models": {}, "details": {}, "splits": []}
    for pick in picks:
        label, _, where = pick.partition("=")
        run_dir, _, model = where.format(seed=seed).rpartition(":")
        if not (label and run_dir and model):
            sys.exit(f"--pick {pick!r}: expected LABEL=DIR:MODEL")
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            sys.exit(f"--pick {pick!r}: {path} not found")
        results = json.loads(path.read_text())
        if model not in results["models"]:
            sys.exit(f"--pick {pick!r}: {path} has no model '{model}' (it has {', '.join(results['models'])})")
        report["models"][label] = results["models"][model]
        report["details"][label] = results.get("details", {}).get(model, {})
        report["splits"] += [s for s in results.get("splits", []) if s not in report["splits"]]
    return report


def table(summary, seeds):
    splits = sorted({s for per in summary.values() for s in per})
    lines = [f"mAP, mean ± std over seeds {', '.join(map(str, seeds))}", "",
             "| model | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for model, per in summary.items():
        cells = [f"{per[s]['mAP']['mean']:.2f} ± {per[s]['mAP']['std']:.2f}" if s in per else "" for s in splits]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(per_seed, summary, png, title, order=None):
    """results.png of the seeds: mean mAP with std error bars, per-class AP averaged over seeds."""
    from cpsd_tf import results_plot

    splits = next(iter(per_seed.values())).get("splits", [])
    report = {"splits": splits, "details": {},
              "models": {m: {s: {"mAP": v["mAP"]["mean"]} for s, v in per.items()} for m, per in summary.items()}}
    errors = {m: {s: v["mAP"]["std"] for s, v in per.items()} for m, per in summary.items()}
    for model in ("baseline", "cpsd"):
        for split in splits:
            rows = [r.get("details", {}).get(model, {}).get(split, {}).get("AP_per_class") for r in per_seed.values()]
            if rows and all(rows):
                mean = [None if any(v is None for v in col) else statistics.fmean(col) for col in zip(*rows)]
                report["details"].setdefault(model, {})[split] = {"AP_per_class": mean}
    results_plot.plot(report, png, title=title, errors=errors, order=order)


def train_seeds(recipe, seeds, out, overrides, jobs=1):
    """`cpsd-tf run` for each seed, `jobs` at a time; {seed: results.json dict}. Exits non-zero if one failed."""
    env = dict(os.environ)
    if jobs > 1:
        env.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
        # The seeds share data.dir: build it once first, so that no two processes generate it together.
        build = [sys.executable, "-m", "cpsd_tf", "data", "build", "--recipe", recipe]
        for o in overrides:
            build += ["--set", o]
        print(f"== data: {' '.join(build)}", flush=True)
        if subprocess.run(build, env=env).returncode != 0:
            sys.exit("the data set could not be built; no seed was started")
    out.mkdir(parents=True, exist_ok=True)

    def one(seed):
        run_dir = out / f"seed-{seed}"
        cmd = [sys.executable, "-m", "cpsd_tf", "run", "--recipe", recipe, "--run-dir", str(run_dir),
               "--set", f"seed={seed}", "--set", f"partition.seed={seed}"]
        for o in overrides:
            cmd += ["--set", o]
        start = time.time()
        log = out / f"seed-{seed}.log"
        print(f"== seed {seed}: {' '.join(cmd)}" + (f" (output: {log})" if jobs > 1 else ""), flush=True)
        if jobs > 1:
            with open(log, "w") as f:
                code = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        else:
            code = subprocess.run(cmd, env=env).returncode
        print(f"== seed {seed} {'took' if code == 0 else f'failed (exit {code}) after'} {time.time() - start:.0f} s",
              flush=True)
        return code

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        codes = dict(zip(seeds, pool.map(one, seeds)))
    failed = [s for s, code in codes.items() if code != 0]
    if failed:
        where = f"; see {', '.join(str(out / f'seed-{s}.log') for s in failed)}" if jobs > 1 else ""
        sys.exit(f"seed(s) {', '.join(map(str, failed))} failed{where}")
    return {seed: json.loads((out / f"seed-{seed}" / "results.json").read_text()) for seed in seeds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/scenes_ablation.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at a time, each in its own process")
    parser.add_argument("--summarise-only", action="store_true", help="summarise existing runs, train nothing")
    parser.add_argument("--runs", nargs="+", help="with --summarise-only: the run directories (one per seed)")
    parser.add_argument("--title", help="figure title (default: the recipe and the number of seeds)")
    parser.add_argument("--pick", action="append", default=[], metavar="LABEL=DIR:MODEL",
                        help="with --summarise-only: model MODEL of run DIR ({seed}: each of --seeds) as LABEL")
    args = parser.parse_args()
    out = Path(args.out)
    per_seed = {}
    if args.summarise_only and args.pick:
        per_seed = {seed: picked(args.pick, seed) for seed in args.seeds}
    elif args.summarise_only:
        runs = [Path(r) for r in args.runs] if args.runs else [out / f"seed-{s}" for s in args.seeds]
        per_seed = {i: json.loads((r / "results.json").read_text()) for i, r in enumerate(runs)}
        args.seeds = [f"{r}" for r in runs] if args.runs else args.seeds
    if not args.summarise_only:
        per_seed = train_seeds(args.recipe, args.seeds, out, args.overrides, args.jobs)
    summary = summarise(per_seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"recipe": args.recipe, "seeds": args.seeds, "picks": args.pick,
                                                  "overrides": args.overrides, "summary": summary}, indent=2))
    text = table(summary, args.seeds)
    (out / "summary.md").write_text(text + "\n")
    title = args.title or f"{args.recipe}, {len(per_seed)} seeds"
    order = [p.partition("=")[0] for p in args.pick] or None
    figure(per_seed, summary, out / "results.png", title, order)
    print(text)
    print(f"Wrote {out / 'summary.json'}, {out / 'summary.md'}, {out / 'results.png'}")


if __name__ == "__main__":
    main()
