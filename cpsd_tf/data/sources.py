"""What every converter shares: parsed `Item`s, image checks, text helpers and writing splits.

The converters (`coco`, `nuswide`, `label_list`) first parse and check all the labels (any error names
the file and line or image id), then stream the image files into `records.write_split`. Image bytes are
stored as they are, without re-encoding, after TensorFlow's own decoder (the one training uses) has
decoded them. A bad image (missing, undecodable or truncated, not JPEG/PNG) is an error naming it and how
many others are bad, or is skipped and counted with `skip_invalid=True`; label errors are never skipped.
Errors raised while images stream happen inside the records iterator, so `write_split` removes its
temporary files and the output folder stays as it was.
"""

import contextlib
import dataclasses
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from cpsd_tf.data import objects as objects_file
from cpsd_tf.data import records
from cpsd_tf.errors import UserError, tf_message

@dataclasses.dataclass(frozen=True)
class Item:
    """One image to convert, with its labels already resolved to class indices.

    Args:
        path: Path, the image file.
        image_id: str, stored as `image/id`.
        labels: list of int, class indices.
        where: str, where the image is listed (file and line or image id), used in error messages.
        objects: tuple of (class, top, left, bottom, right) or None, where the image's objects are
            (fractions of its height and width; `cpsd_tf.data.objects`), when the source has boxes.
            A split is written with an objects file when every item has them. Defaults to None.
    """

    path: Path
    image_id: str
    labels: list
    where: str
    objects: tuple | None = None


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    """What a converter wrote for one split.

    Args:
        split: str, split name.
        count: int, images written.
        num_classes: int, number of classes.
        skipped: int, invalid images skipped (only with `skip_invalid`).
        first_skipped: str or None, the message of the first skipped image.
        objects: bool, the split's objects file was written too (`cpsd_tf.data.objects`).
    """

    split: str
    count: int
    num_classes: int
    skipped: int = 0
    first_skipped: str | None = None
    objects: bool = False


@dataclasses.dataclass
class _Skips:
    """Counts invalid images and keeps the message of the first one.

    Args:
        allowed: bool, invalid images may be skipped (`--skip-invalid`); else they end in a `UserError`.
    """

    allowed: bool
    count: int = 0
    first: str | None = None

    def add(self, message):
        self.count += 1
        self.first = self.first or message


# === Images ===

# The image formats of the whole package: converters, `cpsd-tf predict` and the serving signature of
# `cpsd-tf export` take JPEG and PNG only, the formats the records hold and so the only ones training
# decodes (TensorFlow's `decode_image` would also take BMP, GIF and WebP).
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_jpeg_or_png(data: bytes) -> bool:
    """Whether `data` starts as a JPEG or a PNG file does (not whether it decodes)."""
    return data.startswith(JPEG_MAGIC) or data.startswith(PNG_SIGNATURE)


def jpeg_or_png(data):
    """`is_jpeg_or_png` in a graph: a scalar bool tensor for a scalar string tensor `data`."""
    import tensorflow as tf

    return tf.logical_or(tf.io.is_jpeg(data), tf.equal(tf.strings.substr(data, 0, 8), PNG_SIGNATURE))


def other_format(data: bytes):
    """The Pillow name of `data`'s format (e.g. "GIF") when it is an image that is not JPEG/PNG, else None."""
    from PIL import Image

    if is_jpeg_or_png(data):
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:  # Pillow raises many types for unknown data; the answer is the same.
        return None


def _decoded(items: Sequence[Item]):
    """Yield (item, bytes or None) for every item, in order: None when TensorFlow cannot use the image.

    Each file is read and decoded by the very decoder training uses (`preprocess.decode`), in a parallel
    tf.data map, so what converts also trains. Only JPEG and PNG pass (the record schema); TensorFlow's
    decoder would also take BMP, GIF and WebP. A failing element is dropped by `ignore_errors` and shows
    as a gap in the item numbers, which keeps the fast path free of per-image Python work.

    Args:
        items: list of `Item`, the images to read.
    """
    tf = records._tf()  # first, so TensorFlow loads quietly before `pipeline` imports it
    from cpsd_tf.data.preprocess import decode

    def load(i, path):
        data = tf.io.read_file(path)
        with tf.control_dependencies([tf.debugging.Assert(jpeg_or_png(data), ["not JPEG or PNG"])]):
            shape = tf.shape(decode(data))
        return i, data, shape

    paths = [os.fsencode(item.path) for item in items]
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(items), dtype=tf.int64), tf.constant(paths, tf.string)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    ds = ds.prefetch(tf.data.AUTOTUNE)
    expected = 0
    for i, data, _ in ds.as_numpy_iterator():
        for j in range(expected, i):
            yield items[j], None
        yield items[i], data
        expected = i + 1
    for j in range(expected, len(items)):
        yield items[j], None


