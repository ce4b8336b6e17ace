"""The official NUS-WIDE layout -> splits `train` and `test` (and optionally one held out of train)."""

from pathlib import Path

from cpsd_tf.data import sources
from cpsd_tf.errors import UserError

NUSWIDE_SPLITS = {"train": "Train", "test": "Test"}


def _layout_paths(root):
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


def _image_list(list_path, split):
    """The relative image paths of an image list, with '/' (the official lists use '\\')."""
    rel_paths = sources.text_lines(sources.read_text(list_path, "NUS-WIDE image list"))
    for lineno, rel in enumerate(rel_paths, 1):
        if not rel:
            raise UserError(f"{list_path}: line {lineno}: empty image path")
    if not rel_paths:
        raise UserError(f"{list_path}: no images listed for split '{split}'")
    return [rel.replace("\\", "/") for rel in rel_paths]


def _label_column(path, n_images, list_path) -> list:
    """The 0/1 values of one `Labels_<concept>_<Train|Test>.txt` file, checked against the image list."""
    values = sources.text_lines(sources.read_text(path, "NUS-WIDE label file"))
    if len(values) != n_images:
        raise UserError(f"{path}: {len(values)} lines, but {list_path} lists {n_images} images")
    for lineno, value in enumerate(values, 1):
        if value not in ("0", "1"):
            raise UserError(f"{path}: line {lineno}: expected 0 or 1, found '{value}'")
    return values


def parse_nuswide(root, keep_empty=False):
    """Parse the official NUS-WIDE layout into (classes, {"train": items, "test": items}).

    Every label file of both splits is read and checked here, before any image is written.

    Args:
        root: str or Path, the folder holding Concepts81.txt, ImageList/, TrainTestLabels/ (or
            Groundtruth/TrainTestLabels/) and Flickr/.
        keep_empty: bool, keep images without any of the concepts (empty labels). Defaults to False:
            label-less images are dropped from both splits, the usual NUS-WIDE protocol of the
            multi-label papers CPSD compares with.
    """
    root = Path(root)
    concepts, lists, labels_dir = _layout_paths(root)
    classes = sources.read_class_names(concepts, "NUS-WIDE concept names")
    splits = {}
    for split, tag in NUSWIDE_SPLITS.items():
        rel_paths = _image_list(lists[split], split)
        labels = [[] for _ in rel_paths]
        for c, concept in enumerate(classes):
            label_path = labels_dir / f"Labels_{concept}_{tag}.txt"
            for i, value in enumerate(_label_column(label_path, len(rel_paths), lists[split])):
                if value == "1":
                    labels[i].append(c)
        items = [
            sources.Item(root / "Flickr" / rel, rel, labels[i], f"{lists[split]}: line {i + 1}")
            for i, rel in enumerate(rel_paths)
            if keep_empty or labels[i]
        ]
        if not items:
            raise UserError(f"{lists[split]}: none of the {len(rel_paths)} images of split '{split}' has a "
                            f"label (use --keep-empty to keep them)")
        splits[split] = items
    return classes, splits


def convert_nuswide(root, out_dir, *, keep_empty=False, skip_invalid=False, holdout=None) -> list:
    """Convert the official NUS-WIDE layout into splits `train` and `test` of `out_dir` (all or none).

    Classes follow the order of Concepts81.txt. Image ids are the image-list paths with '/' separators
    (`actor/0001_2124494179.jpg`). Images without any of the 81 concepts are dropped unless
    `keep_empty` (then they are kept with empty labels).
    With `holdout`, its images are drawn from the train list and written as split `holdout.split`; the
    test split is untouched.

    Args:
        root: str or Path, the NUS-WIDE folder (Concepts81.txt, ImageList/, TrainTestLabels/, Flickr/).
        out_dir: str or Path, the data folder.
        keep_empty: bool, keep images without labels. Defaults to False.
        skip_invalid: bool, skip missing/undecodable images instead of failing. Defaults to False.
        holdout: `holdout.Holdout` or None, a model-selection split to hold out of train. Defaults to None.

    Returns:
        A list of `sources.SplitSummary`: train, the held-out split if any, then test.

    Example:
        convert_nuswide("NUS-WIDE", "data/nuswide", holdout=Holdout(5000))
    """
    if holdout is not None:
        holdout.check(list(NUSWIDE_SPLITS), "the NUS-WIDE splits 'train' and 'test'")
    classes, splits = parse_nuswide(root, keep_empty)
    if holdout is not None:
        train, held = holdout.split_items(splits["train"], "train", _layout_paths(root)[1]["train"])
        splits = {"train": train, holdout.split: held, "test": splits["test"]}
    return sources.write_splits(out_dir, classes, splits, skip_invalid)
