"""The bundled scenes benchmark: schema, determinism, glyph split, co-occurrence structure, CLI errors."""

import io
import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from cpsd_tf.cli import cli
from cpsd_tf.data import records, scenes
from cpsd_tf.data.scenes import ScenesConfig

TINY = ScenesConfig(train=40, val=20, test=20, image_size=32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "data"
    result = scenes.generate(out, TINY, seed=0)
    assert result["splits"] == {"train": 40, "val": 20, "test": 20, "test_ood": 20}
    return out


def _shard_bytes(data_dir):
    return {p.name: p.read_bytes() for p in sorted(Path(data_dir).glob("*.tfrecord"))}


def test_classes_and_scenes():
    assert len(scenes.CLASSES) >= 24
    assert len(set(scenes.CLASSES)) == len(scenes.CLASSES)
    flat = [c for scene in scenes.SCENES for c in scene]
    assert sorted(flat) == sorted(scenes.CLASSES)  # every class in exactly one scene
    assert len(scenes.SCENES) >= 6 and all(len(s) >= 4 for s in scenes.SCENES)


def test_records_read_back(tiny_dir):
    from PIL import Image

    info = records.load_info(tiny_dir)
    assert info.classes == scenes.CLASSES
    assert info.splits == {"train": 40, "val": 20, "test": 20, "test_ood": 20}
    meta = json.loads((tiny_dir / "dataset.json").read_text())
    assert meta["scenes"]["config"] == TINY.model_dump() and meta["scenes"]["seed"] == 0
    for split, n in info.splits.items():
        recs = list(records.iter_records(tiny_dir, split))
        assert [r["index"] for r in recs] == list(range(n))
        assert len({r["id"] for r in recs}) == n
        objects, _ = scenes.sample_objects(TINY, split, seed=0)
        assert [r["labels"] for r in recs] == [sorted(int(c) for c in o) for o in objects]
        for r in recs[:5]:
            img = Image.open(io.BytesIO(r["image"]))
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (32, 32)
            assert 2 <= len(r["labels"]) <= 5


def test_objects_per_image_and_label_count():
    config = ScenesConfig()
    for split in scenes.SPLITS:
        objects, _ = scenes.sample_objects(config, split, n=2000)
        counts = np.array([len(o) for o in objects])
        assert counts.min() == 2 and counts.max() == 5
        assert all(len(set(o.tolist())) == len(o) for o in objects)  # a label at most once per image
    objects, _ = scenes.sample_objects(ScenesConfig(objects_min=1, objects_max=1), "train", n=50)
    assert all(len(o) == 1 for o in objects)


def test_sample_objects_prefix_stable():
    a, _ = scenes.sample_objects(ScenesConfig(), "train", seed=3, n=50)
    b, _ = scenes.sample_objects(ScenesConfig(), "train", seed=3, n=500)
    assert all(np.array_equal(x, y) for x, y in zip(a, b[:50]))


def test_deterministic_for_a_seed(tiny_dir, tmp_path):
    scenes.generate(tmp_path / "same", TINY, seed=0)
    assert _shard_bytes(tmp_path / "same") == _shard_bytes(tiny_dir)
    assert (tmp_path / "same" / "stats.json").read_text() == (tiny_dir / "stats.json").read_text()
    scenes.generate(tmp_path / "other", TINY, seed=1)
    other = _shard_bytes(tmp_path / "other")
    assert other.keys() == _shard_bytes(tiny_dir).keys()
    assert all(other[k] != v for k, v in _shard_bytes(tiny_dir).items())


def test_glyph_pools_disjoint():
    from sklearn.datasets import load_digits

    target = load_digits().target
    pools = scenes.glyph_pools()
    train, test = set(pools["train"].tolist()), set(pools["test"].tolist())
    assert not train & test
    assert train | test == set(range(len(target)))
    for digit in range(10):
        assert (target[pools["test"]] == digit).sum() >= 40
        assert (target[pools["train"]] == digit).sum() >= 100
    # train and val render from the train pool, test and test_ood from the test pool
    assert {scenes.SPLITS[s][1] for s in ("train", "val")} == {"train"}
    assert {scenes.SPLITS[s][1] for s in ("test", "test_ood")} == {"test"}
    for digit, rows in enumerate(scenes._pool_by_digit("test")):
        assert set(rows.tolist()) <= test and (target[rows] == digit).all()


def _in_scene_pair_fraction(objects):
    scene_of = {c: s for s, row in enumerate(scenes.scene_class_indices()) for c in row.tolist()}
    pairs = [(a, b) for o in objects for a, b in combinations(o.tolist(), 2)]
    return np.mean([scene_of[a] == scene_of[b] for a, b in pairs])


def test_cooccurrence_in_context_vs_ood():
    config = ScenesConfig()
    train, scene_train = scenes.sample_objects(config, "train", n=3000)
    test, _ = scenes.sample_objects(config, "test", n=3000)
    ood, scene_ood = scenes.sample_objects(config, "test_ood", n=3000)
    assert (scene_ood == -1).all()
    assert abs((scene_train >= 0).mean() - config.p_ctx) < 0.02
    f_train, f_test, f_ood = map(_in_scene_pair_fraction, (train, test, ood))
    assert f_train > 0.85 and abs(f_train - f_test) < 0.03
    assert f_ood < 0.25  # chance level: 4 of the 29 other classes share a scene
    # every class still appears in test_ood, so its mAP covers all classes
    assert scenes.multi_hot(ood).sum(axis=0).min() > 100


def test_p_ctx_extremes():
    all_ctx, scene = scenes.sample_objects(ScenesConfig(p_ctx=1.0), "train", n=300)
    assert (scene >= 0).all() and _in_scene_pair_fraction(all_ctx) == 1.0
    _, scene = scenes.sample_objects(ScenesConfig(p_ctx=0.0), "val", n=300)
    assert (scene == -1).all()


def test_stats_json_matches_records(tiny_dir):
    stats = json.loads((tiny_dir / "stats.json").read_text())
    _, y = records.read_labels(tiny_dir, "train")
    assert stats["classes"] == scenes.CLASSES
    assert stats["num_images"] == 40
    assert stats["class_counts"] == y.sum(axis=0).tolist()
    co = y.astype(np.int64).T @ y.astype(np.int64)
    np.fill_diagonal(co, 0)
    assert stats["cooccurrence"] == co.tolist()


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValidationError, match="p_ctxx"):
        ScenesConfig(p_ctxx=0.9)
    with pytest.raises(ValidationError, match="occluders_min"):
        ScenesConfig(occluders_min=5, occluders_max=4)
    with pytest.raises(ValidationError):
        TINY.model_copy().__setattr__("train", 3)  # frozen


