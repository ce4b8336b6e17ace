"""The converter `cpsd-tf data csv` (CSV and JSONL lists of your own images): files in, TFRecord records out.

COCO and NUS-WIDE: `test_sources_coco_nuswide.py`."""

import pytest

from cpsd_tf.data import records
from helpers_images import decode, image_bytes
from helpers_sources import (
    assert_error,
    assert_nothing_written,
    assert_ok,
    images_in,
    read,
    run,
)


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
