"""Converters from public data set layouts to TFRecord shards: COCO-2014, NUS-WIDE and CSV/JSONL lists.

Each converter first parses and checks all the labels (any error names the file and line or image id),
then streams the image files into `records.write_split`. Image bytes are stored as they are, without
re-encoding. A bad image (missing, undecodable, not JPEG/PNG) is an error, or is skipped and counted with
`skip_invalid=True`; label errors are never skipped. Errors raised while images stream happen inside the
records iterator, so `write_split` removes its temporary files and the output folder stays as it was.
"""

import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from cpsd_tf.data import records
from cpsd_tf.errors import UserError

# The TFRecord schema (DESIGN.md) promises JPEG or PNG bytes in `image/encoded`.
IMAGE_FORMATS = ("JPEG", "PNG")
NUSWIDE_SPLITS = {"train": "Train", "test": "Test"}


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


# === Small text helpers ===


def _read_text(path, what) -> str:
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


def _lines(text) -> list:
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
    names = _lines(_read_text(path, what))
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


# === COCO ===


def _load_json(path, what):
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _coco_list(data, key, fields, path):
    """The list `data[key]` whose entries are objects holding `fields`; anything else is a `UserError`."""
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a COCO instances file with a '{key}' list")
    for i, entry in enumerate(entries):
        missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise UserError(f"{path}: {key}[{i}] has no '{missing[0]}'")
    return entries


def parse_coco(annotations, images_dir, keep_empty=False):
    """Parse a COCO-2014 instances file into (classes, items).

    Classes are the category names sorted alphabetically (the convention of the official CPSD/ML-GCN
    code), not COCO's category-id order. Items keep the order of the file's `images` list.

    Args:
        annotations: str or Path, `instances_<split>2014.json`.
        images_dir: str or Path, the folder holding the `file_name` of every image.
        keep_empty: bool, keep images without any annotation (empty labels). Defaults to False, as the
            official code drops them.
    """
    path = Path(annotations)
    data = _load_json(path, "COCO instances annotations")
    images = _coco_list(data, "images", ("id", "file_name"), path)
    anns = _coco_list(data, "annotations", ("image_id", "category_id"), path)
    cats = _coco_list(data, "categories", ("id", "name"), path)

    names = sorted({str(c["name"]) for c in cats})
    if len(names) != len(cats) or len({c["id"] for c in cats}) != len(cats):
        raise UserError(f"{path}: 'categories' has duplicate ids or names")
    class_of_cat = {c["id"]: names.index(str(c["name"])) for c in cats}
    labels_of = {img["id"]: set() for img in images}
    for i, ann in enumerate(anns):
        if ann["image_id"] not in labels_of:
            raise UserError(f"{path}: annotations[{i}]: image_id {ann['image_id']} is not in 'images'")
        if ann["category_id"] not in class_of_cat:
            raise UserError(f"{path}: annotations[{i}]: category_id {ann['category_id']} is not in 'categories'")
        labels_of[ann["image_id"]].add(class_of_cat[ann["category_id"]])

    items = [
        Item(
            path=Path(images_dir) / str(img["file_name"]),
            image_id=str(img["file_name"]),
            labels=sorted(labels_of[img["id"]]),
            where=f"{path}: image id {img['id']}",
        )
        for img in images
        if keep_empty or labels_of[img["id"]]
    ]
    if not items:
        hint = "" if keep_empty or not images else " (all images are unannotated; use --keep-empty to keep them)"
        raise UserError(f"{path}: no image to convert{hint}")
    return names, items


def convert_coco(annotations, images_dir, split, out_dir, *, keep_empty=False, skip_invalid=False) -> SplitSummary:
    """Convert COCO-2014 instances annotations and their images into split `split` of `out_dir`.

    Args:
        annotations: str or Path, `instances_<split>2014.json`.
        images_dir: str or Path, the split's image folder.
        split: str, the split name to write.
        out_dir: str or Path, the data folder.
        keep_empty: bool, keep unannotated images with empty labels. Defaults to False.
        skip_invalid: bool, skip missing/undecodable images instead of failing. Defaults to False.

    Example:
        convert_coco("annotations/instances_val2014.json", "val2014", "val", "data/coco")
    """
    classes, items = parse_coco(annotations, images_dir, keep_empty)
    if not skip_invalid:
        _check_files_exist(items)
    return _write(out_dir, split, classes, items, skip_invalid)


# === NUS-WIDE ===


