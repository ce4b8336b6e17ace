"""Stage verbs: baseline, teachers, logits, distill, evaluate, export, run (recipe-driven); predict, cam."""

import click

from cpsd_tf.errors import UserError

RUN_DIR_WAIT_S = 300  # a non-chief worker started before its chief waits this long for the run directory


def _load(recipe, overrides):
    """The validated recipe, then TensorFlow imported quietly (before any stage module imports it loudly)."""
    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf.quiet import import_tensorflow

    r = recipe_mod.load(recipe, overrides)
    import_tensorflow()
    from cpsd_tf import multiworker

    multiworker.init(r)  # before TensorFlow's first operation, when TF_CONFIG names several workers
    return r


def _writing(recipe, run_dir, overrides):
    """A writing command: load the recipe and claim the run directory (a new run gets its recipe.yaml)."""
    from cpsd_tf import recipe as recipe_mod

    r = _load(recipe, overrides)
    from cpsd_tf import multiworker, rundir, runs

    directory = recipe_mod.resolve_run_dir(r, run_dir)
    if not multiworker.is_chief():
        # Another worker of a multi-worker run: the chief owns the run directory and writes it.
        if not multiworker.wait_for(lambda: rundir.is_run_dir(directory), RUN_DIR_WAIT_S):
            raise UserError(f"{directory}: not a run directory after {RUN_DIR_WAIT_S} s; start the chief "
                            f"(worker 0) too, or prepare the run (data, partition) without TF_CONFIG")
        return r, directory
    return r, runs.open_run(r, directory)


def _done(r, directory):
    from cpsd_tf import multiworker, runs

    if multiworker.is_chief():
        runs.record_recipe(r, directory)
    multiworker.barrier()  # the workers of a multi-worker run leave together


def _reading(recipe, run_dir, overrides):
    """A reading command (evaluate, export): never writes recipe.yaml."""
    from cpsd_tf import recipe as recipe_mod

    r = _load(recipe, overrides)
    return r, recipe_mod.resolve_run_dir(r, run_dir)


