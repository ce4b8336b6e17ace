"""COCO-2014 instances annotations + image folder -> one split (or the split and a held-out one)."""

import json
import math
from pathlib import Path

from cpsd_tf.data import sources
from cpsd_tf.errors import UserError


def _load_json(path, what):
    text = sources.read_text(path, what)
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
    code), not COCO's category-id order. Items keep the order of the file's `images` list. When every
    annotation has a `bbox` and every image its `width` and `height` (as in COCO's own files), each item
    also carries where its objects are (`Item.objects`, for mixed views labelled by object).

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
    objects_of = _objects(images, anns, class_of_cat, path)

    items = [
        sources.Item(
            path=Path(images_dir) / str(img["file_name"]),
            image_id=str(img["file_name"]),
            labels=sorted(labels_of[img["id"]]),
            where=f"{path}: image id {img['id']}",
            objects=None if objects_of is None else tuple(objects_of[img["id"]]),
        )
        for img in images
        if keep_empty or labels_of[img["id"]]
    ]
    if not items:
        hint = "" if keep_empty or not images else " (all images are unannotated; use --keep-empty to keep them)"
        raise UserError(f"{path}: no image to convert{hint}")
    return names, items


def _objects(images, anns, class_of_cat, path):
    """{image id: [(class, top, left, bottom, right)]} as fractions of the image's height and width, or
    None when the file lacks boxes or image sizes. A box is at least one pixel high and wide."""
    if not anns or any("bbox" not in a for a in anns) or any("width" not in m or "height" not in m for m in images):
        return None
    size = {}
    for m in images:
        h, w = m["height"], m["width"]
        if not (_number(h) and _number(w) and h > 0 and w > 0):
            raise UserError(f"{path}: image id {m['id']}: width and height must be positive numbers, "
                            f"received {w!r} x {h!r}")
        size[m["id"]] = (float(h), float(w))
    out = {m["id"]: [] for m in images}
    for i, ann in enumerate(anns):
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box)) and box[2] >= 0 and box[3] >= 0):
            raise UserError(f"{path}: annotations[{i}]: bbox must be [x, y, width, height] with width and "
                            f"height >= 0, received {box!r}")
        h, w = size[ann["image_id"]]
        x, y, bw, bh = (float(v) for v in box)
        top, left = min(max(y / h, 0.0), 1.0), min(max(x / w, 0.0), 1.0)
        bottom, right = min(max((y + max(bh, 1.0)) / h, 0.0), 1.0), min(max((x + max(bw, 1.0)) / w, 0.0), 1.0)
        out[ann["image_id"]].append((class_of_cat[ann["category_id"]], top, left, bottom, right))
    return out


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def convert_coco(
    annotations, images_dir, split, out_dir, *, keep_empty=False, skip_invalid=False, holdout=None
) -> list:
    """Convert COCO-2014 instances annotations and their images into split `split` of `out_dir`.

    With `holdout`, its images are drawn from those that survive the `keep_empty` filter and written
    as split `holdout.split` together with the rest as `split` (both or none).

    Args:
        annotations: str or Path, `instances_<split>2014.json`.
        images_dir: str or Path, the split's image folder.
        split: str, the split name to write.
        out_dir: str or Path, the data folder.
        keep_empty: bool, keep unannotated images with empty labels. Defaults to False.
        skip_invalid: bool, skip missing/undecodable images instead of failing. Defaults to False.
        holdout: `holdout.Holdout` or None, a model-selection split to hold out. Defaults to None.

    Returns:
        A list of `sources.SplitSummary`: `split`, then the held-out split if any.

    Example:
        convert_coco("annotations/instances_train2014.json", "train2014", "train", "data/coco",
                     holdout=Holdout(5000))
    """
    if holdout is not None:
        holdout.check([split], f"--split '{split}'")
    classes, items = parse_coco(annotations, images_dir, keep_empty)
    splits = {split: items}
    if holdout is not None:
        splits[split], splits[holdout.split] = holdout.split_items(items, split, annotations)
    return sources.write_splits(out_dir, classes, splits, skip_invalid)