def why_invalid(path) -> str:
    """Say why an image cannot be converted: missing, unreadable, not JPEG/PNG, or TensorFlow's decode error.

    Only called for the images the fast check rejected, so one eager decode each is cheap.

    Args:
        path: str or Path, the image file.
    """
    tf = records._tf()  # first, so TensorFlow loads quietly before `pipeline` imports it
    from cpsd_tf.data.preprocess import decode

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a folder, not an image file"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if not data:
        return "empty file"
    if not is_jpeg_or_png(data):
        other = other_format(data)
        return f"is {other}, not JPEG or PNG" if other else "not a decodable image (unknown format)"
    try:
        decode(tf.constant(data))
    except tf.errors.OpError as e:
        return f"not a decodable image ({tf_message(e)})"
    return "not a decodable image (TensorFlow's decoder failed on it during conversion)"


def _records(items: Sequence[Item], skips: _Skips, split: str, kept=None):
    """Yield a `records.Record` per image TensorFlow decodes; count the others in `skips`.

    Without `skips.allowed`, an invalid image ends the split with a `UserError` naming the first one and
    how many there are, after all images were checked (so one run lists the whole damage). It is raised
    inside the iterator, so `write_split` removes its temporary files.

    Args:
        items: list of `Item`, the split's images.
        skips: `_Skips`, counts the invalid images (and says whether they may be skipped).
        split: str, the split name, for messages.
        kept: list or None, receives each written item, in record order. Defaults to None.
    """
    for item, data in _decoded(items):
        if data is None:
            # Only the first one's reason is shown (an eager decode); the others are counted.
            skips.add(f"{item.where}: image {item.path}: {why_invalid(item.path)}" if skips.first is None else None)
            continue
        if kept is not None:
            kept.append(item)
        yield records.Record(image=data, image_id=item.image_id, labels=item.labels)
    if skips.count and not skips.allowed:
        if skips.count == 1:
            note = f"the only invalid image of split '{split}': --skip-invalid skips it"
        else:
            others = skips.count - 1
            note = (
                f"{others} other image{'s' if others != 1 else ''} of split '{split}' "
                f"{'are' if others != 1 else 'is'} invalid too: --skip-invalid skips them"
            )
        raise UserError(f"{skips.first} ({note})")
    if items and skips.count == len(items):
        # Says more than "split is empty".
        raise UserError(f"split '{split}': all {len(items)} images are invalid (first: {skips.first})")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Point file descriptor 2 at /dev/null while images decode; Python's `sys.stderr` keeps the terminal.

    libjpeg and TensorFlow's C++ logging print lines such as "Premature end of JPEG data" and "Improper
    call to JPEG library in state 201" for every bad JPEG, straight to descriptor 2 and whatever
    TF_CPP_MIN_LOG_LEVEL says; they would bury the one-line error or warning. Python writes (the progress
    bar, messages) go to a duplicate of the real descriptor meanwhile. `CPSD_TF_VERBOSE_TF=1` keeps them.
    """
    if os.environ.get("CPSD_TF_VERBOSE_TF") == "1":
        yield
        return
    try:
        python_uses_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a test runner or a wrapper: not fd 2
        python_uses_fd2 = False
    sys.stderr.flush()
    saved = os.dup(2)
    old_stderr = sys.stderr
    if python_uses_fd2:
        sys.stderr = open(
            saved, "w", buffering=1, encoding=old_stderr.encoding, errors=old_stderr.errors, closefd=False
        )
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        if python_uses_fd2:
            sys.stderr.flush()
            sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)


# === Small text helpers ===


def read_text(path, what) -> str:
    """Read a UTF-8 text file (a BOM, as Excel writes, is ignored); a missing file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file ({what})")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def text_lines(text) -> list:
    """The stripped lines of `text`, without the trailing blank ones (files often end with newlines)."""
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_class_names(path, what="class names, one per line") -> list:
    """Read class names, one per line, in order; blank, duplicate or no names are a `UserError`.

    Args:
        path: str or Path, the text file.
        what: str, what the file is, for the "no such file" message. Defaults to "class names, one per line".
    """
    names = text_lines(read_text(path, what))
    seen = {}
    for lineno, name in enumerate(names, 1):
        if not name:
            raise UserError(f"{path}: line {lineno}: empty class name")
        if name in seen:
            raise UserError(f"{path}: line {lineno}: class '{name}' already on line {seen[name]}")
        seen[name] = lineno
    if not names:
        raise UserError(f"{path}: no class names")
    return names


