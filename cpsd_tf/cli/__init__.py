"""The `cpsd-tf` command line: parses arguments and calls the stage modules.

User errors (`cpsd_tf.errors.UserError`, click usage errors) print one line on stderr and exit with 2;
so do faults of the environment (disk full, permissions, read-only file system, corrupt TFRecord
shards: see `cpsd_tf.cli.faults`); anything else is an internal error (exit 1, with a
traceback).
"""

import contextlib
import os

import click

from cpsd_tf import __version__
from cpsd_tf.cli import data, partition, scenes, stages
from cpsd_tf.cli.faults import fault_to_user_error
from cpsd_tf.cli.groups import Group
from cpsd_tf.errors import OneLineUsageError


@contextlib.contextmanager
def _clean_errors():
    """Turn click usage errors into one-line ones and environment faults into `UserError`s."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # shows the help text, which is what a bare `cpsd-tf data` asks for
    except OneLineUsageError:
        raise
    except click.UsageError as e:
        raise OneLineUsageError(e.format_message(), e.ctx) from e
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except Exception as e:
        err = fault_to_user_error(e)
        if err is None:
            raise
        raise err from e


class _Group(Group):
    """The top-level group: its errors are converted here, inside click, so `CliRunner` sees exit 2 too.

    Usage errors of the group itself come from `make_context`; those of the verbs (and of `data`'s
    sub-verbs) and everything the verbs raise come through `invoke`.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        with _clean_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        from cpsd_tf import rundir

        rundir.forget_claims()
        try:
            with _clean_errors():
                return super().invoke(ctx)
        except BaseException as e:
            if not (isinstance(e, click.exceptions.Exit) and e.exit_code == 0):
                rundir.discard_unused_claims()  # a refused stage leaves no new run directory behind
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cpsd-tf")
def cli():
    """CPSD for multi-label image classification: partition labels, train teachers, distill a student.

    \b
    recipe.yaml -> data -> partition -> teachers -> logits -> distill -> evaluate / export / cam
    Start with: cpsd-tf run --recipe recipes/demo.yaml
    """


data.group.add_command(scenes.scenes)
for command in stages.DATA_COMMANDS:
    data.group.add_command(command)
cli.add_command(data.group)
cli.add_command(data.stats)
cli.add_command(partition.partition)
for command in stages.COMMANDS:
    cli.add_command(command)


def main():
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) would drown our one-line messages.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="cpsd-tf")
