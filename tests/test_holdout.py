"""`--holdout`: a model-selection split drawn from the converted one, written with it or not at all."""


import pytest

from cpsd_tf.data import records
from helpers_sources import (
    assert_error,
    assert_nothing_written,
    assert_ok,
    coco_layout,
    images_in,
    nuswide_layout,
    read,
    run,
)


# === --holdout: a model-selection split drawn from the converted one ===


def _ids(out, split):
    return [r["id"] for r in read(out, split)]


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
        assert [r["index"] for r in read(out, split)] == list(range(len(_ids(out, split))))
    return held


def _coco_many(tmp_path, n=10):
    """A COCO file with `n` annotated images (and one unannotated, id 999); return (annotations, images, ids)."""
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in range(1, n + 1)]
    images.append({"id": 999, "file_name": "COCO_train2014_000000000999.jpg"})
    anns = [{"id": i, "image_id": i, "category_id": 1 + i % 3} for i in range(1, n + 1)]
    ann, img_dir = coco_layout(tmp_path, images=images, annotations=anns)
    return ann, img_dir, [img["file_name"] for img in images[:n]]


def test_coco_holdout_splits_the_annotated_images(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path)
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--split", "train", "--out", out, "--holdout", 4)
    assert_ok(result)
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
    by_id = {r["id"]: r["labels"] for split in ("train", "val") for r in read(out, split)}
    assert by_id["COCO_train2014_000000000003.jpg"] == [2]  # category 1 = person, labels kept per image


def test_coco_holdout_with_keep_empty_draws_from_all_images(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path, n=5)
    out = tmp_path / "data"
    assert_ok(run(
        "coco", "--annotations", ann, "--images", img_dir, "--out", out, "--keep-empty",
        "--holdout", 5, "--holdout-split", "minival",
    ))
    _assert_holdout(out, "train", "minival", ids + ["COCO_train2014_000000000999.jpg"], 5)


def test_holdout_is_deterministic_for_a_seed(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path)
    held = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        assert_ok(run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--holdout", 5, "--seed", seed))
        held[name] = _assert_holdout(out, "train", "val", ids, 5)
    assert held["a"] == held["b"]
    assert held["a"] != held["c"]
    # --seed 0 is the default.
    for name, extra in (("d", []), ("e", ["--seed", 0])):
        assert_ok(run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / name, "--holdout", 5, *extra))
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
    ann, img_dir = coco_layout(tmp_path)  # 3 annotated images
    out = tmp_path / "data"
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", out, *args)
    assert_error(result, *fragments)
    assert_nothing_written(out)


def test_coco_holdout_names_the_annotations_file(tmp_path):
    ann, img_dir = coco_layout(tmp_path)
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", tmp_path / "data", "--holdout", 3)
    assert_error(result, str(ann))


def test_coco_holdout_failure_keeps_the_existing_dataset(tmp_path):
    """A bad image in either part leaves neither split written, and an earlier conversion intact."""
    ann, img_dir, ids = _coco_many(tmp_path)
    out = tmp_path / "data"
    assert_ok(run("coco", "--annotations", ann, "--images", img_dir, "--out", out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (img_dir / ids[-1]).write_bytes(b"junk")  # the last image: the writer has started by then
    result = run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--holdout", 4)
    assert_error(result, "image id 10", "not a decodable image")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert records.load_info(out).splits == {"train": 10}


def test_coco_holdout_failure_in_a_new_folder_writes_nothing(tmp_path):
    ann, img_dir, ids = _coco_many(tmp_path)
    (img_dir / ids[0]).write_bytes(b"junk")
    out = tmp_path / "new" / "data"
    assert_error(run("coco", "--annotations", ann, "--images", img_dir, "--out", out, "--holdout", 4), "image id 1")
    assert not out.exists()


def test_nuswide_holdout_from_train_leaves_test_intact(tmp_path):
    train = [(f"actor\\{i:04d}_{i}.jpg", {"sky"} if i % 2 else {"water"}) for i in range(1, 8)]
    root = nuswide_layout(tmp_path / "NUS-WIDE", train=train)
    plain, out = tmp_path / "plain", tmp_path / "data"
    assert_ok(run("nuswide", "--root", root, "--out", plain))
    result = run("nuswide", "--root", root, "--out", out, "--holdout", 3, "--seed", 7)
    assert_ok(result)
    assert [line for line in result.stdout.splitlines() if line.startswith("Wrote")] == [
        f"Wrote 4 images of split 'train' (3 classes) to {out}",
        f"Wrote 3 images of split 'val' (3 classes) to {out}",
        f"Wrote 2 images of split 'test' (3 classes) to {out}",
    ]
    assert records.load_info(out).splits == {"train": 4, "val": 3, "test": 2}
    _assert_holdout(out, "train", "val", _ids(plain, "train"), 3)
    assert read(out, "test") == read(plain, "test")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--holdout", 2], ["--holdout 2", "less than the 2 images of split 'train'", "TrainImagelist.txt"]),
        (["--holdout", 1, "--holdout-split", "test"], ["--holdout-split 'test' must differ", "'train' and 'test'"]),
        (["--holdout", 1, "--holdout-split", "train"], ["--holdout-split 'train' must differ"]),
    ],
    ids=["all", "test", "train"],
)
def test_nuswide_holdout_bad_values(tmp_path, args, fragments):
    root = nuswide_layout(tmp_path / "NUS-WIDE")
    out = tmp_path / "data"
    assert_error(run("nuswide", "--root", root, "--out", out, *args), *fragments)
    assert_nothing_written(out)


def test_csv_holdout(tmp_path):
    names = [f"img{i}.jpg" for i in range(8)]
    img_dir = images_in(tmp_path / "imgs", names)
    labels = tmp_path / "all.csv"
    labels.write_text("path,labels\n" + "".join(f"{n},{'cat' if i % 2 else 'dog'}\n" for i, n in enumerate(names)))
    out = tmp_path / "data"
    result = run(
        "csv", "--labels", labels, "--images", img_dir, "--split", "trainval", "--out", out,
        "--holdout", 2, "--holdout-split", "val", "--seed", 1,
    )
    assert_ok(result)
    assert f"Wrote 6 images of split 'trainval' (2 classes) to {out}" in result.stdout
    assert f"Wrote 2 images of split 'val' (2 classes) to {out}" in result.stdout
    _assert_holdout(out, "trainval", "val", names, 2)
    for r in read(out, "trainval") + read(out, "val"):
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
    img_dir = images_in(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "one.csv"
    labels.write_text("path,labels\na.jpg,cat\n")
    out = tmp_path / "data"
    result = run("csv", "--labels", labels, "--images", img_dir, "--split", "train", "--out", out, *args)
    assert_error(result, *fragments)
    assert_nothing_written(out)
