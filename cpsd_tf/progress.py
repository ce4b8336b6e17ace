"""Progress bars for long work (click's bar, on stderr so stdout stays machine-readable).

On a terminal: click's live bar. Elsewhere (logs, pipes, CI) a bar would print its label with nothing
after it, and a failure's one-line error would follow a dangling label; there one line is printed when the
work ends, with its count and time.
"""

import sys
import time

import click


class _Quiet:
    """click.progressbar's interface off a terminal: one summary line at the end."""

    def __init__(self, iterable, length, label):
        self.iterable = iterable if iterable is not None else range(length or 0)
        self.length = length if length is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.label = label
        self.pos = 0
        self.start = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            total = f"/{self.length}" if self.length is not None else ""
            click.echo(f"{self.label} {self.pos}{total} done in {time.monotonic() - self.start:.1f} s", err=True)
        return False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.pos += 1

    def update(self, n_steps, current_item=None):
        self.pos += n_steps


def progress_bar(iterable=None, length=None, label=""):
    """Return a progress bar over `iterable` (or a manual bar of `length` steps); use it as click's.

    Example:
        with progress_bar(range(10), label="Writing") as bar:
            for _ in bar: ...
    """
    if not sys.stderr.isatty():
        return _Quiet(iterable, length, label)
    return click.progressbar(
        iterable,
        length=length,
        label=label,
        file=sys.stderr,
        show_pos=True,
        show_eta=True,
        width=30,
    )


