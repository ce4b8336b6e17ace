"""`cpsd-tf partition`: CGP and DGP label partitions."""

import click

from cpsd_tf.errors import UserError


@click.command("partition")
@click.option("--recipe", type=click.Path(dir_okay=False), help="Recipe YAML (reads its data, writes into its run directory).")
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), help="Label-statistics JSON.")
@click.option("--k", type=int, help="Number of clusters per strategy.")
@click.option("--tau", type=float, help="Smoothing exponent tau > 0.")
@click.option("--strategy", type=click.Choice(["spectral", "random"]), help="Partition strategy.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--out", type=click.Path(dir_okay=False), help="Output partition.json.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG of the affinities ordered by cluster.")
def partition(recipe, stats_path, k, tau, strategy, seed, out, plot):
    """Partition the labels twice: co-occurrence (CGP) and dis-occurrence (DGP) clusters."""
    raise UserError("'cpsd-tf partition' is not built yet (issue #3)")
