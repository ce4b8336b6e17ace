"""The `cpsd-tf` command line: parses arguments and calls the stage modules.

User errors (`cpsd_tf.errors.UserError`, click usage errors) print one line on stderr and exit with 2;
anything else is an internal error (exit 1, with a traceback).
"""

import os

import click

from cpsd_tf import __version__
from cpsd_tf.cli import data, partition, scenes, stages


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cpsd-tf")
def cli():
    """CPSD for multi-label image classification: partition labels, train teachers, distill a student.

    \b
    recipe.yaml -> data -> partition -> teachers -> logits -> distill -> evaluate / export / cam
    Start with: cpsd-tf run --recipe recipes/demo.yaml
    """


data.group.add_command(scenes.scenes)
cli.add_command(data.group)
cli.add_command(data.stats)
cli.add_command(partition.partition)
for command in stages.COMMANDS:
    cli.add_command(command)


def main():
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) would drown our one-line messages.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="cpsd-tf")
