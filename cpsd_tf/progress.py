"""Progress bars for long work (click's bar, on stderr so stdout stays machine-readable).

On a terminal: click's live bar. Elsewhere (logs, pipes, CI, `CliRunner`) a bar would print its label with
nothing after it, and a failure's one-line error would follow a dangling label; there a few plain lines
are printed instead, never redrawn: the count at 25, 50 and 75 % of the work (of a known length; without
one, the count every `_Quiet.INTERVAL` seconds), then one line when the work ends, with its count and time:

    Generating train    250/1000 (25%) after 1.4 s
    Generating train    500/1000 (50%) after 2.9 s
    Generating train    750/1000 (75%) after 4.3 s
    Generating train    1000/1000 done in 5.8 s
"""

import sys
import time

import click


class _Quiet:
    """click.progressbar's interface off a terminal: count lines at 25/50/75 %, one summary line at the end."""

    MILESTONES = (25, 50, 75)  # percent of a known length
    INTERVAL = 30.0  # seconds between count lines when the length is unknown

    def __init__(self, iterable, length, label):
        self.iterable = iterable if iterable is not None else range(length or 0)
        self.length = length if length is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.label = label
        self.pos = 0
        self.start = time.monotonic()
        self._next = 0  # index into MILESTONES of the next line (known length)
        self._next_time = self.start + self.INTERVAL  # time of the next line (unknown length)

    def _advance(self, n_steps):
        """Move on `n_steps`; print a count line when a milestone (or, without a length, the interval) passes."""
        self.pos += n_steps
        now = time.monotonic()
        if self.length:
            reached = [m for m in self.MILESTONES[self._next:] if self.pos * 100 >= m * self.length]
            self._next += len(reached)
            if reached and self.pos < self.length:  # the end gets the summary line instead
                click.echo(f"{self.label} {self.pos}/{self.length} ({self.pos * 100 // self.length}%) "
                           f"after {now - self.start:.1f} s", err=True)
        elif self.length is None and now >= self._next_time:
            self._next_time = now + self.INTERVAL
            click.echo(f"{self.label} {self.pos} so far, after {now - self.start:.1f} s", err=True)

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
            self._advance(1)

    def update(self, n_steps, current_item=None):
        self._advance(n_steps)


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


