"""The converters `cpsd-tf data coco|nuswide|csv`: real file layouts in, TFRecord records out."""

import json
import shutil

import pytest
from click.testing import CliRunner

from cpsd_tf.cli import cli
from cpsd_tf.data import records
from helpers_images import decode, image_bytes, write_image


def _run(*args):
    return CliRunner().invoke(cli, ["data", *[str(a) for a in args]])


def _read(out, split):
    return list(records.iter_records(out, split))


def _assert_ok(result):
    assert result.exit_code == 0, result.output


def _assert_error(result, *fragments):
    """Exit 2 with one `Error:` line on stderr holding every fragment."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    assert "Traceback" not in result.output


def _assert_nothing_written(out):
    """A failed conversion leaves no shard, no dataset.json and no temp folder behind."""
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


# === COCO ===


def _coco(tmp_path, images=None, annotations=None, files=None):
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


def test_coco_converts_with_sorted_classes_and_raw_bytes(tmp_path):
    ann, img_dir = _coco(tmp_path)
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--split", "train", "--out", out)
    _assert_ok(result)
    assert f"Wrote 3 images of split 'train' (3 classes) to {out}" in result.stdout

    info = records.load_info(out)
    assert info.classes == ["bicycle", "car", "person"]
    assert info.splits == {"train": 3}
    recs = _read(out, "train")
    assert [r["index"] for r in recs] == [0, 1, 2]
    # Image 30 has no annotation: dropped by default, like the official code.
    assert [r["id"] for r in recs] == [
        "COCO_train2014_000000000009.jpg", "COCO_train2014_000000000025.png", "COCO_train2014_000000000042.jpg",
    ]
    assert [r["labels"] for r in recs] == [[1, 2], [0], [1]]
    for r in recs:
        assert r["image"] == (img_dir / r["id"]).read_bytes()  # stored as is, not re-encoded
        assert decode(r["image"]).shape == (8, 8, 3)


def test_coco_keep_empty(tmp_path):
    ann, img_dir = _coco(tmp_path)
    out = tmp_path / "data"
    _assert_ok(_run("coco", "--annotations", ann, "--images", img_dir, "--split", "val", "--out", out, "--keep-empty"))
    recs = _read(out, "val")
    assert [r["id"][-6:-4] for r in recs] == ["09", "25", "30", "42"]
    assert recs[2]["labels"] == []
    assert [r["index"] for r in recs] == [0, 1, 2, 3]


def test_coco_missing_image(tmp_path):
    ann, img_dir = _coco(tmp_path)
    (img_dir / "COCO_train2014_000000000025.png").unlink()
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", out)
    _assert_error(result, str(ann), "image id 25", "COCO_train2014_000000000025.png", "no such file")
    _assert_nothing_written(out)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"this is not an image", "not a decodable image"),
        (image_bytes("JPEG", size=64)[:200], "not a decodable image"),  # truncated JPEG
        (image_bytes("BMP"), "is BMP, not JPEG or PNG"),
    ],
    ids=["garbage", "truncated", "bmp"],
)
def test_coco_invalid_image_fails_inside_the_writer(tmp_path, data, problem):
    """The bad image is the last one, so the writer has started: its temp files must be gone too."""
    ann, img_dir = _coco(tmp_path, files={"COCO_train2014_000000000042.jpg": data})
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", out)
    _assert_error(result, str(ann), "image id 42", problem)
    _assert_nothing_written(out)


def test_coco_skip_invalid(tmp_path):
    ann, img_dir = _coco(tmp_path, files={"COCO_train2014_000000000042.jpg": b"junk"})
    (img_dir / "COCO_train2014_000000000009.jpg").unlink()
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--skip-invalid")
    _assert_ok(result)
    assert "skipped 2 invalid images of split 'train' (first: " in result.stderr
    assert "image id 9" in result.stderr
    recs = _read(out, "train")
    assert [(r["id"], r["index"], r["labels"]) for r in recs] == [("COCO_train2014_000000000025.png", 0, [0])]


def test_coco_skip_invalid_all_images_invalid(tmp_path):
    ann, img_dir = _coco(tmp_path)
    for p in img_dir.iterdir():
        p.write_bytes(b"junk")
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--skip-invalid")
    _assert_error(result, "all 3 images are invalid")
    _assert_nothing_written(out)


def test_coco_unknown_category(tmp_path):
    anns = [{"id": 1, "image_id": 9, "category_id": 1}, {"id": 2, "image_id": 9, "category_id": 77}]
    ann, img_dir = _coco(tmp_path, annotations=anns)
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data")
    _assert_error(result, str(ann), "annotations[1]", "category_id 77")


def test_coco_malformed_json(tmp_path):
    ann, img_dir = _coco(tmp_path)
    ann.write_text('{"images": [')
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data")
    _assert_error(result, str(ann), "not valid JSON")
    ann.write_text('{"images": []}')
    _assert_error(_run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data"), "'annotations' list")


def test_coco_no_annotated_image_hints_keep_empty(tmp_path):
    ann, img_dir = _coco(tmp_path, annotations=[])
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", out)
    _assert_error(result, str(ann), "no image to convert", "--keep-empty")
    _assert_nothing_written(out)


# === NUS-WIDE ===

CONCEPTS = ["sky", "animal", "water"]  # not sorted: the file's order is the class order


def _nuswide(root, train=None, test=None):
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


def test_nuswide_converts_train_and_test(tmp_path):
    root = _nuswide(tmp_path / "NUS-WIDE")
    out = tmp_path / "data"
    result = _run("nuswide", "--root", root, "--out", out)
    _assert_ok(result)
    assert f"Wrote 3 images of split 'train' (3 classes) to {out}" in result.stdout
    assert f"Wrote 2 images of split 'test' (3 classes) to {out}" in result.stdout

    info = records.load_info(out)
    assert info.classes == CONCEPTS
    assert info.splits == {"train": 3, "test": 2}
    train = _read(out, "train")
    assert [r["id"] for r in train] == ["actor/0001_1.jpg", "actor/0002_2.jpg", "beach/0001_3.png"]
    assert [r["labels"] for r in train] == [[0, 2], [], [1]]
    assert [r["index"] for r in train] == [0, 1, 2]
    test = _read(out, "test")
    assert [(r["id"], r["labels"], r["index"]) for r in test] == [("beach/0002_4.jpg", [2], 0), ("zoo/0001_5.jpg", [0, 1], 1)]
    for r in train + test:
        assert r["image"] == (root / "Flickr" / r["id"]).read_bytes()
        decode(r["image"])
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json", "test-00000-of-00001.tfrecord", "train-00000-of-00001.tfrecord",
    ]


def test_nuswide_groundtruth_folder(tmp_path):
    """The official Groundtruth.zip unpacks the label files under Groundtruth/TrainTestLabels/."""
    root = _nuswide(tmp_path / "NUS-WIDE")
    (root / "Groundtruth").mkdir()
    (root / "TrainTestLabels").rename(root / "Groundtruth" / "TrainTestLabels")
    out = tmp_path / "data"
    _assert_ok(_run("nuswide", "--root", root, "--out", out))
    assert [r["labels"] for r in _read(out, "test")] == [[2], [0, 1]]


def test_nuswide_label_count_mismatch(tmp_path):
    root = _nuswide(tmp_path / "NUS-WIDE")
    label_file = root / "TrainTestLabels" / "Labels_water_Test.txt"
    label_file.write_text("0\n1\n0\n")
    out = tmp_path / "data"
    result = _run("nuswide", "--root", root, "--out", out)
    _assert_error(result, str(label_file), "3 lines", "TestImagelist.txt lists 2 images")
    _assert_nothing_written(out)


def test_nuswide_bad_label_value(tmp_path):
    root = _nuswide(tmp_path / "NUS-WIDE")
    label_file = root / "TrainTestLabels" / "Labels_sky_Train.txt"
    label_file.write_text("0\n2\n1\n")
    _assert_error(_run("nuswide", "--root", root, "--out", tmp_path / "data"), str(label_file), "line 2", "'2'")


@pytest.mark.parametrize(
    "missing, fragment",
    [
        ("Concepts81.txt", "missing Concepts81.txt"),
        ("ImageList/TestImagelist.txt", "missing ImageList/TestImagelist.txt"),
        ("TrainTestLabels/Labels_animal_Test.txt", "Labels_animal_Test.txt: no such file"),
        ("Flickr", "missing the image folder Flickr/"),
    ],
)
def test_nuswide_missing_layout_file(tmp_path, missing, fragment):
    root = _nuswide(tmp_path / "NUS-WIDE")
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    out = tmp_path / "data"
    _assert_error(_run("nuswide", "--root", root, "--out", out), fragment)
    _assert_nothing_written(out)


def test_nuswide_bad_test_image_leaves_no_train_split(tmp_path):
    """Train is fully written before the test image fails: neither split may appear."""
    root = _nuswide(tmp_path / "NUS-WIDE")
    (root / "Flickr" / "zoo" / "0001_5.jpg").write_bytes(b"junk")
    out = tmp_path / "data"
    result = _run("nuswide", "--root", root, "--out", out)
    _assert_error(result, "TestImagelist.txt: line 2", "zoo/0001_5.jpg", "not a decodable image")
    _assert_nothing_written(out)


def test_nuswide_skip_invalid_and_existing_splits_kept(tmp_path):
    root = _nuswide(tmp_path / "NUS-WIDE")
    (root / "Flickr" / "actor" / "0002_2.jpg").unlink()
    out = tmp_path / "data"
    # A split converted earlier with the same classes stays in dataset.json.
    records.write_split(out, "extra", CONCEPTS, [records.Record(image_bytes("PNG"), "x.png", [1])])
    result = _run("nuswide", "--root", root, "--out", out, "--skip-invalid")
    _assert_ok(result)
    assert "skipped 1 invalid image of split 'train'" in result.stderr
    assert records.load_info(out).splits == {"extra": 1, "train": 2, "test": 2}
    assert [r["id"] for r in _read(out, "train")] == ["actor/0001_1.jpg", "beach/0001_3.png"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_nuswide_into_a_dataset_with_other_classes(tmp_path):
    root = _nuswide(tmp_path / "NUS-WIDE")
    out = tmp_path / "data"
    records.write_split(out, "extra", ["a", "b"], [records.Record(image_bytes("PNG"), "x.png", [1])])
    _assert_error(_run("nuswide", "--root", root, "--out", out), str(out / "dataset.json"), "other classes")
    assert records.load_info(out).splits == {"extra": 1}


# === CSV / JSONL ===


def _images(img_dir, names):
    for i, name in enumerate(names):
        write_image(img_dir / name, seed=i)
    return img_dir


def test_csv_converts_with_sorted_classes(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg", "sub/b.png", "c.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,dog;cat\nsub/b.png,\n\nc.jpg, bird ;dog\n")
    out = tmp_path / "data"
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out)
    _assert_ok(result)
    assert f"Wrote 3 images of split 'train' (3 classes) to {out}" in result.stdout
    assert records.load_info(out).classes == ["bird", "cat", "dog"]
    recs = _read(out, "train")
    assert [(r["id"], r["index"], r["labels"]) for r in recs] == [
        ("a.jpg", 0, [1, 2]), ("sub/b.png", 1, []), ("c.jpg", 2, [0, 2]),
    ]
    for r in recs:
        assert r["image"] == (img_dir / r["id"]).read_bytes()
        decode(r["image"])


def test_csv_classes_file_fixes_order_and_second_split(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ndog\ncat\n")
    (tmp_path / "train.csv").write_text("path,labels\na.jpg,cat;dog\nb.jpg,zebra\n")
    (tmp_path / "test.csv").write_text("path,labels\nc.jpg,dog\n")  # fewer names: --classes keeps the list
    out = tmp_path / "data"
    for split in ("train", "test"):
        _assert_ok(_run(
            "csv", "--labels", tmp_path / f"{split}.csv", "--images", img_dir, "--split", split,
            "--out", out, "--classes", classes,
        ))
    info = records.load_info(out)
    assert info.classes == ["zebra", "dog", "cat"]
    assert info.splits == {"train": 2, "test": 1}
    assert [r["labels"] for r in _read(out, "train")] == [[1, 2], [0]]
    assert [(r["id"], r["labels"]) for r in _read(out, "test")] == [("c.jpg", [1])]


def test_csv_second_split_with_other_classes_fails(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    (tmp_path / "train.csv").write_text("path,labels\na.jpg,cat;dog\n")
    (tmp_path / "test.csv").write_text("path,labels\nb.jpg,dog\n")
    out = tmp_path / "data"
    _assert_ok(_run("csv", "--labels", tmp_path / "train.csv", "--images", img_dir, "--split", "train", "--out", out))
    result = _run("csv", "--labels", tmp_path / "test.csv", "--images", img_dir, "--split", "test", "--out", out)
    _assert_error(result, str(out / "dataset.json"), "same class list")
    assert records.load_info(out).splits == {"train": 1}
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "train-00000-of-00001.tfrecord"]


def test_csv_unknown_class_with_classes_file(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,cat\nb.jpg,dog;cow\n")
    out = tmp_path / "data"
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, "--classes", classes)
    _assert_error(result, f"{labels}: line 3", "unknown class 'cow'", str(classes))
    _assert_nothing_written(out)


def test_csv_duplicate_name_in_classes_file(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\ncat\n")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,cat\n")
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "t", "--out", tmp_path / "o", "--classes", classes)
    _assert_error(result, f"{classes}: line 3", "'cat' already on line 1")


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("file,tags\na.jpg,cat\n", ["line 1", "header must be 'path,labels'"]),
        ("path,labels\na.jpg,cat\nb.jpg,cat,dog\n", ["line 3", "expected 2 fields"]),
        ("path,labels\n,cat\n", ["line 2", "empty image path"]),
        ("path,labels\n", ["no images listed"]),
        ("", ["empty file"]),
    ],
    ids=["header", "fields", "empty-path", "no-rows", "empty-file"],
)
def test_csv_malformed(tmp_path, text, fragments):
    img_dir = _images(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text(text)
    out = tmp_path / "data"
    _assert_error(_run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out), str(labels), *fragments)
    _assert_nothing_written(out)


def test_csv_missing_image(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,cat\nnope.jpg,cat\n")
    out = tmp_path / "data"
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out)
    _assert_error(result, f"{labels}: line 3", "nope.jpg", "no such file")
    _assert_nothing_written(out)


def test_jsonl_names_and_indices(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg", "b.png", "c.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ndog\ncat\n")
    labels = tmp_path / "val.jsonl"
    labels.write_text(
        '{"path": "a.jpg", "labels": ["cat", 0]}\n\n'
        '{"path": "b.png", "labels": []}\n'
        '{"path": "c.jpg", "labels": [1, "dog"], "note": "extra keys are ignored"}\n'
    )
    out = tmp_path / "data"
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "val", "--out", out, "--classes", classes)
    _assert_ok(result)
    assert records.load_info(out).classes == ["zebra", "dog", "cat"]
    assert [(r["id"], r["index"], r["labels"]) for r in _read(out, "val")] == [
        ("a.jpg", 0, [0, 2]), ("b.png", 1, []), ("c.jpg", 2, [1]),
    ]


def test_jsonl_without_classes_uses_sorted_names(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    labels = tmp_path / "train.jsonl"
    labels.write_text('{"path": "a.jpg", "labels": ["sky"]}\n{"path": "b.jpg", "labels": ["car", "sky"]}\n')
    out = tmp_path / "data"
    _assert_ok(_run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out))
    assert records.load_info(out).classes == ["car", "sky"]
    assert [r["labels"] for r in _read(out, "train")] == [[1], [0, 1]]


@pytest.mark.parametrize(
    "line, use_classes, fragments",
    [
        ('{"path": "a.jpg", "labels": [3]}', True, ["line 2", "label index 3 out of range 0..2"]),
        ('{"path": "a.jpg", "labels": [-1]}', True, ["line 2", "label index -1 out of range"]),
        ('{"path": "a.jpg", "labels": [1]}', False, ["line 2", "integer label 1 needs --classes"]),
        ('{"path": "a.jpg", "labels": [true]}', True, ["line 2", "label true is neither"]),
        ('{"path": "a.jpg", "labels": "cat"}', True, ["line 2", 'expected {"path": str, "labels": [...]}']),
        ('{"path": "a.jpg", ', True, ["line 2", "not valid JSON"]),
    ],
    ids=["index-high", "index-negative", "index-no-classes", "bool", "labels-not-list", "bad-json"],
)
def test_jsonl_label_errors(tmp_path, line, use_classes, fragments):
    img_dir = _images(tmp_path / "imgs", ["a.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ndog\ncat\n")
    labels = tmp_path / "train.jsonl"
    labels.write_text('{"path": "a.jpg", "labels": ["cat"]}\n' + line + "\n")
    out = tmp_path / "data"
    extra = ["--classes", classes] if use_classes else []
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, *extra)
    _assert_error(result, str(labels), *fragments)
    _assert_nothing_written(out)


def test_label_errors_are_not_skipped(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\n")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,dog\n")
    result = _run(
        "csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", tmp_path / "o",
        "--classes", classes, "--skip-invalid",
    )
    _assert_error(result, "line 2", "unknown class 'dog'")


def test_csv_skip_invalid_counts_and_reports_first(tmp_path):
    img_dir = _images(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    (img_dir / "b.jpg").write_bytes(b"\xff\xd8 not really")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\nmissing.jpg,cat\na.jpg,cat\nb.jpg,cat\n")
    out = tmp_path / "data"
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, "--skip-invalid")
    _assert_ok(result)
    skip_lines = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(skip_lines) == 1
    assert skip_lines[0].startswith("skipped 2 invalid images of split 'train' (first: ")
    assert "line 2" in skip_lines[0] and "missing.jpg: no such file" in skip_lines[0]
    assert "skipped" not in result.stdout
    assert [(r["id"], r["index"]) for r in _read(out, "train")] == [("a.jpg", 0)]
    assert "Wrote 1 images of split 'train' (1 classes)" in result.stdout


# === --holdout: a model-selection split drawn from the converted one ===


def _ids(out, split):
    return [r["id"] for r in _read(out, split)]


def _assert_holdout(out, rest_split, held_split, all_ids, held_count):
    """Sizes, dense indices, disjoint parts whose union is the source, each in source order."""
    rest, held = _ids(out, rest_split), _ids(out, held_split)
    assert records.load_info(out).splits[rest_split] == len(rest) == len(all_ids) - held_count
    assert records.load_info(out).splits[held_split] == len(held) == held_count
    assert not set(rest) & set(held)
    assert sorted(rest + held) == sorted(all_ids)
    for ids in (rest, held):
        assert ids == [i for i in all_ids if i in ids]  # source order kept
    for split in (rest_split, held_split):
        assert [r["index"] for r in _read(out, split)] == list(range(len(_ids(out, split))))
    return held


def _coco_many(tmp_path, n=10):
    """A COCO file with `n` annotated images (and one unannotated, id 999); return (annotations, images, ids)."""
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in range(1, n + 1)]
    images.append({"id": 999, "file_name": "COCO_train2014_000000000999.jpg"})
    anns = [{"id": i, "image_id": i, "category_id": 1 + i % 3} for i in range(1, n + 1)]
    ann, img_dir = _coco(tmp_path, images=images, annotations=anns)
    return ann, img_dir, [img["file_name"] for img in images[:n]]


def test_coco_holdout_splits_the_annotated_images(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path)
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--split", "train", "--out", out, "--holdout", 4)
    _assert_ok(result)
    assert [line for line in result.stdout.splitlines() if line.startswith("Wrote")] == [
        f"Wrote 6 images of split 'train' (3 classes) to {out}",
        f"Wrote 4 images of split 'val' (3 classes) to {out}",
    ]
    # The unannotated image 999 is dropped before the draw, so it is in neither split.
    _assert_holdout(out, "train", "val", ids, 4)
    assert records.load_info(out).classes == ["bicycle", "car", "person"]
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json", "train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord",
    ]
    by_id = {r["id"]: r["labels"] for split in ("train", "val") for r in _read(out, split)}
    assert by_id["COCO_train2014_000000000003.jpg"] == [2]  # category 1 = person, labels kept per image


def test_coco_holdout_with_keep_empty_draws_from_all_images(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path, n=5)
    out = tmp_path / "data"
    _assert_ok(_run(
        "coco", "--annotations", ann, "--images", img_dir, "--out", out, "--keep-empty",
        "--holdout", 5, "--holdout-split", "minival",
    ))
    _assert_holdout(out, "train", "minival", ids + ["COCO_train2014_000000000999.jpg"], 5)


def test_holdout_is_deterministic_for_a_seed(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path)
    held = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        _assert_ok(_run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--holdout", 5, "--seed", seed))
        held[name] = _assert_holdout(out, "train", "val", ids, 5)
    assert held["a"] == held["b"]
    assert held["a"] != held["c"]
    # --seed 0 is the default.
    for name, extra in (("d", []), ("e", ["--seed", 0])):
        _assert_ok(_run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / name, "--holdout", 5, *extra))
    assert _ids(tmp_path / "d", "val") == _ids(tmp_path / "e", "val")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--holdout", 0], ["--holdout 0", "at least 1", "the 3 images of split 'train'"]),
        (["--holdout", -2], ["--holdout -2", "3 images"]),
        (["--holdout", 3], ["--holdout 3", "less than the 3 images"]),
        (["--holdout", 50], ["--holdout 50", "3 images"]),
        (["--holdout", 1, "--holdout-split", "train"], ["--holdout-split 'train' must differ from --split 'train'"]),
        (["--holdout", 1, "--holdout-split", "my-val"], ["--holdout-split 'my-val' is invalid"]),
        (["--holdout", 1, "--seed", -1], ["--seed -1", ">= 0"]),
        (["--seed", 1], ["--seed only applies with --holdout N"]),
        (["--holdout-split", "val"], ["--holdout-split only applies with --holdout N"]),
    ],
    ids=["zero", "negative", "all", "more", "same-split", "bad-name", "bad-seed", "seed-alone", "split-alone"],
)
def test_coco_holdout_bad_values(tmp_path, args, fragments):
    ann, img_dir = _coco(tmp_path)  # 3 annotated images
    out = tmp_path / "data"
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", out, *args)
    _assert_error(result, *fragments)
    _assert_nothing_written(out)


def test_coco_holdout_names_the_annotations_file(tmp_path):
    ann, img_dir = _coco(tmp_path)
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data", "--holdout", 3)
    _assert_error(result, str(ann))


def test_coco_holdout_failure_keeps_the_existing_dataset(tmp_path):
    """A bad image in either part leaves neither split written, and an earlier conversion intact."""
    ann, img_dir, ids = _coco_many(tmp_path)
    out = tmp_path / "data"
    _assert_ok(_run("coco", "--annotations", ann, "--images", img_dir, "--out", out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (img_dir / ids[-1]).write_bytes(b"junk")  # the last image: the writer has started by then
    result = _run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--holdout", 4)
    _assert_error(result, "image id 10", "not a decodable image")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert records.load_info(out).splits == {"train": 10}


def test_coco_holdout_failure_in_a_new_folder_writes_nothing(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path)
    (img_dir / ids[0]).write_bytes(b"junk")
    out = tmp_path / "new" / "data"
    _assert_error(_run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--holdout", 4), "image id 1")
    assert not out.exists()


def test_nuswide_holdout_from_train_leaves_test_intact(tmp_path):
    train = [(f"actor\\{i:04d}_{i}.jpg", {"sky"} if i % 2 else {"water"}) for i in range(1, 8)]
    root = _nuswide(tmp_path / "NUS-WIDE", train=train)
    plain, out = tmp_path / "plain", tmp_path / "data"
    _assert_ok(_run("nuswide", "--root", root, "--out", plain))
    result = _run("nuswide", "--root", root, "--out", out, "--holdout", 3, "--seed", 7)
    _assert_ok(result)
    assert [line for line in result.stdout.splitlines() if line.startswith("Wrote")] == [
        f"Wrote 4 images of split 'train' (3 classes) to {out}",
        f"Wrote 3 images of split 'val' (3 classes) to {out}",
        f"Wrote 2 images of split 'test' (3 classes) to {out}",
    ]
    assert records.load_info(out).splits == {"train": 4, "val": 3, "test": 2}
    _assert_holdout(out, "train", "val", _ids(plain, "train"), 3)
    assert _read(out, "test") == _read(plain, "test")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--holdout", 3], ["--holdout 3", "less than the 3 images of split 'train'", "TrainImagelist.txt"]),
        (["--holdout", 1, "--holdout-split", "test"], ["--holdout-split 'test' must differ", "'train' and 'test'"]),
        (["--holdout", 1, "--holdout-split", "train"], ["--holdout-split 'train' must differ"]),
    ],
    ids=["all", "test", "train"],
)
def test_nuswide_holdout_bad_values(tmp_path, args, fragments):
    root = _nuswide(tmp_path / "NUS-WIDE")
    out = tmp_path / "data"
    _assert_error(_run("nuswide", "--root", root, "--out", out, *args), *fragments)
    _assert_nothing_written(out)


def test_csv_holdout(tmp_path):
    names = [f"img{i}.jpg" for i in range(8)]
    img_dir = _images(tmp_path / "imgs", names)
    labels = tmp_path / "all.csv"
    labels.write_text("path,labels\n" + "".join(f"{n},{'cat' if i % 2 else 'dog'}\n" for i, n in enumerate(names)))
    out = tmp_path / "data"
    result = _run(
        "csv", "--labels", labels, "--images", img_dir, "--split", "trainval", "--out", out,
        "--holdout", 2, "--holdout-split", "val", "--seed", 1,
    )
    _assert_ok(result)
    assert f"Wrote 6 images of split 'trainval' (2 classes) to {out}" in result.stdout
    assert f"Wrote 2 images of split 'val' (2 classes) to {out}" in result.stdout
    _assert_holdout(out, "trainval", "val", names, 2)
    for r in _read(out, "trainval") + _read(out, "val"):
        assert r["labels"] == [0 if int(r["id"][3]) % 2 else 1]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--holdout", 1], ["--holdout 1", "less than the 1 images of split 'train'", "one.csv"]),
        (["--holdout", 0], ["--holdout 0", "1 images"]),
        (["--holdout", 1, "--holdout-split", "train"], ["--holdout-split 'train' must differ from --split 'train'"]),
    ],
    ids=["all", "zero", "same-split"],
)
def test_csv_holdout_bad_values(tmp_path, args, fragments):
    img_dir = _images(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "one.csv"
    labels.write_text("path,labels\na.jpg,cat\n")
    out = tmp_path / "data"
    result = _run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, *args)
    _assert_error(result, *fragments)
    _assert_nothing_written(out)