def recipe_options(f):
    """The options every recipe-driven verb takes."""
    f = click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help="Override a recipe key, e.g. --set partition.k=4 (repeatable).",
    )(f)
    f = click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory (default: the recipe's run_dir).")(f)
    f = click.option("--recipe", required=True, type=click.Path(dir_okay=False), help="Recipe YAML.")(f)
    return f


def force_option(f):
    return click.option(
        "--force", is_flag=True,
        help="Redo this stage's finished work even if it was made from other recipe values (replaces it).",
    )(f)


@click.command("build")
@recipe_options
@force_option
def data_build(recipe, run_dir, overrides, force):
    """Build the recipe's data set (data.generator) into data.dir."""
    del run_dir  # the data set lives in data.dir, shared by runs
    r = _load(recipe, overrides)
    from cpsd_tf.data import prepare  # after the quiet TensorFlow import of _load

    path = prepare.run(r, force=force)
    click.echo(f"[data] {path} ready")


@click.command("views")
@recipe_options
@click.option("--model", "model", type=click.Choice(["distill", "baseline", "teachers"]), default="distill",
              show_default=True, help="Whose views: the student's (distill.views), the baseline's or the teachers'.")
@click.option("--count", type=click.IntRange(1, 64), default=16, show_default=True, help="Images drawn: the first N of the batch.")
@click.option("--step", type=click.IntRange(min=0), default=0, show_default=True, help="Training batch t to draw (its position in the training stream).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
def data_views(recipe, run_dir, overrides, model, count, step, out):
    """Draw one training batch as a model sees it (augmented, then mixed), with its labels."""
    del run_dir  # reads data.dir only
    r = _load(recipe, overrides)
    from cpsd_tf import views_plot
    from cpsd_tf.data import prepare

    prepare.require(r)
    click.echo(views_plot.run(r, out, model=model, count=count, step=step))


@click.command("pretrain")
@recipe_options
@force_option
def pretrain(recipe, run_dir, overrides, force):
    """Pretrain the backbone on the single-object split.

    Settings: the recipe's pretrain.* keys; writes <run_dir>/pretrain/.
    """
    r, directory = _writing(recipe, run_dir, overrides)
    from cpsd_tf import pretrain as stage  # after the quiet TensorFlow import of _load

    stage.run(r, directory, force=force)
    _done(r, directory)


@click.command("baseline")
@recipe_options
@force_option
@click.option("--equal-compute", is_flag=True,
              help="Train the equal-compute baseline instead (baseline_equal_compute/: as many epochs as the 2k "
                   "teachers and the student together; needs partition.json), whatever reference.equal_compute says.")
def baseline(recipe, run_dir, overrides, force, equal_compute):
    """Train the full-label baseline model."""
    r, directory = _writing(recipe, run_dir, overrides)
    from cpsd_tf import baseline as stage  # after the quiet TensorFlow import of _load

    if equal_compute:
        stage.run_equal_compute(r, directory, force=force)
    else:
        stage.run(r, directory, force=force)
    _done(r, directory)


@click.command("teachers")
@recipe_options
@force_option
@click.option("--only", help="Comma-separated teachers to train, e.g. cgp-1,dgp-0.")
@click.option("--shard", help="Train the i-th of n equal shares of the teachers, e.g. 0/2; 'auto': i and n from "
                              "the scheduler (Kubernetes Indexed Job, Slurm job array).")
def teachers(recipe, run_dir, overrides, force, only, shard):
    """Train the 2k teachers of partition.json.

    A teacher another process is training is skipped.
    """
    r, directory = _writing(recipe, run_dir, overrides)
    from cpsd_tf import multiworker
    from cpsd_tf import teachers as stage  # after the quiet TensorFlow import of _load

    if shard and multiworker.active():
        raise UserError("teachers: --shard and a multi-worker TF_CONFIG do not mix: the workers of one "
                        "cluster train every teacher together; drop --shard or TF_CONFIG")

    stage.run(r, directory, only=only, shard=shard, force=force)
    _done(r, directory)


@click.command("logits")
@recipe_options
@force_option
def logits(recipe, run_dir, overrides, force):
    """Cache the teachers' merged logits on the train split.

    Only needed for distill.teacher_logits: cached_clean (logits/<set>.npy, one row per train image) or
    cached_views (logits/views/<set>.npy, one row per augmented view the students will see); with the
    default, online, it has nothing to do.
    """
    r, directory = _writing(recipe, run_dir, overrides)
    from cpsd_tf import logits as stage  # after the quiet TensorFlow import of _load

    stage.run(r, directory, force=force)
    _done(r, directory)


@click.command("distill")
@recipe_options
@force_option
def distill(recipe, run_dir, overrides, force):
    """Train the student (and its ablation students) from the teachers.

    \b
    Trains the recipe's student into <run_dir>/student/ and each ablation variant into
    <run_dir>/ablations/<name>/, from finished teachers: it never trains teachers (run
    'cpsd-tf teachers' first). The teachers' targets, by distill.teacher_logits:
      online        (default) the frozen teachers run on each augmented batch the student sees;
      cached_views  the same targets, read from the tables written by 'cpsd-tf logits';
      cached_clean  the teachers' logits of the un-augmented train images, from 'cpsd-tf logits'.
    """
    r, directory = _writing(recipe, run_dir, overrides)
    from cpsd_tf import distill as stage  # after the quiet TensorFlow import of _load

    stage.run(r, directory, force=force)
    _done(r, directory)


@click.command("evaluate")
@recipe_options
@click.option("--model", type=click.Path(), help="Model to evaluate (default: every trained model of the run).")
@click.option("--split", help="Split to evaluate (default: the recipe's eval_splits).")
def evaluate(recipe, run_dir, overrides, model, split):
    """Evaluate trained models on the evaluation splits.

    Writes results.json and results.md, never recipe.yaml.
    """
    r, directory = _reading(recipe, run_dir, overrides)
    from cpsd_tf import evaluate as stage  # after the quiet TensorFlow import of _load

    stage.run(r, directory, model=model, split=split)


@click.command("export")
@recipe_options
@click.option("--model", type=click.Path(), help="Model to export (default: the run's student).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="SavedModel base folder.")
def export(recipe, run_dir, overrides, model, out):
    """Export a verified SavedModel for TF Serving.

    Written to OUT/<next version>/ and published only after a fresh process has checked that it serves
    the Keras model's probabilities.
    """
    r, directory = _reading(recipe, run_dir, overrides)
    from cpsd_tf import export as stage  # after the quiet TensorFlow import of _load

    stage.run(r, directory, model=model, out=out)


@click.command("run")
@recipe_options
def run(recipe, run_dir, overrides):
    """Run every stage of a recipe, keeping finished work.

    The stages run in order; finished work made from the same recipe values is kept.

    \b
    Interrupted? Run the same command again: finished models are skipped and a model cut off mid-training
    resumes from its last epoch. A recipe that disagrees with finished work is refused (use a new
    --run-dir, or redo a stage with its own verb and --force).
    """
    from cpsd_tf import recipe as recipe_mod

    r = _load(recipe, overrides)
    from cpsd_tf import multiworker, runs  # after the quiet TensorFlow import of _load

    if multiworker.active():
        raise UserError(
            f"cpsd-tf run: TF_CONFIG names {multiworker.cluster().workers} workers; prepare the run without "
            f"TF_CONFIG (cpsd-tf data build, partition), then run each training stage (baseline, teachers, "
            f"distill) on every worker, and evaluate without TF_CONFIG (README 'Scale out')")
    runs.run(r, recipe_mod.resolve_run_dir(r, run_dir))


@click.command("cam")
@click.option("--model", required=True, multiple=True, type=click.Path(), help="Model (repeatable: one row each).")
@click.option("--image", required=True, type=click.Path(dir_okay=False), help="Image file.")
@click.option("--label", required=True, help="Class name to explain.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
def cam(model, image, label, out):
    """Grad-CAM overlay of a label on an image, one row per model."""
    from cpsd_tf import cam as stage
    from cpsd_tf.quiet import import_tensorflow

    import_tensorflow()
    stage.run(list(model), image, label, out)


@click.command("predict")
@click.option("--model", required=True, type=click.Path(exists=True),
              help="A .keras model (or its folder), a SavedModel folder or an export base folder.")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="One probability cut-off for every class (default: the model's calibrated per-class "
                   "thresholds, chosen on the selection split; 0.5 for a model without them).")
@click.option("--top", type=click.IntRange(min=1), help="At most this many labels per image.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict(model, images, threshold, top, as_json):
    """Labels of IMAGES at or above their threshold, with their probabilities."""
    from cpsd_tf import predict as stage
    from cpsd_tf.quiet import import_tensorflow

    import_tensorflow()
    stage.run(model, list(images), threshold=threshold, top=top, as_json=as_json)


COMMANDS = [pretrain, baseline, teachers, logits, distill, evaluate, export, run, cam, predict]
DATA_COMMANDS = [data_build, data_views]
