"""`cpsd-tf teachers`: the 2k sub-task models of `partition.json`, into `<run_dir>/teachers/<cgp|dgp>-<i>/`.

A recipe whose student or ablations use the `random` set also gets the k teachers of the random partition
(`partition_random.json`, teachers `random-<i>`). Each teacher trains under its folder's lock, so several
processes (`--shard i/n`, or plain duplicates) can share one run directory: a teacher another process is
training is skipped here.
"""

import click

from cpsd_tf import recipe as recipe_mod
from cpsd_tf import multiworker, rundir, stage, views
from cpsd_tf.data import prepare, records
from cpsd_tf.errors import UserError


# --shard auto: (index variable, count variable, first-index variable) of the schedulers we know
SCHEDULERS = (
    ("JOB_COMPLETION_INDEX", "CPSD_TF_SHARDS", None),  # Kubernetes Indexed Job (count: set it to completions)
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),  # Slurm job array
)


def scheduler_shard(environ=None):
    """'i/n' from the scheduler's environment (`--shard auto`); a `UserError` when none is found."""
    import os

    environ = os.environ if environ is None else environ
    for index_var, count_var, first_var in SCHEDULERS:
        if index_var not in environ:
            continue
        if count_var not in environ:
            raise UserError(f"--shard auto: {index_var} is set but {count_var} (the number of tasks) is not")
        try:
            index = int(environ[index_var]) - int(environ.get(first_var, 0) if first_var else 0)
            count = int(environ[count_var])
        except ValueError:
            raise UserError(f"--shard auto: {index_var}={environ[index_var]!r} and {count_var}="
                            f"{environ[count_var]!r} must be integers") from None
        return f"{index}/{count}"
    raise UserError("--shard auto: no scheduler index found; set JOB_COMPLETION_INDEX and CPSD_TF_SHARDS "
                    "(Kubernetes Indexed Job) or run in a Slurm job array (SLURM_ARRAY_TASK_ID, "
                    "SLURM_ARRAY_TASK_COUNT)")


def parse_shard(text):
    """'i/n' -> (i, n) with 0 <= i < n; 'auto' reads i and n from the scheduler (`scheduler_shard`)."""
    if text == "auto":
        text = scheduler_shard()
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard '{text}': expected i/n, e.g. 0/2") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def select(teachers, only=None, shard=None):
    """The teachers named by `--only` (comma-separated) and/or the `--shard i/n` share of them."""
    names = [t[0] for t in teachers]
    if only:
        wanted = [w.strip() for w in only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise UserError(f"--only: unknown teacher(s) {unknown}; this run has {names}")
        teachers = [t for t in teachers if t[0] in wanted]
    if shard:
        i, n = parse_shard(shard)
        teachers = teachers[i::n]
    return teachers


def _set_of(name):
    return name.rsplit("-", 1)[0]


def teacher_provenance(recipe, run_dir, name, subset):
    values = stage.model_values(recipe, "teachers", subset=list(subset))
    inputs = {**stage.data_inputs(recipe, run_dir),
              "partition": rundir.artefact_id(rundir.partition_path(run_dir, _set_of(name)))}
    return values, inputs


def is_done(recipe, run_dir) -> bool:
    """Every teacher of the run is trained (only looks)."""
    try:
        teachers = rundir.teacher_list(recipe, run_dir)
    except UserError:  # no partition yet
        return False
    return all(rundir.model_is_done(d) for _, d, _ in teachers)


def run(recipe, run_dir, only=None, shard=None, force=False):
    """Train the selected teachers that are not finished yet (the data and the partition must exist)."""
    if shard:
        parse_shard(shard)  # a bad option is reported before anything else
    data_dir = prepare.require(recipe)
    info = records.load_info(data_dir)
    for teacher_set in rundir.trained_sets(recipe):
        part = rundir.partition_path(run_dir, teacher_set)
        if not part.is_file():
            raise UserError(f"{part}: no partition yet; run 'cpsd-tf partition --recipe R' first")
    chosen = select(rundir.teacher_list(recipe, run_dir), only, shard)
    trainer_recipe = recipe_mod.with_lr(recipe, recipe.teachers.lr)
    busy = []
    for n, (name, model_dir, subset) in enumerate(chosen, 1):
        values, inputs = teacher_provenance(recipe, run_dir, name, subset)
        if not force and stage.check_finished(model_dir, values, inputs, f"teacher {name}", "teachers"):
            click.echo(f"[teachers] {name} finished already, skipped")
            continue
        names = [info.classes[c] for c in subset]
        shown = ", ".join(names[:6]) + ("..." if len(names) > 6 else "")
        kind = recipe.teachers.views.kind
        mixed = f", {kind} views" if kind != "none" else ""
        click.echo(f"[teachers] {n}/{len(chosen)} {name}: {len(subset)} classes ({shown}){mixed}")
        outcome = stage.train_model(
            trainer_recipe, model_dir, what=f"teacher {name}", command="teachers", values=values, inputs=inputs,
            force=force, busy="skip", run_dir=run_dir, num_classes=len(subset), class_names=names, subset=subset,
            images=recipe.teachers.images, epochs=recipe.teachers.epochs, title=f"teacher-{name}",
            mix=views.mixer(recipe.teachers.views, recipe.seed, subset),
            with_objects=views.by_object(recipe.teachers.views),
        )
        if outcome == "busy":
            busy.append(name)
            continue
        metrics = rundir.model_metrics(model_dir)
        if outcome == "trained" and metrics and multiworker.is_chief():  # another worker wrote nothing there
            click.echo(f"[teachers] {name}: best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} "
                       f"at epoch {metrics['best_epoch']}")
    if busy:
        click.echo(f"[teachers] left to the processes training them: {', '.join(busy)}")
    return busy