def _nuswide_paths(root):
    """The files of the official NUS-WIDE layout; the first one missing is a `UserError`."""
    root = Path(root)
    layout = "expected the official layout: Concepts81.txt, ImageList/, TrainTestLabels/, Flickr/"
    concepts = root / "Concepts81.txt"
    if not concepts.is_file():
        raise UserError(f"{root}: missing Concepts81.txt ({layout})")
    lists = {s: root / "ImageList" / f"{tag}Imagelist.txt" for s, tag in NUSWIDE_SPLITS.items()}
    for p in lists.values():
        if not p.is_file():
            raise UserError(f"{root}: missing {p.relative_to(root)} ({layout})")
    if not (root / "Flickr").is_dir():
        raise UserError(f"{root}: missing the image folder Flickr/ ({layout})")
    labels_dir = root / "TrainTestLabels"
    if not labels_dir.is_dir() and (root / "Groundtruth" / "TrainTestLabels").is_dir():
        labels_dir = root / "Groundtruth" / "TrainTestLabels"  # where the official Groundtruth.zip unpacks
    return concepts, lists, labels_dir


def _nuswide_image_list(list_path, split):
    """(relative image paths with '/', where-strings) of an image list, whose paths use '\\'."""
    rel_paths = _lines(_read_text(list_path, "NUS-WIDE image list"))
    for lineno, rel in enumerate(rel_paths, 1):
        if not rel:
            raise UserError(f"{list_path}: line {lineno}: empty image path")
    if not rel_paths:
        raise UserError(f"{list_path}: no images listed for split '{split}'")
    return [rel.replace("\\", "/") for rel in rel_paths]


def _nuswide_label_column(path, n_images, list_path) -> list:
    """The 0/1 values of one `Labels_<concept>_<Train|Test>.txt` file, checked against the image list."""
    values = _lines(_read_text(path, "NUS-WIDE label file"))
    if len(values) != n_images:
        raise UserError(f"{path}: {len(values)} lines, but {list_path} lists {n_images} images")
    for lineno, value in enumerate(values, 1):
        if value not in ("0", "1"):
            raise UserError(f"{path}: line {lineno}: expected 0 or 1, found '{value}'")
    return values


def parse_nuswide(root):
    """Parse the official NUS-WIDE layout into (classes, {"train": items, "test": items}).

    Every label file of both splits is read and checked here, before any image is written.

    Args:
        root: str or Path, the folder holding Concepts81.txt, ImageList/, TrainTestLabels/ (or
            Groundtruth/TrainTestLabels/) and Flickr/.
    """
    root = Path(root)
    concepts, lists, labels_dir = _nuswide_paths(root)
    classes = read_class_names(concepts, "NUS-WIDE concept names")
    splits = {}
    for split, tag in NUSWIDE_SPLITS.items():
        rel_paths = _nuswide_image_list(lists[split], split)
        labels = [[] for _ in rel_paths]
        for c, concept in enumerate(classes):
            label_path = labels_dir / f"Labels_{concept}_{tag}.txt"
            for i, value in enumerate(_nuswide_label_column(label_path, len(rel_paths), lists[split])):
                if value == "1":
                    labels[i].append(c)
        splits[split] = [
            Item(root / "Flickr" / rel, rel, labels[i], f"{lists[split]}: line {i + 1}")
            for i, rel in enumerate(rel_paths)
        ]
    return classes, splits


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


def _write_splits_together(out_dir, classes, splits, skip_invalid) -> list:
    """Write several splits so that either all of them appear in `out_dir` or none does.

    They are written into a hidden staging folder inside `out_dir` (same file system, so moving is a
    rename), seeded with the existing `dataset.json` so its other splits are kept, then moved into place.
    """
    out_dir = Path(out_dir)
    _check_same_classes(out_dir, classes)
    if not skip_invalid:
        for items in splits.values():
            _check_files_exist(items)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = out_dir / records.DATASET_JSON
    staging = Path(tempfile.mkdtemp(prefix=".tmp-splits-", dir=out_dir))
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
        return summaries
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def convert_nuswide(root, out_dir, *, skip_invalid=False) -> list:
    """Convert the official NUS-WIDE layout into splits `train` and `test` of `out_dir` (both or none).

    Classes follow the order of Concepts81.txt. Image ids are the image-list paths with '/' separators
    (`actor/0001_2124494179.jpg`). Images without any of the 81 concepts are kept with empty labels.

    Args:
        root: str or Path, the NUS-WIDE folder (Concepts81.txt, ImageList/, TrainTestLabels/, Flickr/).
        out_dir: str or Path, the data folder.
        skip_invalid: bool, skip missing/undecodable images instead of failing. Defaults to False.

    Returns:
        A list of `SplitSummary`, train then test.

    Example:
        convert_nuswide("NUS-WIDE", "data/nuswide")
    """
    classes, splits = parse_nuswide(root)
    return _write_splits_together(out_dir, classes, splits, skip_invalid)


