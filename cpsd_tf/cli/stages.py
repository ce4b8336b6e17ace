"""Stage verbs: baseline, teachers, logits, distill, evaluate, export, run (recipe-driven); predict, cam."""

import click


def _open_run(recipe, run_dir, overrides):
    """Load the recipe with overrides, create the run directory and write the resolved recipe there."""
    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf import runs
    from cpsd_tf.quiet import import_tensorflow

    r = recipe_mod.load(recipe, overrides)
    import_tensorflow()
    directory = recipe_mod.resolve_run_dir(r, run_dir)
    runs.prepare_run_dir(r, directory)
    return r, directory


def recipe_options(f):
    """The options every recipe-driven verb takes."""
    f = click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help="Override a recipe key, e.g. --set partition.k=4 (repeatable).",
    )(f)
    f = click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory (default: the recipe's run_dir).")(f)
    f = click.option("--recipe", required=True, type=click.Path(dir_okay=False), help="Recipe YAML.")(f)
    return f


@click.command("baseline")
@recipe_options
def baseline(recipe, run_dir, overrides):
    """Train the full-label baseline model."""
    from cpsd_tf import baseline as stage

    stage.run(*_open_run(recipe, run_dir, overrides))


@click.command("teachers")
@recipe_options
@click.option("--only", help="Comma-separated teachers to train, e.g. cgp-1,dgp-0.")
@click.option("--shard", help="Train the i-th of n equal shares of the teachers, e.g. 0/2.")
def teachers(recipe, run_dir, overrides, only, shard):
    """Train the 2k teachers of partition.json."""
    from cpsd_tf import teachers as stage

    stage.run(*_open_run(recipe, run_dir, overrides), only=only, shard=shard)


@click.command("logits")
@recipe_options
def logits(recipe, run_dir, overrides):
    """Export the teachers' merged logits on the train split."""
    from cpsd_tf import logits as stage

    stage.run(*_open_run(recipe, run_dir, overrides))


@click.command("distill")
@recipe_options
def distill(recipe, run_dir, overrides):
    """Train the student from the cached teacher logits."""
    from cpsd_tf import distill as stage

    stage.run(*_open_run(recipe, run_dir, overrides))


@click.command("evaluate")
@recipe_options
@click.option("--model", type=click.Path(), help="Model to evaluate (default: every trained model of the run).")
@click.option("--split", help="Split to evaluate (default: the recipe's eval_splits).")
def evaluate(recipe, run_dir, overrides, model, split):
    """Evaluate trained models on the evaluation splits."""
    from cpsd_tf import evaluate as stage

    stage.run(*_open_run(recipe, run_dir, overrides), model=model, split=split)


@click.command("export")
@recipe_options
@click.option("--model", type=click.Path(), help="Model to export (default: the run's student).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="SavedModel base folder.")
def export(recipe, run_dir, overrides, model, out):
    """Export a SavedModel for TF Serving (DIR/<next version>/) and verify it in a fresh process."""
    from cpsd_tf import export as stage

    stage.run(*_open_run(recipe, run_dir, overrides), model=model, out=out)


@click.command("run")
@recipe_options
def run(recipe, run_dir, overrides):
    """Run every missing stage of a recipe in order."""
    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf import runs
    from cpsd_tf.quiet import import_tensorflow

    r = recipe_mod.load(recipe, overrides)
    import_tensorflow()
    runs.run(r, recipe_mod.resolve_run_dir(r, run_dir))


@click.command("cam")
@click.option("--model", required=True, multiple=True, type=click.Path(), help="Model (repeatable: one row each).")
@click.option("--image", required=True, type=click.Path(dir_okay=False), help="Image file.")
@click.option("--label", required=True, help="Class name to explain.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
def cam(model, image, label, out):
    """Class activation map overlay (Grad-CAM) for a label, one row per model."""
    from cpsd_tf import cam as stage
    from cpsd_tf.quiet import import_tensorflow

    import_tensorflow()
    stage.run(list(model), image, label, out)


@click.command("predict")
@click.option("--model", required=True, type=click.Path(exists=True),
              help="A .keras model (or its folder), a SavedModel folder or an export base folder.")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Probability cut-off.")
@click.option("--top", type=click.IntRange(min=1), help="At most this many labels per image.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict(model, images, threshold, top, as_json):
    """Labels of IMAGES above a threshold, with their probabilities."""
    from cpsd_tf import predict as stage
    from cpsd_tf.quiet import import_tensorflow

    import_tensorflow()
    stage.run(model, list(images), threshold=threshold, top=top, as_json=as_json)


COMMANDS = [baseline, teachers, logits, distill, evaluate, export, run, cam, predict]