def test_scenes_module_does_not_import_tensorflow():
    code = "import sys, cpsd_tf.data.scenes; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_generates(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli, ["data", "scenes", "--out", str(out), "--train", "12", "--val", "6", "--test", "6", "--image-size", "24"]
    )
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.stdout and "train 12" in result.stdout and " s" in result.stdout
    assert records.load_info(out).splits == {"train": 12, "val": 6, "test": 6, "test_ood": 6}
    assert (out / "stats.json").is_file()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--p-ctx", "1.5"], "--p-ctx: Input should be less than or equal to 1, received 1.5"),
        (["--train", "0"], "--train: Input should be greater than or equal to 1, received 0"),
        (["--objects-min", "4", "--objects-max", "3"], "--objects-min (4) must be <= --objects-max (3)"),
        (["--objects-max", "6"], "--objects-max"),
        (["--image-size", "8"], "--image-size"),
        (["--seed", "-1"], "--seed: must be >= 0, received -1"),
    ],
)
def test_cli_bad_knobs(tmp_path, args, expected):
    result = CliRunner().invoke(cli, ["data", "scenes", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_render_with_boxes_puts_each_object_in_its_box():
    config = scenes.ScenesConfig(image_size=32, occluders_min=0, occluders_max=0)
    red, blue = scenes.CLASSES.index("red-1"), scenes.CLASSES.index("blue-8")
    pixels, boxes = scenes.render_with_boxes(config, [[red, blue]] * 4, seed=3)
    assert pixels.shape == (4, 32, 32, 3) and pixels.dtype == np.uint8
    for image, per_image in zip(pixels.astype(int), boxes):
        for channel, (top, left, side) in zip((0, 2), per_image):  # red glyph, then blue glyph
            others = [c for c in range(3) if c != channel]
            strong = (image[..., channel] - image[..., others].max(-1)) > 100
            inside = np.zeros_like(strong)
            inside[top : top + side, left : left + side] = True
            assert strong[inside].any() and not strong[~inside].any()


# === Single-object pretraining splits ===

# Pixels and labels of TINY's scene splits (seed 0) as rendered before the single-object splits existed
# (sha256 of the decoded pixels and [id, labels] of every image, first 16 hex digits).
GOLDEN = {"train": "1dfa39ac7996b1c8", "val": "5462965f1cf6f0fb", "test": "122de5bf017b25de", "test_ood": "b353c27e76b5ef51"}
SINGLE = ScenesConfig(train=40, val=20, test=20, image_size=32, single=64, single_val=24)


def _split_digest(config, split, seed=0):
    import hashlib

    from PIL import Image

    h = hashlib.sha256()
    for png, image_id, labels in scenes.render_split(config, split, seed=seed):
        h.update(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).tobytes())
        h.update(json.dumps([image_id, labels]).encode())
    return h.hexdigest()[:16]


def test_scene_splits_unchanged_by_the_single_splits(tiny_dir, tmp_path):
    assert TINY.single == 0 and TINY.splits() == ["train", "val", "test", "test_ood"]
    for split, digest in GOLDEN.items():
        assert _split_digest(TINY, split) == digest, split  # same images as before the field existed
        assert _split_digest(SINGLE, split) == digest, split  # and whatever `single` is
    # generated with the single splits, the scene splits' shards and stats are byte-identical
    result = scenes.generate(tmp_path / "with", SINGLE, seed=0)
    assert result["splits"] == {"train": 40, "val": 20, "test": 20, "test_ood": 20, "single": 64, "single_val": 24}
    with_single = _shard_bytes(tmp_path / "with")
    assert {k: v for k, v in with_single.items() if not k.startswith("single")} == _shard_bytes(tiny_dir)
    assert (tmp_path / "with" / "stats.json").read_text() == (tiny_dir / "stats.json").read_text()
    # a split's records do not depend on which other splits are written
    scenes.generate(tmp_path / "only", SINGLE, seed=0, splits=["single_val", "single"])
    only = _shard_bytes(tmp_path / "only")
    assert only == {k: v for k, v in with_single.items() if k.startswith("single")}
    assert records.load_info(tmp_path / "only").splits == {"single_val": 24, "single": 64}


def _grey_blocks(image):
    """Whether a 2x2 block of one flat grey value (an occluder's signature) is in uint8 [S, S, 3]."""
    flat = (image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2])
    v = image[..., 0]
    same = (v[:-1, :-1] == v[1:, :-1]) & (v[:-1, :-1] == v[:-1, 1:]) & (v[:-1, :-1] == v[1:, 1:])
    return bool((same & flat[:-1, :-1] & flat[1:, :-1] & flat[:-1, 1:] & flat[1:, 1:]).any())


