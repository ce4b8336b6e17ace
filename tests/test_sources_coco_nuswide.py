"""The converters `cpsd-tf data coco|nuswide`: the real file layouts of COCO and NUS-WIDE in, TFRecord records out."""

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
