"""`<split>.objects.npz`: written by the COCO converter from its boxes, kept in step with its split."""

import numpy as np
import pytest

from cpsd_tf.data import objects as objects_file
from cpsd_tf.data import pipeline
from cpsd_tf.data.augment_config import AugmentConfig
from cpsd_tf.errors import UserError
from helpers_sources import assert_error, assert_nothing_written, assert_ok, coco_layout, images_in, read, run

# coco_layout's images are 8 x 8; here image 25 is 16 wide and 8 high, to tell x from y
IMAGES = [
    {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 8, "height": 8},
    {"id": 25, "file_name": "COCO_train2014_000000000025.png", "width": 16, "height": 8},
    {"id": 42, "file_name": "COCO_train2014_000000000042.jpg", "width": 8, "height": 8},
]
ANNS = [
    {"id": 1, "image_id": 9, "category_id": 1, "bbox": [2, 4, 4, 2]},  # person
    {"id": 2, "image_id": 9, "category_id": 3, "bbox": [0, 0, 8, 8]},  # car, the whole image
    {"id": 3, "image_id": 25, "category_id": 2, "bbox": [8, 2, 8, 4]},  # bicycle, right half
    {"id": 4, "image_id": 42, "category_id": 3, "bbox": [6, 6, 4, 4], "iscrowd": 1},  # out of the frame in part
]
# classes sorted by name: bicycle 0, car 1, person 2; rows (class, top, left, bottom, right)
EXPECTED = {
    "COCO_train2014_000000000009.jpg": [(2, 0.5, 0.25, 0.75, 0.75), (1, 0, 0, 1, 1)],
    "COCO_train2014_000000000025.png": [(0, 0.25, 0.5, 0.75, 1.0)],
    "COCO_train2014_000000000042.jpg": [(1, 0.75, 0.75, 1.0, 1.0)],
}


def _rows(table, i):
    return [tuple(r) for r in table[i][table[i, :, 0] >= 0].tolist()]


def _convert(tmp_path, *extra, images=IMAGES, anns=ANNS, split="train", out=None, files=None):
    ann, img_dir = coco_layout(tmp_path, images=images, annotations=anns, files=files)
    out = out or tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--split", split, "--out", out, *extra)
    return result, out


def _assert_matches(out, split):
    table = objects_file.table(out, split)  # also checks each record's classes against its labels
    for r in read(out, split):
        np.testing.assert_allclose(_rows(table, r["index"]), EXPECTED[r["id"]])
    return table


def test_coco_writes_where_each_object_is(tmp_path):
    result, out = _convert(tmp_path)
    assert_ok(result)
    assert f"Wrote where their objects are to {objects_file.path(out, 'train')}" in result.stdout
    assert objects_file.table(out, "train").shape == (3, 2, 5)
    _assert_matches(out, "train")


def test_skipped_images_keep_the_objects_in_step(tmp_path):
    result, out = _convert(tmp_path, "--skip-invalid", files={"COCO_train2014_000000000009.jpg": b"junk"})
    assert_ok(result)
    assert [r["id"][-6:-4] for r in read(out, "train")] == ["25", "42"]
    _assert_matches(out, "train")


def test_a_held_out_split_gets_its_own_objects(tmp_path):
    result, out = _convert(tmp_path, "--holdout", 1)
    assert_ok(result)
    assert len(read(out, "train")) == 2 and len(read(out, "val")) == 1
    _assert_matches(out, "train")
    _assert_matches(out, "val")


@pytest.mark.parametrize("holdout", [[], ["--holdout", "1"]])
def test_a_split_written_again_without_boxes_loses_its_old_objects(tmp_path, holdout):
    _, out = _convert(tmp_path / "a", *holdout)
    assert objects_file.path(out, "train").is_file()
    no_sizes = [{k: v for k, v in m.items() if k not in ("width", "height")} for m in IMAGES]
    result, _ = _convert(tmp_path / "b", *holdout, images=no_sizes, out=out)
    assert_ok(result)
    assert "objects" not in result.stdout
    assert not objects_file.path(out, "train").exists()
    assert not objects_file.path(out, "val").exists()
    with pytest.raises(UserError, match="train.objects.npz: not found"):
        objects_file.table(out, "train")


@pytest.mark.parametrize("box, shown", [([1, 2, 3], "[1, 2, 3]"), ([0, 0, -1, 2], "[0, 0, -1, 2]"),
                                        (["a", 0, 1, 1], "['a', 0, 1, 1]")])
