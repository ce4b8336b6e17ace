"""Faults of the environment turned into one-line `UserError`s: disk full, permissions, a read-only file
system, corrupt or truncated TFRecord shards (located with `records.locate_corruption`).

Used by the command line only; TensorFlow is never imported here (its errors can only exist once it is).
"""

import errno
import io as _io
import os
import sys

import click

from cpsd_tf.data import records
from cpsd_tf.errors import UserError, tf_message


def _tf_errors():
    """`tf.errors` if TensorFlow is already imported, else None (a TF error needs TF loaded; never import it)."""
    tf = sys.modules.get("tensorflow")
    return getattr(tf, "errors", None) if tf is not None else None


def _written_file(exc):
    """The file an `OSError` was about: its `filename`, else an open file found in the failing frames.

    `file.write()` raising ENOSPC carries no file name, so the traceback's frames are searched,
    innermost first, for a file object open for writing (pathlib's `write_text`, `json.dump(obj, f)`).
    """
    name = getattr(exc, "filename", None)
    if name is not None:
        return os.fsdecode(name) if isinstance(name, (bytes, str, os.PathLike)) else str(name)
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, _io.IOBase) and isinstance(getattr(value, "name", None), str):
                mode = getattr(value, "mode", "")
                if any(c in mode for c in "wax+"):
                    return value.name
    return None


def _os_fault(exc):
    """A `UserError` for a disk-full, permission or read-only-file-system `OSError`, else None."""
    text = str(exc)
    code = exc.errno
    name = _written_file(exc)
    where = name if name is not None else "a file (name unknown)"
    # h5py (Keras weights) reports ENOSPC as an OSError without errno, in its message only.
    if code == errno.ENOSPC or "No space left on device" in text or "errno = 28" in text:
        return UserError(f"disk full while writing {where}: free space and rerun (finished stages are kept)")
    if code == errno.EROFS or "Read-only file system" in text:
        return UserError(f"{where}: read-only file system, cannot write there: choose another output path")
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return UserError(f"{where}: permission denied: fix its permissions (or its folder's) or use another path")
    return None


def _tf_fault(exc, tf_errors):
    """A `UserError` for a TensorFlow data-loss, disk-full or permission error, else None."""
    if isinstance(exc, tf_errors.DataLossError):
        try:
            found = records.locate_corruption()
        except Exception:  # naming the shard is a courtesy: never let it hide the data-loss error
            found = None
        if found is not None:
            shard, record_no, detail = found
            return UserError(
                f"{shard}: corrupt or truncated TFRecord shard: record {record_no} (counting from 0) cannot be "
                f"read ({detail}): convert the data again"
            )
        return UserError(f"corrupt or truncated file: {tf_message(exc)}")
    text = tf_message(exc)
    if "No space left on device" in text:
        return UserError(f"disk full while writing ({text}): free space and rerun (finished stages are kept)")
    if isinstance(exc, tf_errors.PermissionDeniedError) or "Read-only file system" in text:
        return UserError(f"cannot write: {text}: fix the permissions or choose another output path")
    return None


def fault_to_user_error(exc):
    """Return a `UserError` for a fault the user fixes outside the code, or None for a real bug.

    Faults: an `OSError` for a full disk (ENOSPC), a permission error or a read-only file system
    (EROFS); a TensorFlow `DataLossError` (a corrupt or truncated TFRecord shard, located with
    `records.locate_corruption`); TensorFlow's own disk-full and permission errors. The exception's
    explicit `__cause__` chain is searched too (`raise X from fault`); an implicit `__context__` is
    not, as an error raised while handling a fault may well be a bug.

    Args:
        exc: BaseException, the exception a command raised.

    Example:
        err = fault_to_user_error(OSError(errno.ENOSPC, "No space left on device", "run/a.json"))
        # err.message == "disk full while writing run/a.json: free space and rerun (finished stages are kept)"
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, click.ClickException):
            return None
        tf_errors = _tf_errors()
        if tf_errors is not None and isinstance(exc, tf_errors.OpError):
            err = _tf_fault(exc, tf_errors)
        elif isinstance(exc, OSError):
            err = _os_fault(exc)
        else:
            err = None
        if err is not None:
            return err
        exc = exc.__cause__
    return None
