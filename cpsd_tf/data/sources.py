"""What every converter shares: parsed `Item`s, image checks, text helpers and writing splits.

The converters (`coco`, `nuswide`, `label_list`) first parse and check all the labels (any error names
the file and line or image id), then stream the image files into `records.write_split`. Image bytes are
stored as they are, without re-encoding. A bad image (missing, undecodable, not JPEG/PNG) is an error, or
is skipped and counted with `skip_invalid=True`; label errors are never skipped. Errors raised while
images stream happen inside the records iterator, so `write_split` removes its temporary files and the
output folder stays as it was.
"""

import dataclasses
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from cpsd_tf.data import records
from cpsd_tf.errors import UserError

# The TFRecord schema (DESIGN.md) promises JPEG or PNG bytes in `image/encoded`.
IMAGE_FORMATS = ("JPEG", "PNG")


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to convert, with its labels already resolved to class indices.

    Args:
        path: Path, the image file.
        image_id: str, stored as `image/id`.
        labels: list of int, class indices.
        where: str, where the image is listed (file and line or image id), used in error messages.
    """

    path: Path
    image_id: str
    labels: list
    where: str


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    """What a converter wrote for one split.

    Args:
        split: str, split name.
        count: int, images written.
        num_classes: int, number of classes.
        skipped: int, invalid images skipped (only with `skip_invalid`).
        first_skipped: str or None, the message of the first skipped image.
    """

    split: str
    count: int
    num_classes: int
    skipped: int = 0
    first_skipped: str | None = None


class InvalidImage(Exception):
    """An image file that is missing or cannot be decoded (what `--skip-invalid` may skip)."""


@dataclasses.dataclass
class _Skips:
    """Counts skipped images, or turns the first invalid image into a `UserError`."""

    allowed: bool
    count: int = 0
    first: str | None = None

    def handle(self, message):
        if not self.allowed:
            raise UserError(message)
        self.count += 1
        self.first = self.first or message


# === Images ===


def read_image(path) -> bytes:
    """Return the bytes of a JPEG or PNG file after checking that it decodes.

    The check decodes JPEGs at 1/8 scale (Pillow `draft`): the whole compressed stream is still read, so
    a truncated file is caught, at a fraction of the cost of a full decode.

    Args:
        path: str or Path, the image file.

    Raises:
        InvalidImage: the file is missing, unreadable, not an image, not JPEG/PNG or truncated.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidImage("no such file") from None
    except OSError as e:
        raise InvalidImage(f"cannot read ({e.strerror or e})") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in IMAGE_FORMATS:
                raise InvalidImage(f"is {img.format}, not JPEG or PNG")
            img.draft(None, (1, 1))
            img.load()
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        # Pillow's own message names the in-memory buffer, not the file.
        raise InvalidImage("not a decodable image (unknown format)") from None
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError...) for bad files.
        raise InvalidImage(f"not a decodable image ({e})") from None
    return data


def _records(items: Sequence[Item], skips: _Skips, split: str):
    """Yield a `records.Record` per valid image; invalid ones raise or are counted in `skips`."""
    for item in items:
        try:
            data = read_image(item.path)
        except InvalidImage as e:
            skips.handle(f"{item.where}: image {item.path}: {e}")
            continue
        yield records.Record(image=data, image_id=item.image_id, labels=item.labels)
    if items and skips.count == len(items):
        # Raised inside the iterator so write_split cleans up; says more than "split is empty".
        raise UserError(f"split '{split}': all {len(items)} images are invalid (first: {skips.first})")


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
            _check_files_exist(items)
        return [_write(out_dir, split, classes, items, skip_invalid)]
    return _write_together(out_dir, classes, splits, skip_invalid)


def _check_files_exist(items: Sequence[Item]):
    """Fail fast on the first missing image, before minutes of writing (a `stat` per image is cheap)."""
    for item in items:
        if not item.path.is_file():
            raise UserError(f"{item.where}: image {item.path}: no such file")


def _write(out_dir, split, classes, items, skip_invalid) -> SplitSummary:
    """Write one split from parsed items; see `records.write_split`."""
    skips = _Skips(allowed=skip_invalid)
    count = records.write_split(
        out_dir, split, classes, _records(items, skips, split), total=len(items), label=f"Writing {split}"
    )
    return SplitSummary(split, count, len(classes), skips.count, skips.first)


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
    _check_same_classes(out_dir, classes)
    if not skip_invalid:
        for items in splits.values():
            _check_files_exist(items)
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
        os.replace(staging / records.DATASET_JSON, meta)
        done = True
        return summaries
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not done:
            shutil.rmtree(out_dir, ignore_errors=True)  # like records.write_split: leave no empty folder
