"""The converters `cpsd-tf data coco|nuswide|csv`: real file layouts in, TFRecord records out."""

import shutil

import pytest

from cpsd_tf.data import records
from helpers_images import decode, image_bytes
from helpers_sources import (
    CONCEPTS,
    assert_error,
    assert_nothing_written,
    assert_ok,
    coco_layout,
    images_in,
    nuswide_layout,
    read,
    run,
)


# === COCO ===


def test_coco_converts_with_sorted_classes_and_raw_bytes(tmp_path):
    ann, img_dir = coco_layout(tmp_path)
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--split", "train", "--out", out)
    assert_ok(result)
    assert f"Wrote 3 images of split 'train' (3 classes) to {out}" in result.stdout

    info = records.load_info(out)
    assert info.classes == ["bicycle", "car", "person"]
    assert info.splits == {"train": 3}
    recs = read(out, "train")
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
    ann, img_dir = coco_layout(tmp_path)
    out = tmp_path / "data"
    assert_ok(run("coco", "--annotations", ann, "--images", img_dir, "--split", "val", "--out", out, "--keep-empty"))
    recs = read(out, "val")
    assert [r["id"][-6:-4] for r in recs] == ["09", "25", "30", "42"]
    assert recs[2]["labels"] == []
    assert [r["index"] for r in recs] == [0, 1, 2, 3]


def test_coco_missing_image(tmp_path):
    ann, img_dir = coco_layout(tmp_path)
    (img_dir / "COCO_train2014_000000000025.png").unlink()
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", out)
    assert_error(result, str(ann), "image id 25", "COCO_train2014_000000000025.png", "no such file")
    assert_nothing_written(out)


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
    ann, img_dir = coco_layout(tmp_path, files={"COCO_train2014_000000000042.jpg": data})
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", out)
    assert_error(result, str(ann), "image id 42", problem)
    assert_nothing_written(out)


def test_coco_skip_invalid(tmp_path):
    ann, img_dir = coco_layout(tmp_path, files={"COCO_train2014_000000000042.jpg": b"junk"})
    (img_dir / "COCO_train2014_000000000009.jpg").unlink()
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--skip-invalid")
    assert_ok(result)
    assert "skipped 2 invalid images of split 'train' (first: " in result.stderr
    assert "image id 9" in result.stderr
    recs = read(out, "train")
    assert [(r["id"], r["index"], r["labels"]) for r in recs] == [("COCO_train2014_000000000025.png", 0, [0])]


def test_coco_skip_invalid_all_images_invalid(tmp_path):
    ann, img_dir = coco_layout(tmp_path)
    for p in img_dir.iterdir():
        p.write_bytes(b"junk")
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--skip-invalid")
    assert_error(result, "all 3 images are invalid")
    assert_nothing_written(out)


def test_coco_unknown_category(tmp_path):
    anns = [{"id": 1, "image_id": 9, "category_id": 1}, {"id": 2, "image_id": 9, "category_id": 77}]
    ann, img_dir = coco_layout(tmp_path, annotations=anns)
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data")
    assert_error(result, str(ann), "annotations[1]", "category_id 77")


def test_coco_malformed_json(tmp_path):
    ann, img_dir = coco_layout(tmp_path)
    ann.write_text('{"images": [')
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data")
    assert_error(result, str(ann), "not valid JSON")
    ann.write_text('{"images": []}')
    assert_error(run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data"), "'annotations' list")


def test_coco_no_annotated_image_hints_keep_empty(tmp_path):
    ann, img_dir = coco_layout(tmp_path, annotations=[])
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", out)
    assert_error(result, str(ann), "no image to convert", "--keep-empty")
    assert_nothing_written(out)


# === NUS-WIDE ===

def test_nuswide_converts_train_and_test(tmp_path):
    """Label-less images are dropped by default (actor/0002_2.jpg has no concept)."""
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    out = tmp_path / "data"
    result = run("nuswide", "--root", root, "--out", out)
    assert_ok(result)
    assert f"Wrote 2 images of split 'train' (3 classes) to {out}" in result.stdout
    assert f"Wrote 2 images of split 'test' (3 classes) to {out}" in result.stdout

    info = records.load_info(out)
    assert info.classes == CONCEPTS
    assert info.splits == {"train": 2, "test": 2}
    train = read(out, "train")
    assert [r["id"] for r in train] == ["actor/0001_1.jpg", "beach/0001_3.png"]
    assert [r["labels"] for r in train] == [[0, 2], [1]]
    assert [r["index"] for r in train] == [0, 1]
    test = read(out, "test")
    assert [(r["id"], r["labels"], r["index"]) for r in test] == [("beach/0002_4.jpg", [2], 0), ("zoo/0001_5.jpg", [0, 1], 1)]
    for r in train + test:
        assert r["image"] == (root / "Flickr" / r["id"]).read_bytes()
        decode(r["image"])
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json", "test-00000-of-00001.tfrecord", "train-00000-of-00001.tfrecord",
    ]


