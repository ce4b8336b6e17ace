"""Progress bars for long work (click's bar, on stderr so stdout stays machine-readable)."""

import sys

import click


def progress_bar(iterable=None, length=None, label=""):
    """Return a click progress bar over `iterable` (or a manual bar of `length` steps).

    Example:
        with progress_bar(range(10), label="Writing") as bar:
            for _ in bar: ...
    """
    return click.progressbar(
        iterable,
        length=length,
        label=label,
        file=sys.stderr,
        show_pos=True,
        show_eta=True,
        width=30,
    )
