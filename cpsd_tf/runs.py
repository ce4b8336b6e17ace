"""`cpsd-tf run`: run every missing stage of a recipe, in order, skipping finished ones.

Each stage is (name, is_done(recipe, run_dir), run(recipe, run_dir)). A stage's artefact appears only when
complete, so a run interrupted anywhere and restarted redoes only the unfinished stage.
"""

import dataclasses
from pathlib import Path
from typing import Callable

import click
import yaml

from cpsd_tf import recipe as recipe_mod


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    is_done: Callable
    run: Callable


def _data_stage():
    from cpsd_tf.data import prepare

    return Stage("data", lambda r, d: prepare.is_done(r), lambda r, d: prepare.run(r, d))


def _partition_stage():
    from cpsd_tf import partition

    return Stage(
        "partition",
        lambda r, d: (Path(d) / partition.PARTITION_FILE).is_file(),
        lambda r, d: partition.run(r, d),
    )


def _model_stages(recipe):
    from cpsd_tf import baseline, distill, evaluate, logits, teachers

    stages = [
        Stage("baseline", baseline.is_done, baseline.run),
        Stage("teachers", teachers.is_done, teachers.run),
        Stage("logits", logits.is_done, logits.run),
        Stage("distill", distill.is_done, distill.run),
    ]
    if recipe.reference.equal_compute:
        stages.append(Stage("baseline_equal_compute", baseline.is_equal_compute_done, baseline.run_equal_compute))
    # Results are recomputed whenever a stage ran, so they always cover every finished model.
    stages.append(Stage("evaluate", lambda r, d: False, evaluate.results))
    return stages


def stages(recipe):
    """The pipeline in order."""
    return [_data_stage(), _partition_stage(), *_model_stages(recipe)]


def _changed_keys(old, new, prefix=""):
    if isinstance(old, dict) and isinstance(new, dict):
        keys = []
        for k in sorted(set(old) | set(new)):
            keys += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return keys
    return [] if old == new else [prefix.rstrip(".")]


def prepare_run_dir(recipe, run_dir):
    """Create the run directory and write the resolved recipe; warn when it differs from an earlier one."""
    run_dir = Path(run_dir)
    path = run_dir / recipe_mod.RECIPE_FILE
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        changed = _changed_keys(old, recipe.model_dump(mode="json"))
        if changed:
            click.echo(
                f"warning: {path} differs from this recipe in {', '.join(changed)}; finished stages are kept "
                f"(delete them or use another --run-dir to redo them)",
                err=True,
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_mod.write_resolved(recipe, run_dir)


def run(recipe, run_dir):
    """Run the missing stages in order, skipping finished ones; end with the results table."""
    prepare_run_dir(recipe, run_dir)
    for stage in stages(recipe):
        if stage.is_done(recipe, run_dir):
            click.echo(f"[{stage.name}] done already, skipped")
            continue
        click.echo(f"[{stage.name}] running")
        stage.run(recipe, run_dir)
    return True
