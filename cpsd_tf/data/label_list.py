"""A CSV (`path,labels`) or JSONL list of images and labels -> one split (or it and a held-out one)."""

import csv
import io
import json
import posixpath
from pathlib import Path

from cpsd_tf.data import sources
from cpsd_tf.errors import UserError


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


def _names(indices, classes) -> str:
    """A label set for messages: `[cat; dog]`, `[]` when empty."""
    return "[" + "; ".join(classes[i] for i in indices) + "]"


def parse_label_list(labels_file, images_dir, classes_file=None):
    """Parse a CSV (`path,labels`, labels ';'-separated) or JSONL list into (classes, items).

    Labels are class names. With `classes_file` the class order is fixed and a name not in it is an
    error; without it, classes are the sorted set of names found. In JSONL, a label may also be an int:
    an index into `classes_file`. The file type comes from the extension (`.jsonl` or else CSV).
    An image listed twice (same path after normalisation, e.g. `a.jpg` and `./a.jpg`) with the same label
    set is kept once, at its first line; with different label sets it is a `UserError` naming both.

    Args:
        labels_file: str or Path, the CSV or JSONL file.
        images_dir: str or Path, the folder the image paths are relative to.
        classes_file: str, Path or None, one class name per line. Defaults to None.
    """
    path = Path(labels_file)
    text = sources.read_text(path, "image list with labels")
    rows = list(_jsonl_rows(path, text) if path.suffix.lower() == ".jsonl" else _csv_rows(path, text))
    if not rows:
        raise UserError(f"{path}: no images listed")
    if classes_file is not None:
        classes = sources.read_class_names(classes_file)
    else:
        classes = sorted({label.strip() for _, _, labels in rows for label in labels if isinstance(label, str)})
    index_of = {name: i for i, name in enumerate(classes)}
    items = []
    first_of = {}  # normalised image path -> (line number, sorted class indices) of its first listing
    for lineno, image, labels in rows:
        if not image:
            raise UserError(f"{path}: line {lineno}: empty image path")
        indices = sorted({_resolve_label(x, classes, index_of, path, lineno, classes_file) for x in labels})
        # "a.jpg" and "./a.jpg" are one image: a second record of it would weigh it twice in training.
        key = posixpath.normpath(image.replace("\\", "/"))
        if key in first_of:
            first_line, first_indices = first_of[key]
            if first_indices != indices:
                raise UserError(
                    f"{path}: line {lineno}: image '{image}' has labels {_names(indices, classes)}, but line "
                    f"{first_line} gives it {_names(first_indices, classes)}: list each image once"
                )
            continue  # an identical duplicate (e.g. concatenated lists): merged into the first
        first_of[key] = (lineno, indices)
        items.append(sources.Item(Path(images_dir) / image, image, indices, f"{path}: line {lineno}"))
    if not classes:
        raise UserError(f"{path}: no labels at all (give --classes to fix the class list)")
    return classes, items


def convert_label_list(
    labels_file, images_dir, split, out_dir, *, classes_file=None, skip_invalid=False, holdout=None
) -> list:
    """Convert a CSV/JSONL image list into split `split` of `out_dir`; see `parse_label_list`.

    With `holdout`, its images are drawn from the list and written as split `holdout.split` together
    with the rest as `split` (both or none).

    Args:
        labels_file: str or Path, the CSV (`path,labels`) or JSONL (`{"path": ..., "labels": [...]}`) file.
        images_dir: str or Path, the folder the image paths are relative to.
        split: str, the split name to write.
        out_dir: str or Path, the data folder.
        classes_file: str, Path or None, one class name per line, fixing the class order. Defaults to None.
        skip_invalid: bool, skip missing/undecodable images instead of failing. Defaults to False.
        holdout: `holdout.Holdout` or None, a model-selection split to hold out. Defaults to None.

    Returns:
        A list of `sources.SplitSummary`: `split`, then the held-out split if any.

    Example:
        convert_label_list("train.csv", "images", "train", "data/mine", classes_file="classes.txt")
    """
    if holdout is not None:
        holdout.check([split], f"--split '{split}'")
    classes, items = parse_label_list(labels_file, images_dir, classes_file)
    splits = {split: items}
    if holdout is not None:
        splits[split], splits[holdout.split] = holdout.split_items(items, split, labels_file)
    return sources.write_splits(out_dir, classes, splits, skip_invalid)
