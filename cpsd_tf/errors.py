"""One error type for everything the user can fix.

The CLI turns a `UserError` into one line on stderr and exit code 2, without a traceback; any other
exception is an internal error (exit code 1).
"""

import click


class UserError(click.ClickException):
    """Bad input or usage: a file, key or value the user gave is wrong.

    The message should name the file/key/value and say what is wrong, e.g.
    `UserError("recipe.yaml: key 'partition.k' must be >= 1, received 0")`.
    """

    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True, file=file)