def test_nuswide_keep_empty_keeps_label_less_images(tmp_path):
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    out = tmp_path / "data"
    assert_ok(run("nuswide", "--root", root, "--out", out, "--keep-empty"))
    train = read(out, "train")
    assert [r["id"] for r in train] == ["actor/0001_1.jpg", "actor/0002_2.jpg", "beach/0001_3.png"]
    assert [r["labels"] for r in train] == [[0, 2], [], [1]]


def test_nuswide_split_without_any_label_is_refused(tmp_path):
    root = nuswide_layout(tmp_path / "NUS-WIDE", test=[("beach\\0002_4.jpg", set())])
    out = tmp_path / "data"
    result = run("nuswide", "--root", root, "--out", out)
    assert_error(result, "TestImagelist.txt", "none of the 1 images of split 'test' has a label", "--keep-empty")
    assert_nothing_written(out)


def test_nuswide_groundtruth_folder(tmp_path):
    """The official Groundtruth.zip unpacks the label files under Groundtruth/TrainTestLabels/."""
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    (root / "Groundtruth").mkdir()
    (root / "TrainTestLabels").rename(root / "Groundtruth" / "TrainTestLabels")
    out = tmp_path / "data"
    assert_ok(run("nuswide", "--root", root, "--out", out))
    assert [r["labels"] for r in read(out, "test")] == [[2], [0, 1]]


def test_nuswide_label_count_mismatch(tmp_path):
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    label_file = root / "TrainTestLabels" / "Labels_water_Test.txt"
    label_file.write_text("0\n1\n0\n")
    out = tmp_path / "data"
    result = run("nuswide", "--root", root, "--out", out)
    assert_error(result, str(label_file), "3 lines", "TestImagelist.txt lists 2 images")
    assert_nothing_written(out)


def test_nuswide_bad_label_value(tmp_path):
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    label_file = root / "TrainTestLabels" / "Labels_sky_Train.txt"
    label_file.write_text("0\n2\n1\n")
    assert_error(run("nuswide", "--root", root, "--out", tmp_path / "data"), str(label_file), "line 2", "'2'")


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
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    out = tmp_path / "data"
    assert_error(run("nuswide", "--root", root, "--out", out), fragment)
    assert_nothing_written(out)


def test_nuswide_bad_test_image_leaves_no_train_split(tmp_path):
    """Train is fully written before the test image fails: neither split may appear."""
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    (root / "Flickr" / "zoo" / "0001_5.jpg").write_bytes(b"junk")
    out = tmp_path / "data"
    result = run("nuswide", "--root", root, "--out", out)
    assert_error(result, "TestImagelist.txt: line 2", "zoo/0001_5.jpg", "not a decodable image")
    assert_nothing_written(out)


