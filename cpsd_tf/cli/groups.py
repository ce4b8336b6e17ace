"""The click group class of `cpsd-tf` and `cpsd-tf data`: command lists that are never cut with "...".

click shortens a command's first sentence to the room left on one line (about 60 characters on an
80-column terminal) and ends it with "..."; here the whole first sentence is listed, wrapped when it is
longer. Keep first sentences short anyway: one line each reads best.
"""

import sys

import click


class Group(click.Group):
    """A `click.Group` listing each command with its whole first sentence (or `short_help`)."""

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
