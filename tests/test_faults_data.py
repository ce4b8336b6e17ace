"""Data faults end in one clean line: images TensorFlow cannot decode, corrupt or truncated TFRecord shards."""

import json
import re

import pytest
from click.testing import CliRunner

from cpsd_tf.cli import cli
from cpsd_tf.data import records
from helpers_images import image_bytes, write_image
from helpers_sources import assert_error, assert_nothing_written, assert_ok, coco_layout, nuswide_layout, read, run

# A PNG cut before its IEND chunk: Pillow loads it, TensorFlow's decoder (the one training uses) refuses it.
PNG = image_bytes("PNG", size=8, seed=7)
TRUNCATED_PNG = PNG[:-10]
GARBAGE = b"this is no JPEG at all"


@pytest.fixture(autouse=True)
def _fresh_shard_memory(monkeypatch):
    """Each test starts with no shard remembered, as each `cpsd-tf` process does."""
    monkeypatch.setattr(records, "_OPENED_SHARDS", {})


def _pillow_loads(data):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
    return True


def test_the_truncated_png_fools_pillow_but_not_tensorflow(tmp_path):
    """The premise of the converter tests below: only a TensorFlow decode catches this file."""
    from cpsd_tf.data.sources import why_invalid

    assert _pillow_loads(TRUNCATED_PNG)
    (tmp_path / "t.png").write_bytes(TRUNCATED_PNG)
    assert why_invalid(tmp_path / "t.png").startswith("not a decodable image (Invalid PNG data")


# === Converters: every image decoded by TensorFlow ===


def _csv_source(tmp_path):
    img_dir = tmp_path / "imgs"
    for name in ("a.jpg", "b.png", "c.jpg"):
        write_image(img_dir / name, seed=len(name))
    (img_dir / "t.png").write_bytes(TRUNCATED_PNG)
    (img_dir / "g.jpg").write_bytes(GARBAGE)
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,cat\nt.png,dog\nb.png,dog\ng.jpg,cat\nc.jpg,cat;dog\n")
    return ["csv", "--labels", labels, "--images", img_dir, "--split", "train"], "train", img_dir / "t.png"


def _coco_source(tmp_path):
    images = [
        {"id": i, "file_name": name}
        for i, name in enumerate(["a.jpg", "t.png", "b.png", "g.jpg", "c.jpg"], 1)
    ]
    annotations = [{"id": i, "image_id": i, "category_id": 1 + i % 3} for i in range(1, 6)]
    ann, img_dir = coco_layout(
        tmp_path, images=images, annotations=annotations, files={"t.png": TRUNCATED_PNG, "g.jpg": GARBAGE}
    )
    return ["coco", "--annotations", ann, "--images", img_dir], "train", img_dir / "t.png"


def _nuswide_source(tmp_path):
    root = nuswide_layout(
        tmp_path / "nus",
        train=[("x\\a.jpg", {"sky"}), ("x\\t.png", {"water"}), ("y\\b.png", {"sky"}), ("y\\g.jpg", {"animal"}),
               ("y\\c.jpg", {"sky"})],
    )
    (root / "Flickr" / "x" / "t.png").write_bytes(TRUNCATED_PNG)
    (root / "Flickr" / "y" / "g.jpg").write_bytes(GARBAGE)
    return ["nuswide", "--root", root], "train", root / "Flickr" / "x" / "t.png"


SOURCES = {"csv": _csv_source, "coco": _coco_source, "nuswide": _nuswide_source}


@pytest.mark.parametrize("source", SOURCES)
def test_undecodable_images_fail_naming_the_first_and_counting_the_others(tmp_path, source):
    args, split, bad = SOURCES[source](tmp_path)
    out = tmp_path / "data"
    result = run(*args, "--out", out)
    assert_error(result, str(bad), "not a decodable image (Invalid PNG data", f"1 other image of split '{split}'")
    assert "--skip-invalid" in result.stderr
    assert_nothing_written(out)


def test_no_decoder_chatter_reaches_stderr(tmp_path, capfd):
    """libjpeg and TF's C++ log write "Premature end of JPEG data" etc. to descriptor 2: not to the user.

    `capfd` captures descriptor 2 itself, where that chatter goes (CliRunner only sees Python's writes).
    """
    img_dir = tmp_path / "imgs"
    write_image(img_dir / "a.jpg")
    (img_dir / "cut.jpg").write_bytes(image_bytes("JPEG", size=32)[:-40])
    labels = tmp_path / "l.csv"
    labels.write_text("path,labels\na.jpg,cat\ncut.jpg,dog\n")
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", tmp_path / "out")
    assert_error(result, f"{labels}: line 3: image {img_dir / 'cut.jpg'}: not a decodable image (jpeg::Uncompress")
    assert "the only invalid image of split 'train'" in result.stderr
    captured = capfd.readouterr()
    assert "JPEG" not in captured.err, captured.err


