"""Shared helpers of the converter tests: run a `data` command, read records, write real source layouts."""

import json

from click.testing import CliRunner

from cpsd_tf.cli import cli
from cpsd_tf.data import records
from helpers_images import write_image


def run(*args):
    return CliRunner().invoke(cli, ["data", *[str(a) for a in args]])


def read(out, split):
    return list(records.iter_records(out, split))


def assert_ok(result):
    assert result.exit_code == 0, result.output


def assert_error(result, *fragments):
    """Exit 2 with one `Error:` line on stderr holding every fragment."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    assert "Traceback" not in result.output


def assert_nothing_written(out):
    """A failed conversion leaves no shard, no dataset.json and no temp folder behind."""
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


def coco_layout(tmp_path, images=None, annotations=None, files=None):
    """Write a COCO-2014 instances file and its images; return (annotations path, image folder).

    Category ids are deliberately not in alphabetical order of the names.
    """
    img_dir = tmp_path / "train2014"
    images = images if images is not None else [
        {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 8, "height": 8},
        {"id": 25, "file_name": "COCO_train2014_000000000025.png", "width": 8, "height": 8},
        {"id": 30, "file_name": "COCO_train2014_000000000030.jpg", "width": 8, "height": 8},
        {"id": 42, "file_name": "COCO_train2014_000000000042.jpg", "width": 8, "height": 8},
    ]
    annotations = annotations if annotations is not None else [
        {"id": 1, "image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0},
        {"id": 2, "image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1], "iscrowd": 0},
        {"id": 3, "image_id": 9, "category_id": 1, "bbox": [1, 1, 1, 1], "iscrowd": 0},
        {"id": 4, "image_id": 25, "category_id": 2, "bbox": [0, 0, 1, 1], "iscrowd": 1},
        {"id": 5, "image_id": 42, "category_id": 3, "bbox": [0, 0, 1, 1], "iscrowd": 0},
    ]
    categories = [
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
    ]
    for i, img in enumerate(images):
        write_image(img_dir / img["file_name"], seed=i)
    for name, data in (files or {}).items():
        (img_dir / name).write_bytes(data)
    ann = tmp_path / "instances_train2014.json"
    ann.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations, "categories": categories}))
    return ann, img_dir


CONCEPTS = ["sky", "animal", "water"]  # not sorted: the file's order is the class order


def nuswide_layout(root, train=None, test=None):
    """Write the official NUS-WIDE layout; splits are lists of (windows path, set of concept names)."""
    train = train if train is not None else [
        ("actor\\0001_1.jpg", {"sky", "water"}),
        ("actor\\0002_2.jpg", set()),
        ("beach\\0001_3.png", {"animal"}),
    ]
    test = test if test is not None else [("beach\\0002_4.jpg", {"water"}), ("zoo\\0001_5.jpg", {"animal", "sky"})]
    (root / "ImageList").mkdir(parents=True)
    (root / "TrainTestLabels").mkdir()
    (root / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    for tag, rows in (("Train", train), ("Test", test)):
        # Windows line endings, as the official files have.
        (root / "ImageList" / f"{tag}Imagelist.txt").write_bytes("".join(f"{p}\r\n" for p, _ in rows).encode())
        for concept in CONCEPTS:
            lines = "".join(f"{int(concept in labels)}\r\n" for _, labels in rows)
            (root / "TrainTestLabels" / f"Labels_{concept}_{tag}.txt").write_bytes(lines.encode())
        for i, (p, _) in enumerate(rows):
            write_image(root / "Flickr" / p.replace("\\", "/"), seed=i)
    return root


def images_in(img_dir, names):
    for i, name in enumerate(names):
        write_image(img_dir / name, seed=i)
    return img_dir
