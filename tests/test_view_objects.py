"""Mixed views labelled by object (`views.labels: objects`): the objects file `cpsd-tf data scenes` writes,
the boxes following each view's flip and translation through the pipeline, and the label rule checked by
counting the pixels each object keeps in the mixed view."""

import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cpsd_tf import recipe, views
from cpsd_tf.cli import cli
from cpsd_tf.data import augment as aug
from cpsd_tf.data import boxes
from cpsd_tf.data import objects as objects_file
from cpsd_tf.data import pipeline, records, scenes
from cpsd_tf.data.augment_config import AugmentConfig
from cpsd_tf.errors import UserError

from helpers_recipes import write_tiny_recipe

S = 32


def test_view_geometry_is_the_augmentation_s_own():
    """A white square, augmented: its pixels are exactly the moved box (mirror copies only add pixels)."""
    cfg = AugmentConfig(flip=True, translate=0.2)
    flips = set()
    for t in range(60):
        top, left, bottom, right = 3 + t % 7, 10, 20, 17 + t % 9
        image = np.zeros((S, S, 3), np.float32)
        image[top:bottom, left:right] = 1.0
        seed = tf.constant([t, 99], tf.int64)
        out = aug.augment_image(tf.constant(image), seed, cfg).numpy()[..., 0] > 0.5
        flipped, dy, dx = boxes.view_geometry(seed, cfg, S)
        flips.add(bool(flipped))
        t0, l0, b0, r0 = (int(v) for v in boxes.move_boxes(tf.constant([top, left, bottom, right], tf.float32),
                                                          flipped, dy, dx, S).numpy())
        expected = np.zeros((S, S), bool)
        expected[max(t0, 0):max(b0, 0), max(l0, 0):max(r0, 0)] = True
        assert (out & expected).sum() == expected.sum() > 0, t
        inner = np.zeros((S, S), bool)  # away from the edges no mirror copy can appear
        inner[S // 2 - 4:S // 2 + 4, S // 2 - 4:S // 2 + 4] = True
        assert not (out & ~expected & inner).any(), t
    assert flips == {True, False}


@pytest.mark.parametrize("op", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"])
def test_boxes_follow_randaugment(op):
    """A white square through flip, translate and one RandAugment op: its white pixels fill the moved box
    (for a rotation, the box around the rotated square) to within a pixel of bilinear edge."""
    cfg = AugmentConfig(flip=True, translate=0.1, randaugment={"num_ops": 1, "magnitude": 9, "ops": [op, "identity"]})
    moved = 0
    for t in range(24):
        top, left, side = 10 + t % 3, 11 + t % 4, 8 + t % 3
        image = np.zeros((S, S, 3), np.float32)
        image[top:top + side, left:left + side] = 1.0
        seed = tf.constant([t, 5], tf.int64)
        white = np.argwhere(aug.augment_image(tf.constant(image), seed, cfg).numpy()[..., 0] > 0.75)
        box = boxes.view_boxes(tf.constant([[top, left, top + side, left + side]], tf.float32), seed, cfg, S)
        box = np.clip(box.numpy()[0], 0, S)
        plain = boxes.move_boxes(tf.constant([top, left, top + side, left + side], tf.float32),
                               *boxes.view_geometry(seed, cfg, S), S).numpy()
        moved += not np.allclose(np.clip(plain, 0, S), box)
        np.testing.assert_allclose([*white.min(0), *(white.max(0) + 1)], box, atol=1.5, err_msg=f"{op}, seed {t}")
    assert moved >= 6  # the op was drawn (and moved the square) for a good share of the seeds


def test_boxes_through_two_ops_hold_the_object():
    """Two ops in a row: the box around a box, larger than the object but never cutting it."""
    ops = ["rotate", "shear_x", "shear_y", "translate_x", "translate_y", "color"]
    cfg = AugmentConfig(flip=True, randaugment={"num_ops": 2, "magnitude": 9, "ops": ops})
    for t in range(24):
        image = np.zeros((S, S, 3), np.float32)
        image[11:20, 12:21] = 1.0
        seed = tf.constant([t, 8], tf.int64)
        white = np.argwhere(aug.augment_image(tf.constant(image), seed, cfg).numpy()[..., 0] > 0.75)
        t0, l0, b0, r0 = boxes.view_boxes(tf.constant([[11.0, 12.0, 20.0, 21.0]]), seed, cfg, S).numpy()[0]
        if len(white):
            assert white[:, 0].min() >= t0 - 1 and white[:, 1].min() >= l0 - 1, t
            assert white[:, 0].max() + 1 <= b0 + 1 and white[:, 1].max() + 1 <= r0 + 1, t


def _painted_batch(b=8, m=6, k=3, seed=0):
    """Images whose every pixel is its image's number (1..b); 2-3 objects per image with boxes and labels."""
    rng = np.random.default_rng(seed)
    images = np.broadcast_to(np.arange(1, b + 1, dtype=np.float32)[:, None, None, None], (b, S, S, 3)).copy()
    objects = np.full((b, k, 5), -1.0, np.float32)
    labels = np.zeros((b, m), np.float32)
    for i in range(b):
        for j in range(int(rng.integers(2, k + 1))):
            c, side = int(rng.integers(m)), int(rng.integers(5, 13))
            y, x = (int(v) for v in rng.integers(-3, S - side + 3, size=2))  # some boxes stick out of the frame
            objects[i, j] = [c, y, x, y + side, x + side]
            labels[i, c] = 1.0
    return images, objects, labels


def _labels_by_pixels(mixed, objects, m, min_visible):
    """The rule recomputed from the mixed pixels: an object of image j is a positive of view i when at least
    `min_visible` of its in-frame box shows image j's pixels in view i."""
    out = np.zeros((len(mixed), m), np.float32)
    for i, view in enumerate(mixed[..., 0]):
        for j, rows in enumerate(objects):
            for c, y0, x0, y1, x1 in rows:
                if c < 0:
                    continue
                y0, x0, y1, x1 = (int(np.clip(v, 0, S)) for v in (y0, x0, y1, x1))
                area = (y1 - y0) * (x1 - x0)
                if area and (view[y0:y1, x0:x1] == j + 1).sum() >= min_visible * area:
                    out[i, int(c)] = 1.0
    return out


@pytest.mark.parametrize("kind", ["cutmix", "mosaic"])
def test_object_labels_match_the_pixels_each_object_keeps(kind):
    images, objects, labels = _painted_batch()
    for step in range(12):
        for min_visible, prob in ((0.5, 1.0), (0.25, 1.0), (0.9, 0.5)):
            mixed, out = views.mix_batch(tf.constant(images), tf.constant(labels), views.step_seed(1, step), kind,
                                         prob=prob, objects=tf.constant(objects), min_visible=min_visible)
            expected = _labels_by_pixels(mixed.numpy(), objects, labels.shape[1], min_visible)
            np.testing.assert_array_equal(out.numpy(), expected)


def test_unmixed_views_keep_their_labels_and_mixup_keeps_the_share_rule():
    images, objects, labels = _painted_batch()
    for kind in ("cutmix", "mosaic"):
        _, out = views.mix_batch(tf.constant(images), tf.constant(labels), views.step_seed(0, 0), kind, prob=0.0,
                                 objects=tf.constant(objects))
        np.testing.assert_array_equal(out.numpy(), labels)
    by_share = views.mix_batch(tf.constant(images), tf.constant(labels), views.step_seed(0, 3), "mixup")
    by_object = views.mix_batch(tf.constant(images), tf.constant(labels), views.step_seed(0, 3), "mixup",
                                objects=tf.constant(objects))
    np.testing.assert_array_equal(by_share[1].numpy(), by_object[1].numpy())


def _square_records(tmp_path, n=12):
    """A data set whose image i holds one white square on black, and its objects file."""
    rng = np.random.default_rng(0)
    recs, where = [], []
    for i in range(n):
        side = int(rng.integers(6, 11))
        y, x = (int(v) for v in rng.integers(4, S - side - 4, size=2))
        pixels = np.zeros((S, S, 3), np.uint8)
        pixels[y:y + side, x:x + side] = 255
        recs.append(records.Record(image=scenes._encode_png(pixels), image_id=f"sq{i}", labels=[i % 3]))
        where.append([(i % 3, y / S, x / S, (y + side) / S, (x + side) / S)])
    records.write_split(tmp_path, "train", ["a", "b", "c"], iter(recs), total=n)
    objects_file.write(tmp_path, "train", where)
    return tmp_path


# RandAugment's shifts at magnitude 2 (3 pixels each): whole-pixel moves, so the boxes are exact
SHIFTS = {"num_ops": 2, "magnitude": 2, "ops": ["translate_x", "translate_y", "identity"]}


@pytest.mark.parametrize("cache, randaugment", [(False, None), (True, None), (False, SHIFTS)])
def test_pipeline_boxes_follow_each_view(tmp_path, cache, randaugment):
    data = _square_records(tmp_path)
    ds = pipeline.build(data, "train", image_size=S, batch_size=4, training=True, repeat=True, cache=cache,
                        augment=AugmentConfig(flip=True, translate=0.1, randaugment=randaugment), with_objects=True,
                        seed=3)
    for features, y in ds.take(6):
        for image, rows, labels in zip(features["image"].numpy(), features["objects"].numpy(), y.numpy()):
            c, t, l, b, r = rows[0]
            assert labels[int(c)] == 1
            white = np.argwhere(image[..., 0] > 0.5)
            np.testing.assert_array_equal(white.min(0), np.clip([t, l], 0, S))
            np.testing.assert_array_equal(white.max(0) + 1, np.clip([b, r], 0, S))


def test_objects_file_refusals(tmp_path):
    data = _square_records(tmp_path)
    with pytest.raises(UserError, match="crop moves objects"):
        pipeline.build(data, "train", image_size=S, batch_size=4, training=True, with_objects=True,
                       augment=AugmentConfig(crop={}))
    objects_file.path(data, "train").write_bytes(b"not npz")
    with pytest.raises(UserError, match=r"train\.objects\.npz: not a readable objects file"):
        objects_file.table(data, "train")
    objects_file.write(data, "train", [[(0, 0.1, 0.1, 0.2, 0.2)]])  # one row for 12 records
    with pytest.raises(UserError, match=r"objects of shape \[1, 1, 5\], expected \[12, K, 5\]"):
        objects_file.table(data, "train")
    objects_file.path(data, "train").unlink()
    with pytest.raises(UserError, match="not found.*use views.labels: area"):
        objects_file.table(data, "train")


def test_scenes_objects_file_matches_the_labels_and_the_glyphs(tmp_path):
    config = scenes.ScenesConfig(train=40, val=8, test=8, image_size=S)
    scenes.generate(tmp_path, config, seed=2, splits=["train"])
    table = objects_file.table(tmp_path, "train")
    _, labels = pipeline.labels_matrix(tmp_path, "train")
    pixels, objects, glyph_boxes = scenes.split_pixels(config, "train", seed=2)
    for i in range(len(table)):
        rows = table[i][table[i, :, 0] >= 0]
        hot = np.zeros(labels.shape[1])
        hot[rows[:, 0].astype(int)] = 1
        np.testing.assert_array_equal(hot, labels[i])
        np.testing.assert_allclose(rows[:, 1:] * S, [(y, x, y + s, x + s) for y, x, s in glyph_boxes[i]])


def test_recipe_keys_and_refusal(tmp_path):
    path = write_tiny_recipe(tmp_path, baseline={"views": {"kind": "cutmix", "labels": "objects"}})
    r = recipe.load(path)
    assert r.baseline.views.labels == "objects" and r.baseline.views.min_visible == 0.5
    assert views.by_object(r.baseline.views) and not views.by_object(r.distill.views)
    with pytest.raises(UserError, match=r"data.augment.crop moves objects.*set data.augment.crop: null"):
        recipe.load(path, ["data.augment.crop={}"])
    assert recipe.load(path, ["data.augment.randaugment={}"]).data.augment.randaugment is not None
    with pytest.raises(UserError, match="min_visible"):
        recipe.load(path, ["baseline.views.min_visible=0"])


def test_baseline_stage_with_object_labels(tmp_path):
    path = write_tiny_recipe(tmp_path, baseline={"views": {"kind": "mosaic", "labels": "objects"}})
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "build", "--recipe", str(path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "train.objects.npz").is_file()
    # the official augmentation's RandAugment (rotate, shear, translate): the boxes follow it
    official = ["--set", "data.augment.randaugment={num_ops: 2, magnitude: 9}"]
    result = runner.invoke(cli, ["baseline", "--recipe", str(path), *official])
    assert result.exit_code == 0, result.output
    values = json.loads((tmp_path / "run" / "baseline" / "provenance.json").read_text())["values"]
    assert values["baseline.views.labels"] == "objects"
    (tmp_path / "data" / "train.objects.npz").unlink()
    result = runner.invoke(cli, ["baseline", "--recipe", str(path), "--force", *official])
    assert result.exit_code == 2 and "train.objects.npz: not found" in result.output


def test_a_teacher_s_mixer_labels_its_own_columns():
    """Subset [4, 1]: objects of class 4 -> column 0, of class 1 -> column 1, any other class -> no label."""
    from cpsd_tf.recipe import ViewsConfig

    images, objects, _ = _painted_batch(m=6)
    subset = [4, 1]
    mix = views.mixer(ViewsConfig(kind="cutmix", labels="objects", prob=0.0), 0, subset)
    _, out = mix(tf.constant(images), tf.zeros([len(images), 2]), tf.constant(0, tf.int64), tf.constant(objects))
    expected = np.zeros((len(images), 2), np.float32)
    for i, rows in enumerate(objects):
        for c in rows[:, 0]:
            if c in subset:
                expected[i, subset.index(int(c))] = 1.0
    assert expected.sum() > 0 and expected.sum() < (objects[:, :, 0] >= 0).sum()
    np.testing.assert_array_equal(out.numpy(), expected)
    mix = views.mixer(ViewsConfig(kind="mosaic", labels="objects"), 0, subset)
    full = views.mixer(ViewsConfig(kind="mosaic", labels="objects"), 0)
    step = tf.constant(5, tf.int64)
    _, part = mix(tf.constant(images), tf.zeros([len(images), 2]), step, tf.constant(objects))
    _, whole = full(tf.constant(images), tf.zeros([len(images), 6]), step, tf.constant(objects))
    np.testing.assert_array_equal(part.numpy(), whole.numpy()[:, subset])  # the same view, the teacher's columns


def test_teachers_stage_with_views(tmp_path):
    path = write_tiny_recipe(tmp_path, teachers={"views": {"kind": "cutmix", "labels": "objects"}})
    runner = CliRunner()
    for verb in ("data", "partition", "teachers"):
        args = ["data", "build"] if verb == "data" else [verb]
        result = runner.invoke(cli, [*args, "--recipe", str(path), *(["--only", "cgp-0"] if verb == "teachers" else [])])
        assert result.exit_code == 0, result.output
    assert "cutmix views" in result.output
    values = json.loads((tmp_path / "run" / "teachers" / "cgp-0" / "provenance.json").read_text())["values"]
    assert values["teachers.views.kind"] == "cutmix" and values["teachers.views.labels"] == "objects"
