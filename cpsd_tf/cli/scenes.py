"""`cpsd-tf data scenes`: the bundled benchmark."""

import click

from cpsd_tf.errors import UserError


@click.command("scenes")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same data).")
@click.option("--train", default=None, type=int, help="Number of training images.")
@click.option("--test", default=None, type=int, help="Number of images in test and test_ood.")
def scenes(out, seed, train, test):
    """Generate the scenes benchmark from scikit-learn's handwritten digits."""
    raise UserError("'cpsd-tf data scenes' is not built yet (issue #2)")