# === CSV / JSONL lists ===


def _csv_rows(path, text):
    """Yield (line number, image path, label names) of a `path,labels` CSV; labels are ';'-separated."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path}: empty file (expected a header 'path,labels')") from None
    except csv.Error as e:
        raise UserError(f"{path}: line 1: malformed CSV ({e})") from None
    if header != ["path", "labels"]:
        raise UserError(f"{path}: line 1: header must be 'path,labels', found '{','.join(header)}'")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UserError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
        if not row:  # csv gives [] for a blank line
            continue
        if len(row) != 2:
            raise UserError(f"{path}: line {reader.line_num}: expected 2 fields (path,labels), found {len(row)}")
        names = [name.strip() for name in row[1].split(";") if name.strip()]
        yield reader.line_num, row[0].strip(), names


def _jsonl_rows(path, text):
    """Yield (line number, image path, labels) of a JSONL file; labels are class names or int indices."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}: line {lineno}: not valid JSON ({e})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str) or not isinstance(obj.get("labels"), list):
            raise UserError(f"{path}: line {lineno}: expected {{\"path\": str, \"labels\": [...]}}")
        for label in obj["labels"]:
            # bool is an int subclass: `true` is not a class index.
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise UserError(f"{path}: line {lineno}: label {json.dumps(label)} is neither a class name nor an index")
        yield lineno, obj["path"].strip(), obj["labels"]


def _resolve_label(label, classes, index_of, path, lineno, classes_file):
    """The class index of one label (a name, or an int index into --classes)."""
    if isinstance(label, int):
        if classes_file is None:
            raise UserError(f"{path}: line {lineno}: integer label {label} needs --classes to index into")
        if not 0 <= label < len(classes):
            raise UserError(
                f"{path}: line {lineno}: label index {label} out of range 0..{len(classes) - 1} ({classes_file})"
            )
        return label
    name = label.strip()
    if name not in index_of:
        raise UserError(f"{path}: line {lineno}: unknown class '{name}' (not in {classes_file})")
    return index_of[name]


def parse_label_list(labels_file, images_dir, classes_file=None):
    """Parse a CSV (`path,labels`, labels ';'-separated) or JSONL list into (classes, items).

    Labels are class names. With `classes_file` the class order is fixed and a name not in it is an
    error; without it, classes are the sorted set of names found. In JSONL, a label may also be an int:
    an index into `classes_file`. The file type comes from the extension (`.jsonl` or else CSV).

    Args:
        labels_file: str or Path, the CSV or JSONL file.
        images_dir: str or Path, the folder the image paths are relative to.
        classes_file: str, Path or None, one class name per line. Defaults to None.
    """
    path = Path(labels_file)
    text = _read_text(path, "image list with labels")
    rows = list(_jsonl_rows(path, text) if path.suffix.lower() == ".jsonl" else _csv_rows(path, text))
    if not rows:
        raise UserError(f"{path}: no images listed")
    if classes_file is not None:
        classes = read_class_names(classes_file)
    else:
        classes = sorted({label.strip() for _, _, labels in rows for label in labels if isinstance(label, str)})
    index_of = {name: i for i, name in enumerate(classes)}
    items = []
    for lineno, image, labels in rows:
        if not image:
            raise UserError(f"{path}: line {lineno}: empty image path")
        indices = [_resolve_label(x, classes, index_of, path, lineno, classes_file) for x in labels]
        items.append(Item(Path(images_dir) / image, image, sorted(set(indices)), f"{path}: line {lineno}"))
    if not classes:
        raise UserError(f"{path}: no labels at all (give --classes to fix the class list)")
    return classes, items


def convert_label_list(labels_file, images_dir, split, out_dir, *, classes_file=None, skip_invalid=False) -> SplitSummary:
    """Convert a CSV/JSONL image list into split `split` of `out_dir`; see `parse_label_list`.

    Args:
        labels_file: str or Path, the CSV (`path,labels`) or JSONL (`{"path": ..., "labels": [...]}`) file.
        images_dir: str or Path, the folder the image paths are relative to.
        split: str, the split name to write.
        out_dir: str or Path, the data folder.
        classes_file: str, Path or None, one class name per line, fixing the class order. Defaults to None.
        skip_invalid: bool, skip missing/undecodable images instead of failing. Defaults to False.

    Example:
        convert_label_list("train.csv", "images", "train", "data/mine", classes_file="classes.txt")
    """
    classes, items = parse_label_list(labels_file, images_dir, classes_file)
    if not skip_invalid:
        _check_files_exist(items)
    return _write(out_dir, split, classes, items, skip_invalid)