@pytest.mark.parametrize("source", SOURCES)
def test_skip_invalid_drops_undecodable_images_with_one_warning(tmp_path, source):
    args, split, bad = SOURCES[source](tmp_path)
    out = tmp_path / "data"
    result = run(*args, "--out", out, "--skip-invalid")
    assert_ok(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"skipped 2 invalid images of split '{split}' (first: ")
    assert str(bad) in warnings[0]
    recs = read(out, split)
    ids = [r["id"].rsplit("/", 1)[-1] for r in recs]
    assert ids == ["a.jpg", "b.png", "c.jpg"]
    assert [r["index"] for r in recs] == [0, 1, 2]


def test_every_reason_is_named(tmp_path):
    from cpsd_tf.data.sources import why_invalid

    cases = {
        "missing.jpg": None,
        "empty.jpg": b"",
        "pic.bmp": image_bytes("BMP"),
        "g.jpg": GARBAGE,
        "t.png": TRUNCATED_PNG,
        "cut.jpg": image_bytes("JPEG", size=32)[:-40],
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    reasons = {name: why_invalid(tmp_path / name) for name in cases}
    assert reasons["missing.jpg"] == "no such file"
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["pic.bmp"] == "is BMP, not JPEG or PNG"
    assert reasons["g.jpg"] == "not a decodable image (unknown format)"
    assert reasons["t.png"].startswith("not a decodable image (Invalid PNG data")
    assert reasons["cut.jpg"].startswith("not a decodable image (jpeg::Uncompress failed")


# === Corrupt or truncated TFRecord shards ===

N_RECORDS = 6


def _dataset(tmp_path):
    """Two shards of 3 records each, every record the same size (so byte offsets are easy to aim at)."""
    out = tmp_path / "data"
    image = image_bytes("JPEG", size=8)
    recs = [records.Record(image=image, image_id=f"img{i}", labels=[i % 2]) for i in range(N_RECORDS)]
    records.write_split(out, "train", ["a", "b"], recs, examples_per_shard=3)
    shards = sorted(out.glob("train-*.tfrecord"))
    assert len(shards) == 2
    return out, shards


def _record_offsets(shard):
    """Byte offset of each record of a shard (a frame: 8-byte length, 4-byte CRC, the data, 4-byte CRC)."""
    data = shard.read_bytes()
    offsets, at = [], 0
    while at < len(data):
        offsets.append(at)
        at += 8 + 4 + int.from_bytes(data[at:at + 8], "little") + 4
    return offsets


def _truncate(shard, n_bytes):
    data = shard.read_bytes()
    shard.write_bytes(data[:-n_bytes])


def _flip(shard, offset):
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0xFF
    shard.write_bytes(bytes(data))


def _stats(out, tmp_path):
    return CliRunner().invoke(cli, ["stats", "--data", str(out), "--out", str(tmp_path / "stats.json")])


def test_truncated_shard_names_the_shard_and_record(tmp_path):
    out, shards = _dataset(tmp_path)
    _truncate(shards[1], 5)
    result = _stats(out, tmp_path)
    assert_error(result, str(shards[1]), "record 2 (counting from 0)", "truncated record at byte")
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "stats.json").exists()


def test_flipped_byte_names_the_shard_and_record(tmp_path):
    out, shards = _dataset(tmp_path)
    offsets = _record_offsets(shards[0])
    assert len(offsets) == 3
    _flip(shards[0], (offsets[1] + offsets[2]) // 2)  # inside record 1's data: its CRC no longer matches
    result = _stats(out, tmp_path)
    assert_error(result, str(shards[0]), "record 1 (counting from 0)", "corrupted record at byte ")
    byte = int(re.search(r"corrupted record at byte (\d+)", result.stderr)[1])
    assert offsets[1] <= byte < offsets[2]
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_locate_corruption_reads_the_shards_this_process_opened(tmp_path):
    out, shards = _dataset(tmp_path)
    assert records.locate_corruption(shards) is None
    _flip(shards[1], _record_offsets(shards[1])[2] + 20)
    assert records.opened_shards() == []
    assert records.locate_corruption() is None  # nothing opened yet: nothing to blame
    with pytest.raises(Exception) as info:
        records.read_labels(out, "train")
    assert type(info.value).__name__ == "DataLossError"
    assert records.opened_shards() == [str(s) for s in shards]
    shard, record_no, detail = records.locate_corruption()
    assert (shard, record_no) == (str(shards[1]), 2)
    assert detail.startswith("corrupted record at byte ")
    assert records.locate_corruption([shards[0]]) is None


def test_intact_shards_still_give_stats(tmp_path):
    """The fault handling must not get in the way of a good run."""
    out, _ = _dataset(tmp_path)
    result = _stats(out, tmp_path)
    assert_ok(result)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["class_counts"] == [3, 3]
