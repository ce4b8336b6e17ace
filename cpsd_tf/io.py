"""Atomic file output: a stage's artefact appears only when it is complete."""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp", replace_ours=False):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories. A directory at `path` is replaced only when it is empty, or when
    the caller owns it (`replace_ours=True`, e.g. a data set cpsd-tf generated): anything else is refused,
    so a user's folder is never deleted. On failure only the temporary path is removed. `suffix` ends the
    temporary name, for writers that insist on an extension (Keras: ".keras", ".weights.h5").

    Example:
        with atomic_path("out/partition.json") as tmp:
            tmp.write_text("{}")
    """
    from cpsd_tf.errors import UserError

    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not replace_ours:
        raise UserError(f"{path}: a non-empty folder is in the way; cpsd-tf replaces only what it wrote")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(path, old)  # out of the way first, so the new folder lands whole
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path, obj, indent=2):
    """Write `obj` as JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent) + "\n")


def write_text(path, text):
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path, what, required=()):
    """Read a JSON object; a missing file, bad JSON or a missing required key is a `UserError`.

    Args:
        path: str or Path.
        what: str, what the file is, for messages ("label-statistics file").
        required: keys the object must have. Defaults to ().
    """
    from cpsd_tf.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {what}")
    try:
        obj = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    for key in required:
        if not isinstance(obj, dict) or key not in obj:
            raise UserError(f"{path}: missing key '{key}' (a {what} has {', '.join(required)})")
    return obj