# === Writing splits ===


def write_splits(out_dir, classes, splits, skip_invalid=False) -> list:
    """Write parsed splits into `out_dir`, all of them or none; return a `SplitSummary` per split.

    Missing images are caught first (a `stat` per image), before minutes of writing. One split goes
    straight through `records.write_split`, which is atomic on its own; several are staged together so
    that a failure in the last one leaves none of them behind.

    Args:
        out_dir: str or Path, the data folder.
        classes: list of str, class names.
        splits: dict of split name -> list of `Item`, in the order to write.
        skip_invalid: bool, skip missing/undecodable images instead of failing. Defaults to False.

    Example:
        write_splits("data/mine", ["cat", "dog"], {"train": items}, skip_invalid=True)
    """
    if len(splits) == 1:
        [(split, items)] = splits.items()
        if not skip_invalid:
            _check_files_exist(items, split)
        return [_write(out_dir, split, classes, items, skip_invalid)]
    return _write_together(out_dir, classes, splits, skip_invalid)


def _check_files_exist(items: Sequence[Item], split):
    """Fail fast on missing images, before minutes of decoding (a `stat` per image is cheap)."""
    missing = [item for item in items if not item.path.is_file()]
    if missing:
        first = missing[0]
        more = len(missing) - 1
        note = f" ({more} other image{'s' if more != 1 else ''} of split '{split}' missing too)" if more else ""
        raise UserError(f"{first.where}: image {first.path}: no such file{note}")


def _write(out_dir, split, classes, items, skip_invalid) -> SplitSummary:
    """Write one split from parsed items (see `records.write_split`), with its objects file when every item
    has boxes; a split without boxes loses the objects file of the split it replaces."""
    skips = _Skips(allowed=skip_invalid)
    kept = []
    with _native_stderr_silenced():
        count = records.write_split(
            out_dir, split, classes, _records(items, skips, split, kept), total=len(items), label=f"Writing {split}"
        )
    with_objects = bool(kept) and all(item.objects is not None for item in kept)
    if with_objects:
        objects_file.write(out_dir, split, [item.objects for item in kept])
    else:
        objects_file.remove(out_dir, split)
    return SplitSummary(split, count, len(classes), skips.count, skips.first, with_objects)


def _check_same_classes(out_dir, classes):
    """A folder that already holds a dataset only takes splits with the same class list."""
    meta = Path(out_dir) / records.DATASET_JSON
    if meta.exists():
        old = records.load_info(out_dir).classes
        if old != list(classes):
            raise UserError(
                f"{meta}: holds a dataset with {len(old)} other classes ({old[:3]}...); these splits have "
                f"{len(classes)} classes ({list(classes)[:3]}...): use another --out"
            )


def _write_together(out_dir, classes, splits, skip_invalid) -> list:
    """Write several splits so that either all of them appear in `out_dir` or none does.

    They are written into a hidden staging folder inside `out_dir` (same file system, so moving is a
    rename), seeded with the existing `dataset.json` so its other splits are kept, then moved into place.
    """
    out_dir = Path(out_dir)
    records.check_output_folder(out_dir)
    _check_same_classes(out_dir, classes)
    if not skip_invalid:
        for split, items in splits.items():
            _check_files_exist(items, split)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = out_dir / records.DATASET_JSON
    staging = Path(tempfile.mkdtemp(prefix=".tmp-splits-", dir=out_dir))
    done = False
    try:
        if meta.exists():
            shutil.copyfile(meta, staging / records.DATASET_JSON)
        summaries = [_write(staging, split, classes, items, skip_invalid) for split, items in splits.items()]
        for split in splits:
            for old in out_dir.glob(f"{split}-*-of-*.tfrecord"):
                old.unlink()
            for shard in staging.glob(f"{split}-*-of-*.tfrecord"):
                os.replace(shard, out_dir / shard.name)
            staged = objects_file.path(staging, split)
            if staged.is_file():
                os.replace(staged, objects_file.path(out_dir, split))
            else:
                objects_file.remove(out_dir, split)
        os.replace(staging / records.DATASET_JSON, meta)
        done = True
        return summaries
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not done:
            shutil.rmtree(out_dir, ignore_errors=True)  # like records.write_split: leave no empty folder