def test_a_bad_box_is_refused_by_annotation(tmp_path, box, shown):
    anns = [dict(ANNS[0]), *ANNS[1:]]
    anns[0]["bbox"] = box
    result, out = _convert(tmp_path, anns=anns)
    assert_error(result, "annotations[0]: bbox must be [x, y, width, height]", shown)
    assert not out.exists()


def test_a_bad_image_size_is_refused(tmp_path):
    images = [dict(IMAGES[0], width=0), *IMAGES[1:]]
    result, out = _convert(tmp_path, images=images)
    assert_error(result, "image id 9: width and height must be positive numbers")
    assert not out.exists()


def test_an_objects_file_of_other_images_is_refused(tmp_path):
    _, out = _convert(tmp_path)
    table = objects_file.table(out, "train")
    objects_file.write(out, "train", [_rows(table, i) for i in (1, 0, 2)])  # same size, rows swapped
    with pytest.raises(UserError, match=r"record 0 has objects of classes \[0\] but labels \[1, 2\]"):
        objects_file.table(out, "train")
    objects_file.write(out, "train", [[(7, 0, 0, 1, 1)], [], []])
    with pytest.raises(UserError, match="not class indices"):
        objects_file.table(out, "train")


def test_the_pipeline_reads_coco_boxes_in_pixels(tmp_path):
    _, out = _convert(tmp_path)
    ds = pipeline.build(out, "train", image_size=8, batch_size=3, training=True, with_objects=True, with_index=True, seed=0,
                        augment=AugmentConfig(flip=False))
    features, y = next(iter(ds))
    by_index = {int(i): rows for i, rows in zip(features["index"].numpy(), features["objects"].numpy())}
    for r in read(out, "train"):
        got = [v for v in by_index[r["index"]] if v[0] >= 0]
        np.testing.assert_allclose(got, [(c, t * 8, l * 8, b * 8, rt * 8) for c, t, l, b, rt in EXPECTED[r["id"]]])


# === JSONL lists with boxes ===


def _jsonl(tmp_path, lines, *extra):
    img_dir = images_in(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    labels = tmp_path / "train.jsonl"
    labels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "data"
    return run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, *extra), labels, out


BOXED = [
    '{"path": "a.jpg", "labels": ["sky", "car"], "objects": [{"label": "car", "box": [0.5, 0.0, 1.0, 0.5]}, '
    '{"label": "sky", "box": [0, 0, 0.4, 1]}, {"label": "car", "box": [0.6, 0.5, 0.9, 0.9]}]}',
    '{"path": "b.jpg", "labels": [], "objects": []}',
    '{"path": "c.jpg", "labels": ["car"], "objects": [{"label": "car", "box": [0.1, 0.2, 0.3, 0.4]}]}',
]


def test_jsonl_objects_are_written_with_the_split(tmp_path):
    result, _, out = _jsonl(tmp_path, BOXED)
    assert_ok(result)
    assert f"Wrote where their objects are to {objects_file.path(out, 'train')}" in result.stdout
    table = objects_file.table(out, "train")  # classes: car 0, sky 1
    np.testing.assert_allclose(_rows(table, 0), [(0, 0.5, 0, 1, 0.5), (1, 0, 0, 0.4, 1), (0, 0.6, 0.5, 0.9, 0.9)])
    assert _rows(table, 1) == []
    np.testing.assert_allclose(_rows(table, 2), [(0, 0.1, 0.2, 0.3, 0.4)])


@pytest.mark.parametrize("line, fragments", [
    ('{"path": "c.jpg", "labels": ["car"]}', ['line 3: no "objects", but line 1 has them']),
    ('{"path": "c.jpg", "labels": ["car", "sky"], "objects": [{"label": "car", "box": [0, 0, 1, 1]}]}',
     ["line 3: labels [car; sky] but objects of [car]: every label needs a box"]),
    ('{"path": "c.jpg", "labels": ["car"], "objects": [{"label": "car", "box": [0.5, 0, 0.2, 1]}]}',
     ["line 3: box [0.5, 0, 0.2, 1] of 'car' must be [top, left, bottom, right]"]),
    ('{"path": "c.jpg", "labels": ["car"], "objects": [{"label": "car", "box": [0, 0, 1]}]}',
     ['line 3: each of "objects" must be {"label": name, "box": [top, left, bottom, right]}']),
    ('{"path": "c.jpg", "labels": ["car"], "objects": {"car": [0, 0, 1, 1]}}', ['line 3: each of "objects"']),
], ids=["missing", "label-without-box", "upside-down", "three-numbers", "not-a-list"])
def test_jsonl_objects_errors(tmp_path, line, fragments):
    result, labels, out = _jsonl(tmp_path, [*BOXED[:2], line])
    assert_error(result, str(labels), *fragments)
    assert_nothing_written(out)
