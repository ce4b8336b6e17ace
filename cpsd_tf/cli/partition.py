"""`cpsd-tf partition`: CGP and DGP label partitions."""

import click

# Mirrors cpsd_tf.partition.STRATEGIES (a test keeps them equal); listed here so --help stays fast.
STRATEGY_NAMES = ["spectral", "random"]


@click.command("partition")
@click.option("--recipe", type=click.Path(dir_okay=False), help="Recipe YAML (reads its data, writes into its run directory).")
@click.option("--run-dir", type=click.Path(file_okay=False), help="With --recipe: run directory (default: the recipe's run_dir).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="With --recipe: override a recipe key (repeatable).")
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), help="Label-statistics JSON.")
@click.option("--k", type=int, help="Number of clusters per strategy.  [default: 5, paper §4.3]")
@click.option("--tau", type=float, help="Smoothing exponent tau > 0.  [default: 2.0, official code; the paper says 3]")
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES), help="Partition strategy.  [default: spectral]")
@click.option("--seed", type=int, help="Random seed (k-means restarts, random partitions).  [default: 0]")
@click.option("--balanced/--no-balanced", default=None, help="Keep cluster sizes within [m/2k, 1.5m/k].  [default: no, as the paper]")
@click.option("--out", type=click.Path(dir_okay=False), help="With --stats: output partition.json.")
@click.option("--plot", type=click.Path(dir_okay=False), help="With --stats: also write a PNG of the affinities ordered by cluster.")
@click.option("--force", is_flag=True, help="With --recipe: redo a partition made from other recipe values.")
def partition(recipe, run_dir, overrides, stats_path, k, tau, strategy, seed, balanced, out, plot, force):
    """Partition the labels twice: CGP and DGP clusters.

    CGP groups labels that often co-occur, DGP labels that rarely do (--strategy random: random clusters).

    \b
    cpsd-tf partition --stats coco2014_train_label_stats.json --k 5 --tau 2 --out partition.json --plot partition.png
    cpsd-tf partition --recipe recipes/demo.yaml        (writes <run_dir>/partition.json and partition.png)
    """
    if (recipe is None) == (stats_path is None):
        raise click.UsageError("give exactly one of --recipe or --stats")
    options = {"k": k, "tau": tau, "strategy": strategy, "seed": seed, "balanced": balanced}
    if recipe is not None:
        _with_recipe(recipe, run_dir, overrides, options, out, plot, force)
    else:
        _with_stats(stats_path, options, out, plot, run_dir, overrides)


def _with_recipe(recipe_path, run_dir, overrides, options, out, plot, force):
    if out or plot:
        raise click.UsageError("--out and --plot go with --stats; with --recipe the partition is written to the run directory")
    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf.quiet import import_tensorflow

    # --k etc. are shorthands for --set partition.k=... (validated by the recipe like the file).
    shorthands = [f"partition.{key}={str(value).lower() if isinstance(value, bool) else value}"
                  for key, value in options.items() if value is not None]
    recipe = recipe_mod.load(recipe_path, overrides=[*overrides, *shorthands])
    import_tensorflow()  # quietly, before the stage modules import it
    from cpsd_tf import partition as partition_mod
    from cpsd_tf import runs

    run_dir = runs.open_run(recipe, recipe_mod.resolve_run_dir(recipe, run_dir))
    partition_mod.run(recipe, run_dir, force=force)
    runs.record_recipe(recipe, run_dir)


def _with_stats(stats_path, options, out, plot, run_dir, overrides):
    if run_dir or overrides:
        raise click.UsageError("--run-dir and --set go with --recipe")
    if not out:
        raise click.UsageError("--stats needs --out FILE (the partition.json to write)")
    from cpsd_tf import partition as partition_mod
    from cpsd_tf import stats as stats_mod

    defaults = {
        "k": partition_mod.DEFAULT_K, "tau": partition_mod.DEFAULT_TAU, "strategy": partition_mod.DEFAULT_STRATEGY,
        "seed": partition_mod.DEFAULT_SEED, "balanced": False,
    }
    chosen = {key: defaults[key] if value is None else value for key, value in options.items()}
    stats = stats_mod.load(stats_path)
    result = partition_mod.partition_labels(stats, source=stats_path, **chosen)
    click.echo(
        f"Partition of {len(result['classes'])} classes from {stats_path}: "
        + ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in chosen.items())
        + (f" (defaults: {', '.join(key for key, value in options.items() if value is None)})"
           if any(value is None for value in options.values()) else "")
    )
    for line in partition_mod.describe(result):
        click.echo(line)
    partition_mod.write(result, out, stats=stats, plot=plot)
    click.echo(f"Wrote {out}" + (f" and {plot}" if plot else ""))

