"""A CSV (`path,labels`) or JSONL list of images and labels -> one split (or it and a held-out one).

A JSONL line may also say where the image's objects are, for mixed views labelled by object:
`{"path": "a.jpg", "labels": ["cat"], "objects": [{"label": "cat", "box": [top, left, bottom, right]}]}`,
the box as fractions of the image's height and width. Then every line gives them, and each line's labels
are its objects' classes (`cpsd_tf.data.objects`).
"""

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
        yield reader.line_num, row[0].strip(), names, None


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
        objects = obj.get("objects")
        if objects is not None:
            objects = [_object(o, path, lineno) for o in (objects if isinstance(objects, list) else [None])]
        yield lineno, obj["path"].strip(), obj["labels"], objects


def _object(entry, path, lineno):
    """(label, top, left, bottom, right) of one entry of a JSONL line's "objects"."""
    box = entry.get("box") if isinstance(entry, dict) else None
    label = entry.get("label") if isinstance(entry, dict) else None
    if (isinstance(label, bool) or not isinstance(label, (str, int)) or not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise UserError(f"{path}: line {lineno}: each of \"objects\" must be {{\"label\": name, \"box\": [top, left, "
                        f"bottom, right]}}, received {json.dumps(entry)}")
    top, left, bottom, right = (float(v) for v in box)
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
        raise UserError(f"{path}: line {lineno}: box {json.dumps(box)} of '{label}' must be [top, left, bottom, right] "
                        f"as fractions of the image's height and width, 0 <= top < bottom <= 1, 0 <= left < right <= 1")
    return label, top, left, bottom, right


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
        named = [label for _, _, labels, objects in rows for label in [*labels, *(o[0] for o in objects or ())]]
        classes = sorted({label.strip() for label in named if isinstance(label, str)})
    index_of = {name: i for i, name in enumerate(classes)}
    with_objects = [lineno for lineno, _, _, objects in rows if objects is not None]
    if with_objects and len(with_objects) < len(rows):
        bare = next(lineno for lineno, _, _, objects in rows if objects is None)
        raise UserError(f"{path}: line {bare}: no \"objects\", but line {with_objects[0]} has them: give the objects "
                        f"of every image or of none")
    items = []
    first_of = {}  # normalised image path -> (line number, sorted class indices) of its first listing
    for lineno, image, labels, objects in rows:
        if not image:
            raise UserError(f"{path}: line {lineno}: empty image path")
        indices = sorted({_resolve_label(x, classes, index_of, path, lineno, classes_file) for x in labels})
        if objects is not None:
            objects = tuple((_resolve_label(o[0], classes, index_of, path, lineno, classes_file), *o[1:])
                            for o in objects)
            boxed = sorted({o[0] for o in objects})
            if boxed != indices:
                raise UserError(f"{path}: line {lineno}: labels {_names(indices, classes)} but objects of "
                                f"{_names(boxed, classes)}: every label needs a box and every box a label")
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
        items.append(sources.Item(Path(images_dir) / image, image, indices, f"{path}: line {lineno}", objects))
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
        labels_file: str or Path, the CSV (`path,labels`) or JSONL (`{"path": ..., "labels": [...]}`, optionally
            with `"objects"`: see the module docstring) file.
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
