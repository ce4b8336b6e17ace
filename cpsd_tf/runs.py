"""`cpsd-tf run`: the only orchestrator — every stage of a recipe in order, finished ones skipped.

Each stage is (name, is_done(recipe, run_dir), run(recipe, run_dir)). Stages never call each other; they
read their inputs from the run directory and refuse, naming the command, when one is missing. A finished
artefact is kept only if it was made from the same recipe values (each stage checks its provenance), so a
run interrupted anywhere and restarted redoes only the unfinished work.
"""

import dataclasses
from pathlib import Path
from typing import Callable

import click

from cpsd_tf import baseline, distill, evaluate, logits, partition, pretrain, rundir, teachers
from cpsd_tf import recipe as recipe_mod
from cpsd_tf.data import prepare


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    is_done: Callable
    run: Callable


def stages(recipe):
    """The pipeline in order."""
    out = [
        Stage("data", lambda r, d: prepare.is_done(r), lambda r, d: prepare.run(r)),
        *([Stage("pretrain", pretrain.is_done, pretrain.run)] if recipe.pretrain.enabled else []),
        Stage("partition", partition.is_done, partition.run),
        Stage("baseline", baseline.is_done, baseline.run),
        Stage("teachers", teachers.is_done, teachers.run),
        Stage("logits", logits.is_done, logits.run),
        Stage("distill", distill.is_done, distill.run),
    ]
    if recipe.reference.equal_compute:
        out.append(Stage("baseline_equal_compute", baseline.is_equal_compute_done, baseline.run_equal_compute))
    # Results are recomputed whenever the pipeline runs, so they always cover every finished model.
    out.append(Stage("evaluate", lambda r, d: False, evaluate.results))
    return out


def open_run(recipe, run_dir):
    """Claim the run directory for a writing command; a new run gets its `recipe.yaml` at once."""
    run_dir = rundir.claim(run_dir)
    if not (run_dir / rundir.RECIPE_FILE).is_file():
        recipe_mod.write_resolved(recipe, run_dir)
    return run_dir


def record_recipe(recipe, run_dir):
    """After a writing command succeeded: `recipe.yaml` is the recipe its artefacts agree with."""
    recipe_mod.write_resolved(recipe, run_dir)


def verdict(report, student):
    """One line per evaluation split: the student's mAP against the converged baseline's, said plainly."""
    models = report.get("models", {})
    if student not in models or "baseline" not in models:
        return []
    lines = []
    for split, metrics in models[student].items():
        base = models["baseline"].get(split)
        if base is None:
            continue
        delta = metrics["mAP"] - base["mAP"]
        word = "above" if delta > 0 else "below" if delta < 0 else "level with"
        lines.append(f"{student} is {word} the baseline on {split}: {metrics['mAP']:.2f} vs {base['mAP']:.2f} mAP "
                     f"({delta:+.2f})")
    training = report.get("training", {})
    rising = [f"{name} (val mAP {training[name]['last_quarter_rise']:+.2f} in its last quarter)"
              for name in ("baseline", student) if training.get(name, {}).get("rising")]
    if lines and rising:
        lines.append(f"not settled: {' and '.join(rising)} still rising when training stopped; train longer "
                     f"before reading this")
    return lines


def run(recipe, run_dir):
    """Run the stages in order (each skips its finished, matching work); end with the results and a verdict."""
    run_dir = open_run(recipe, run_dir)
    report = None
    for stage in stages(recipe):
        state = "checking finished work" if stage.is_done(recipe, run_dir) else "running"
        click.echo(f"[{stage.name}] {state}")
        out = stage.run(recipe, run_dir)
        if stage.name == "evaluate":
            report = out
        else:
            record_recipe(recipe, run_dir)
    for line in verdict(report or {}, rundir.variant_name(recipe.distill.teachers)):
        click.echo(line)
    for line in written(run_dir):
        click.echo(line)
    return Path(run_dir)


def written(run_dir):
    """Where the run's outputs are, one line each (only those that exist)."""
    run_dir = Path(run_dir)
    lines = [f"Run directory: {run_dir}"]
    for label, path in (("results", run_dir / rundir.RESULTS_MD), ("figure", run_dir / rundir.RESULTS_PNG),
                        ("partition", run_dir / rundir.PARTITION_FILE), ("student", run_dir / rundir.STUDENT_DIR),
                        ("baseline", rundir.baseline_dir(run_dir))):
        if path.exists():
            lines.append(f"  {label + ':':<11}{path}")
    lines.append(f"  TensorBoard: tensorboard --logdir {run_dir}")
    return lines