def test_nuswide_skip_invalid_and_existing_splits_kept(tmp_path):
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    (root / "Flickr" / "beach" / "0001_3.png").unlink()
    out = tmp_path / "data"
    # A split converted earlier with the same classes stays in dataset.json.
    records.write_split(out, "extra", CONCEPTS, [records.Record(image_bytes("PNG"), "x.png", [1])])
    result = run("nuswide", "--root", root, "--out", out, "--skip-invalid")
    assert_ok(result)
    assert "skipped 1 invalid image of split 'train'" in result.stderr
    assert records.load_info(out).splits == {"extra": 1, "train": 1, "test": 2}
    assert [r["id"] for r in read(out, "train")] == ["actor/0001_1.jpg"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_nuswide_into_a_dataset_with_other_classes(tmp_path):
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    out = tmp_path / "data"
    records.write_split(out, "extra", ["a", "b"], [records.Record(image_bytes("PNG"), "x.png", [1])])
    assert_error(run("nuswide", "--root", root, "--out", out), str(out / "dataset.json"), "other classes")
    assert records.load_info(out).splits == {"extra": 1}


# === CSV / JSONL ===


def test_csv_converts_with_sorted_classes(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "sub/b.png", "c.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,dog;cat\nsub/b.png,\n\nc.jpg, bird ;dog\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out)
    assert_ok(result)
    assert f"Wrote 3 images of split 'train' (3 classes) to {out}" in result.stdout
    assert records.load_info(out).classes == ["bird", "cat", "dog"]
    recs = read(out, "train")
    assert [(r["id"], r["index"], r["labels"]) for r in recs] == [
        ("a.jpg", 0, [1, 2]), ("sub/b.png", 1, []), ("c.jpg", 2, [0, 2]),
    ]
    for r in recs:
        assert r["image"] == (img_dir / r["id"]).read_bytes()
        decode(r["image"])


def test_csv_duplicate_with_other_labels_is_refused(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,dog;cat\nb.jpg,cat\n./a.jpg,dog\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out)
    assert_error(result, f"{labels}: line 4", "image './a.jpg' has labels [dog]", "line 2 gives it [cat; dog]")
    assert_nothing_written(out)


def test_jsonl_duplicate_with_other_labels_is_refused(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "train.jsonl"
    labels.write_text('{"path": "a.jpg", "labels": ["cat"]}\n{"path": "a.jpg", "labels": []}\n')
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", tmp_path / "o")
    assert_error(result, f"{labels}: line 2", "image 'a.jpg' has labels []", "line 1 gives it [cat]")


def test_csv_identical_duplicates_are_merged(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,dog;cat\nb.jpg,cat\na.jpg,cat;dog\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out)
    assert_ok(result)
    assert [(r["id"], r["index"], r["labels"]) for r in read(out, "train")] == [("a.jpg", 0, [0, 1]), ("b.jpg", 1, [0])]


def test_csv_classes_file_fixes_order_and_second_split(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ndog\ncat\n")
    (tmp_path / "train.csv").write_text("path,labels\na.jpg,cat;dog\nb.jpg,zebra\n")
    (tmp_path / "test.csv").write_text("path,labels\nc.jpg,dog\n")  # fewer names: --classes keeps the list
    out = tmp_path / "data"
    for split in ("train", "test"):
        assert_ok(run(
            "csv", "--labels", tmp_path / f"{split}.csv", "--images", img_dir, "--split", split,
            "--out", out, "--classes", classes,
        ))
    info = records.load_info(out)
    assert info.classes == ["zebra", "dog", "cat"]
    assert info.splits == {"train": 2, "test": 1}
    assert [r["labels"] for r in read(out, "train")] == [[1, 2], [0]]
    assert [(r["id"], r["labels"]) for r in read(out, "test")] == [("c.jpg", [1])]


def test_csv_second_split_with_other_classes_fails(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    (tmp_path / "train.csv").write_text("path,labels\na.jpg,cat;dog\n")
    (tmp_path / "test.csv").write_text("path,labels\nb.jpg,dog\n")
    out = tmp_path / "data"
    assert_ok(run("csv", "--labels", tmp_path / "train.csv", "--images", img_dir, "--split", "train", "--out", out))
    result = run("csv", "--labels", tmp_path / "test.csv", "--images", img_dir, "--split", "test", "--out", out)
    assert_error(result, str(out / "dataset.json"), "same class list")
    assert records.load_info(out).splits == {"train": 1}
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "train-00000-of-00001.tfrecord"]


def test_csv_unknown_class_with_classes_file(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,cat\nb.jpg,dog;cow\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, "--classes", classes)
    assert_error(result, f"{labels}: line 3", "unknown class 'cow'", str(classes))
    assert_nothing_written(out)


def test_csv_duplicate_name_in_classes_file(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\ncat\n")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,cat\n")
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "t", "--out", tmp_path / "o", "--classes", classes)
    assert_error(result, f"{classes}: line 3", "'cat' already on line 1")


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
    img_dir = images_in(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text(text)
    out = tmp_path / "data"
    assert_error(run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out), str(labels), *fragments)
    assert_nothing_written(out)


def test_csv_missing_image(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,cat\nnope.jpg,cat\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out)
    assert_error(result, f"{labels}: line 3", "nope.jpg", "no such file")
    assert_nothing_written(out)


def test_jsonl_names_and_indices(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.png", "c.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ndog\ncat\n")
    labels = tmp_path / "val.jsonl"
    labels.write_text(
        '{"path": "a.jpg", "labels": ["cat", 0]}\n\n'
        '{"path": "b.png", "labels": []}\n'
        '{"path": "c.jpg", "labels": [1, "dog"], "note": "extra keys are ignored"}\n'
    )
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "val", "--out", out, "--classes", classes)
    assert_ok(result)
    assert records.load_info(out).classes == ["zebra", "dog", "cat"]
    assert [(r["id"], r["index"], r["labels"]) for r in read(out, "val")] == [
        ("a.jpg", 0, [0, 2]), ("b.png", 1, []), ("c.jpg", 2, [1]),
    ]


def test_jsonl_without_classes_uses_sorted_names(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    labels = tmp_path / "train.jsonl"
    labels.write_text('{"path": "a.jpg", "labels": ["sky"]}\n{"path": "b.jpg", "labels": ["car", "sky"]}\n')
    out = tmp_path / "data"
    assert_ok(run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out))
    assert records.load_info(out).classes == ["car", "sky"]
    assert [r["labels"] for r in read(out, "train")] == [[1], [0, 1]]


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
    img_dir = images_in(tmp_path / "imgs", ["a.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ndog\ncat\n")
    labels = tmp_path / "train.jsonl"
    labels.write_text('{"path": "a.jpg", "labels": ["cat"]}\n' + line + "\n")
    out = tmp_path / "data"
    extra = ["--classes", classes] if use_classes else []
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, *extra)
    assert_error(result, str(labels), *fragments)
    assert_nothing_written(out)


def test_label_errors_are_not_skipped(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg"])
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\n")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,dog\n")
    result = run(
        "csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", tmp_path / "o",
        "--classes", classes, "--skip-invalid",
    )
    assert_error(result, "line 2", "unknown class 'dog'")


def test_csv_skip_invalid_counts_and_reports_first(tmp_path):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    (img_dir / "b.jpg").write_bytes(b"\xff\xd8 not really")
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\nmissing.jpg,cat\na.jpg,cat\nb.jpg,cat\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, "--skip-invalid")
    assert_ok(result)
    skip_lines = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(skip_lines) == 1
    assert skip_lines[0].startswith("skipped 2 invalid images of split 'train' (first: ")
    assert "line 2" in skip_lines[0] and "missing.jpg: no such file" in skip_lines[0]
    assert "skipped" not in result.stdout
    assert [(r["id"], r["index"]) for r in read(out, "train")] == [("a.jpg", 0)]
    assert "Wrote 1 images of split 'train' (1 classes)" in result.stdout


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP"])
def test_csv_refuses_formats_training_does_not_take(tmp_path, fmt):
    """JPEG and PNG only (what `predict` and the serving signature take too); the error names the file."""
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.png"])
    (img_dir / f"c.{fmt.lower()}").write_bytes(image_bytes(fmt))
    labels = tmp_path / "train.csv"
    labels.write_text(f"path,labels\na.jpg,cat\nb.png,dog\nc.{fmt.lower()},cat\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out)
    assert_error(result, f"{labels}: line 4", f"c.{fmt.lower()}", f"is {fmt}, not JPEG or PNG")
    assert_nothing_written(out)
