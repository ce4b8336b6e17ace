"""One error type for everything the user can fix, and the faults of the environment turned into it.

The CLI turns a `UserError` into one line on stderr and exit code 2, without a traceback; any other
exception is an internal error (exit code 1). `OneLineUsageError` is a click usage error printed on one
line; `cpsd_tf.cli.faults` maps faults of the environment (disk full, corrupt shards, …) to `UserError`s.
"""

import re

import click


def one_line(text) -> str:
    """`text` with its lines joined by spaces (the contract promises one line on stderr).

    Args:
        text: str, a message, possibly multi-line.
    """
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class UserError(click.ClickException):
    """Bad input or usage: a file, key or value the user gave is wrong.

    The message should name the file/key/value and say what is wrong, e.g.
    `UserError("recipe.yaml: key 'partition.k' must be >= 1, received 0")`.
    """

    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {one_line(self.format_message())}", err=True, file=file)


class OneLineUsageError(click.UsageError):
    """A click usage error (unknown option, missing option, bad choice) shown as one line, exit code 2.

    Click's own display is three lines ("Usage: ...", "Try ... for help.", "Error: ..."); this keeps the
    error and points at `--help` in a parenthesis instead.

    Args:
        message: str, click's message of the original error.
        ctx: click.Context or None, the context of the command that failed (for its `--help` hint).
    """

    def show(self, file=None):
        hint = f" ({self.ctx.command_path} --help for usage)" if self.ctx is not None else ""
        click.echo(f"Error: {one_line(self.format_message())}{hint}", err=True, file=file)


# === Faults of the environment ===

# How TensorFlow wraps the messages of its op errors: "{{function_node ...}} <message> [Op:Name] name: ".
_TF_PREFIX = re.compile(r"^\{\{[^}]*\}\}\s*")
_TF_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\].*$")


def tf_message(exc) -> str:
    """The readable part of a TensorFlow op error's message, on one line.

    Args:
        exc: a `tf.errors.OpError` (or any exception).
    """
    text = one_line(getattr(exc, "message", None) or str(exc))
    return _TF_SUFFIX.sub("", _TF_PREFIX.sub("", text)).strip()