def test_single_split_has_one_object_with_its_label(tmp_path):
    from PIL import Image

    scenes.generate(tmp_path / "d", SINGLE, seed=0, splits=["single"])
    recs = list(records.iter_records(tmp_path / "d", "single"))
    pixels, objects, boxes = scenes.split_pixels(SINGLE, "single", seed=0)
    assert len(recs) == len(pixels) == 64
    colour_channel = {"red": 0, "green": 1, "blue": 2}
    for r, image, obj, box in zip(recs, pixels, objects, boxes):
        assert len(obj) == 1 and len(box) == 1 and r["labels"] == [int(obj[0])]
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB")), image)
        # the glyph in the box has the label's colour: that channel dominates the others most there
        top, left, side = box[0]
        patch = image[top : top + side, left : left + side].astype(int)
        dominance = [(patch[..., c] - np.delete(patch, c, axis=-1).max(-1)).max() for c in range(3)]
        channel = colour_channel[scenes.CLASSES[r["labels"][0]].split("-")[0]]
        assert int(np.argmax(dominance)) == channel and dominance[channel] > 60
        assert not _grey_blocks(image)  # no occluder
    # the detector does find occluders where there are some
    occluded = SINGLE.model_copy(update={"occluders_min": 2, "occluders_max": 2})
    assert all(_grey_blocks(im) for im in scenes.split_pixels(occluded, "train", seed=0)[0])
    # labels: every class can occur, drawn without scenes; never a train image
    labels = [int(o[0]) for o in scenes.sample_objects(ScenesConfig(single=3000), "single")[0]]
    counts = np.bincount(labels, minlength=len(scenes.CLASSES))
    assert counts.min() > 60 and counts.max() < 140
    train = scenes.split_pixels(SINGLE, "train", seed=0)[0]
    assert not any((train == im).all(axis=(1, 2, 3)).any() for im in pixels)
    val = scenes.split_pixels(SINGLE, "single_val", seed=0)[0]
    assert not (val[: len(pixels)] == pixels[: len(val)]).all(axis=(1, 2, 3)).any()


def test_single_split_needs_a_size(tmp_path):
    from cpsd_tf.errors import UserError

    with pytest.raises(UserError, match=r"split\(s\) \['single'\] would be empty"):
        scenes.generate(tmp_path / "x", TINY, seed=0, splits=["single"])
    with pytest.raises(UserError, match="unknown split"):
        scenes.generate(tmp_path / "x", TINY, seed=0, splits=["tran"])
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValidationError, match="single"):
        ScenesConfig(single=-1)


def test_cli_single(tmp_path):
    out = tmp_path / "cli"
    args = ["data", "scenes", "--out", str(out), "--train", "8", "--val", "4", "--test", "4", "--image-size", "24",
            "--single", "10", "--single-val", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "single 10, single_val 5" in result.stdout
    assert records.load_info(out).splits == {"train": 8, "val": 4, "test": 4, "test_ood": 4, "single": 10, "single_val": 5}
    bad = CliRunner().invoke(cli, ["data", "scenes", "--out", str(tmp_path / "y"), "--single", "-3"])
    assert bad.exit_code == 2 and "--single: Input should be greater than or equal to 0, received -3" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "y").exists()
