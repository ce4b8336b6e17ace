"""`cpsd-tf data views`: one training batch as a model sees it, drawn with its labels."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cpsd_tf import recipe, train, views, views_plot
from cpsd_tf.cli import cli
from cpsd_tf.data import pipeline, prepare
from cpsd_tf.errors import UserError
from helpers_recipes import write_tiny_recipe

CUTMIX = {"views": {"kind": "cutmix", "labels": "objects"}}


def test_the_batch_is_batch_t_of_the_training_stream(tmp_path):
    """The drawn views and labels are the first images of batch t of the stream `fit` trains on, mixed
    there (`train.training_stream(mix=...)`), and the labels before mixing are that batch's."""
    r = recipe.load(write_tiny_recipe(tmp_path, distill=CUTMIX))
    prepare.run(r)
    size = min(r.train.batch_size, pipeline.num_examples(r.data.dir, r.data.train_split))
    assert size > 8
    images, after, before, outlines = views_plot.batch(r, "distill", count=8, step=5)
    mixed = train.training_stream(r, size, mix=views.mixer(r.distill.views, r.seed), with_objects=True,
                                  with_step=True)
    x, y = next(iter(mixed.skip(5)))
    np.testing.assert_array_equal(images, x["image"].numpy()[:8])
    np.testing.assert_array_equal(after, y.numpy()[:8])
    x0, y0 = next(iter(train.training_stream(r, size, with_objects=True, with_step=True).skip(5)))
    np.testing.assert_array_equal(before, y0.numpy()[:8])
    assert (after != before).any()  # cutmix at prob 1 changes some labels
    # every outline is of a class of the image its pixels come from (the partner is the next in the batch)
    assert outlines.shape == (8, 32, 32) and (outlines > 0).any()
    source = np.rint(outlines).astype(int) - 1
    for i in range(8):
        shown = set(source[i][source[i] >= 0].tolist())
        assert shown <= set(np.flatnonzero(y0[i])) | set(np.flatnonzero(y0[(i + 1) % size])), i
    plain_images, plain_after, plain_before, plain_outlines = views_plot.batch(r, "baseline", count=8)  # no views
    assert plain_outlines is None
    x0, _ = next(iter(train.training_stream(r, size, with_step=True)))
    np.testing.assert_array_equal(plain_images, x0["image"].numpy()[:8])
    np.testing.assert_array_equal(plain_after, plain_before)
    with pytest.raises(UserError, match=f"--count: {size + 1} is more than the training batch"):
        views_plot.batch(r, "distill", count=size + 1)


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
