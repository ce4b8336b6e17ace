"""The TFRecord schema, sharding and atomic writes of `cpsd_tf.data.records`."""

import io as _io
import json

import numpy as np
import pytest
from PIL import Image

from cpsd_tf.data import records
from cpsd_tf.errors import UserError


def _png(value):
    buf = _io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _recs(n, m=3):
    return [records.Record(image=_png(i), image_id=f"img{i}.png", labels=[i % m, (i + 1) % m]) for i in range(n)]


def test_write_and_read_back(tmp_path):
    n = records.write_split(tmp_path, "train", ["a", "b", "c"], _recs(7), examples_per_shard=3)
    assert n == 7
    assert sorted(p.name for p in tmp_path.glob("*.tfrecord")) == [
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
    ]
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta == {"classes": ["a", "b", "c"], "splits": {"train": 7}}
    got = list(records.iter_records(tmp_path, "train"))
    assert [r["index"] for r in got] == list(range(7))
    assert [r["id"] for r in got] == [f"img{i}.png" for i in range(7)]
    assert got[4]["labels"] == [1, 2]
    assert np.asarray(Image.open(_io.BytesIO(got[5]["image"])))[0, 0, 0] == 5
    index, y = records.read_labels(tmp_path, "train")
    assert y.shape == (7, 3) and y[4].tolist() == [0, 1, 1] and index.tolist() == list(range(7))


def test_empty_labels_round_trip(tmp_path):
    recs = [records.Record(image=_png(1), image_id="x", labels=[])]
    records.write_split(tmp_path, "val", ["a"], recs)
    (got,) = records.iter_records(tmp_path, "val")
    assert got["labels"] == []


def test_failure_leaves_nothing(tmp_path):
    def bad():
        yield from _recs(3)
        raise UserError("labels.csv: line 4: unknown class 'zebra'")

    with pytest.raises(UserError, match="zebra"):
        records.write_split(tmp_path / "out", "train", ["a", "b", "c"], bad())
    assert not (tmp_path / "out").exists()


def test_empty_split_is_an_error(tmp_path):
    with pytest.raises(UserError, match="empty"):
        records.write_split(tmp_path, "train", ["a"], [])
    assert not (tmp_path / "dataset.json").exists()


def test_label_out_of_range(tmp_path):
    recs = [records.Record(image=_png(1), image_id="x.png", labels=[3])]
    with pytest.raises(UserError, match=r"x\.png.*out of range 0\.\.2"):
        records.write_split(tmp_path, "train", ["a", "b", "c"], recs)


def test_second_split_needs_same_classes(tmp_path):
    records.write_split(tmp_path, "train", ["a", "b", "c"], _recs(2))
    records.write_split(tmp_path, "test", ["a", "b", "c"], _recs(3))
    assert records.load_info(tmp_path).splits == {"train": 2, "test": 3}
    with pytest.raises(UserError, match="same class list"):
        records.write_split(tmp_path, "val", ["a", "b"], _recs(2, m=2))
    # Rewriting a split replaces its shards.
    records.write_split(tmp_path, "train", ["a", "b", "c"], _recs(5), examples_per_shard=2)
    assert len(records.shard_paths(tmp_path, "train")) == 3
    assert records.load_info(tmp_path).splits["train"] == 5


def test_unknown_split_and_missing_folder(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        records.load_info(tmp_path)
    records.write_split(tmp_path, "train", ["a"], [records.Record(_png(0), "x", [0])])
    with pytest.raises(UserError, match="no split 'test'"):
        records.shard_paths(tmp_path, "test")
