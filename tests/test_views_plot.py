"""`cpsd-tf data views`: one training batch as a model sees it, drawn with its labels."""

import numpy as np
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from cpsd_tf import recipe, views, views_plot
from cpsd_tf.cli import cli
from cpsd_tf.data import pipeline, prepare
from helpers_recipes import write_tiny_recipe

CUTMIX = {"views": {"kind": "cutmix", "labels": "objects"}}


def test_the_batch_is_the_training_step_s(tmp_path):
    """The drawn views and labels are the mixer's on the pipeline's first training batch at that step."""
    r = recipe.load(write_tiny_recipe(tmp_path, distill=CUTMIX))
    prepare.run(r)
    images, after, before, outlines = views_plot.batch(r, "distill", count=8, step=5)
    ds = pipeline.build(r.data.dir, r.data.train_split, batch_size=8, training=True, augment=r.data.augment,
                        shuffle_buffer=r.train.shuffle_buffer, seed=r.seed, repeat=True, image_size=32,
                        with_objects=True, deterministic=True)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(before, y.numpy())
    mixed, labels = views.mixer(r.distill.views, r.seed)(x["image"], y, tf.constant(5, tf.int64), x["objects"])
    np.testing.assert_array_equal(images, mixed.numpy())
    np.testing.assert_array_equal(after, labels.numpy())
    assert (after != before).any()  # cutmix at prob 1 changes some labels
    # every outline is of a class of the image its pixels come from
    assert outlines.shape == (8, 32, 32) and (outlines > 0).any()
    source = np.rint(outlines).astype(int) - 1
    for i in range(8):
        shown = set(source[i][source[i] >= 0].tolist())
        partner = (i + 1) % 8
        assert shown <= set(np.flatnonzero(before[i])) | set(np.flatnonzero(before[partner])), i
    plain_images, plain_after, plain_before, plain_outlines = views_plot.batch(r, "baseline", count=8)  # no views
    assert plain_outlines is None
    np.testing.assert_array_equal(plain_images, x["image"].numpy())
    np.testing.assert_array_equal(plain_after, plain_before)


def test_cli_draws_the_batch(tmp_path):
    path = write_tiny_recipe(tmp_path, distill=CUTMIX)
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "views", "--recipe", str(path), "--out", str(tmp_path / "v.png")])
    assert result.exit_code == 2 and "data build" in result.output  # the data set is not built yet
    assert not (tmp_path / "v.png").exists()
    assert runner.invoke(cli, ["data", "build", "--recipe", str(path)]).exit_code == 0
    result = runner.invoke(cli, ["data", "views", "--recipe", str(path), "--out", str(tmp_path / "v.png"),
                                 "--count", "6"])
    assert result.exit_code == 0, result.output
    assert "6 distill training views (cutmix (alpha 1, prob 1, labels by object, min_visible 0.5))" in result.output
    with Image.open(tmp_path / "v.png") as image:
        assert image.format == "PNG" and image.size[0] > 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "r.yaml", "v.png"]  # nor a run directory
