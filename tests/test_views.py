"""Mixed training views (`distill.views`, `baseline.views`): the mix, its labels, its seeds, the recipe keys,
and how training sees it (mixed in the pipeline: student with online teachers, baseline)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cpsd_tf import distill, recipe, rundir, train, views
from cpsd_tf.cli import cli
from cpsd_tf.errors import UserError
from cpsd_tf.losses import DistillationLoss

from helpers_recipes import write_tiny_recipe

MIXED = ("mixup", "cutmix", "mosaic")


def _constant_batch(b, size=8):
    """Image k is filled with the value k + 1 (so a mixed pixel tells its sources); labels: one class each."""
    x = np.broadcast_to(np.arange(1, b + 1, dtype=np.float32)[:, None, None, None], (b, size, size, 3)).copy()
    return x, np.eye(b, dtype=np.float32)


def _expected_labels(x, mixed, labels, kind, min_share):
    """The label rule recomputed from the mixed pixels: the union over images whose share >= min_share."""
    b = x.shape[0]
    out = np.zeros_like(labels)
    for i in range(b):
        if kind == "mixup":  # value = lam·(i+1) + (1-lam)·(i+2 mod b) -> lam from the pixel
            own, other = i + 1.0, (i + 1) % b + 1.0
            v = mixed[i, 0, 0, 0]
            lam = 1.0 if own == other else (other - v) / (other - own)
            shares = {i: lam, (i + 1) % b: 1.0 - lam} if own != other else {i: 1.0}
        else:  # the fraction of pixels showing image j
            values, counts = np.unique(mixed[i, :, :, 0], return_counts=True)
            shares = {int(round(v)) - 1: c / mixed[i, :, :, 0].size for v, c in zip(values, counts)}
        for j, share in shares.items():
            if share > 1e-6 and share >= min_share - 1e-6:
                out[i] = np.maximum(out[i], labels[j])
    return out


@pytest.mark.parametrize("kind", MIXED)
def test_labels_are_the_union_of_the_images_kept(kind):
    x, y = _constant_batch(6)
    for step in range(8):
        for min_share in (0.0, 0.1, 0.3):
            xm, ym = views.mix_batch(x, y, views.step_seed(3, step), kind, alpha=0.5, min_share=min_share)
            xm, ym = xm.numpy(), ym.numpy()
            np.testing.assert_array_equal(ym, _expected_labels(x, xm, y, kind, min_share))
            assert (ym[np.arange(6), np.arange(6)] <= 1).all() and ym.max() <= 1
            if kind != "mixup":  # every pixel is one image's pixel, at its own place
                assert set(np.unique(xm)) <= set(np.arange(1.0, 7.0))


def test_hand_built_cases():
    x, y = _constant_batch(4)
    seed = tf.constant([0, 1], tf.int64)
    for kind in MIXED:  # prob 0: nothing is mixed
        xm, ym = views.mix_batch(x, y, seed, kind, prob=0.0)
        np.testing.assert_array_equal(xm.numpy(), x)
        np.testing.assert_array_equal(ym.numpy(), y)
    # one image: its only partner is itself
    for kind in MIXED:
        xm, ym = views.mix_batch(x[:1], y[:1], seed, kind)
        np.testing.assert_allclose(xm.numpy(), x[:1], rtol=1e-6)
        np.testing.assert_array_equal(ym.numpy(), y[:1])
    # mixup with min_share 0.5: the dominant image's labels only (both at a tie)
    xm, ym = views.mix_batch(x, y, seed, "mixup", min_share=0.5)
    lam = np.array([(i + 1) % 4 + 1.0 - xm.numpy()[i, 0, 0, 0] for i in range(3)])  # the three without wrap
    lam = lam / np.array([(i + 1) % 4 - i for i in range(3)])
    for i in range(3):
        want = {i} if lam[i] > 0.5 else {i + 1} if lam[i] < 0.5 else {i, i + 1}
        assert set(np.flatnonzero(ym.numpy()[i])) == want
    # labels of both partners are unions of multi-hot rows, not sums
    y2 = np.array([[1, 1, 0], [0, 1, 1]], np.float32)
    _, ym = views.mix_batch(np.zeros((2, 8, 8, 3), np.float32), y2, seed, "mixup", alpha=100.0)  # lam ~ 0.5
    np.testing.assert_array_equal(ym.numpy(), [[1, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match="Expected one of"):
        views.mix_batch(x, y, seed, "blend")
    assert views.mix_batch(x, y, seed, "none") == (x, y)


@pytest.mark.parametrize("kind", MIXED)
def test_same_seed_same_view_eager_function_and_dataset_map(kind):
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 16, 3)).astype(np.float32)
    y = (rng.random((8, 5)) < 0.3).astype(np.float32)
    cfg = recipe.ViewsConfig(kind=kind, prob=0.7)
    mix = views.mixer(cfg, seed=4)
    eager = [t.numpy() for t in mix(x, y, 5)]
    again = [t.numpy() for t in mix(tf.constant(x), tf.constant(y), tf.constant(5, tf.int64))]
    graph = [t.numpy() for t in tf.function(mix)(x, y, tf.constant(5, tf.int64))]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(lambda a, b: mix(a, b, 5))
    mapped = [t.numpy() for t in next(iter(ds))]
    for other in (again, graph, mapped):
        for a, b in zip(eager, other):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(mix(x, y, 6)[0].numpy(), eager[0])  # another step, another view
    assert not np.array_equal(views.mixer(cfg, seed=5)(x, y, 5)[0].numpy(), eager[0])  # another run seed
    assert not np.array_equal(eager[0], x)
    assert views.mixer(recipe.ViewsConfig(), seed=4) is None


def _load(tmp_path, *sets):
    return recipe.from_dict(json.loads(write_tiny_recipe(tmp_path).read_text()), source="r.yaml", overrides=sets)


def test_recipe_keys_and_refusals(tmp_path):
    r = _load(tmp_path)
    assert r.distill.views.kind == "none" and r.baseline.views.kind == "none"  # faithful CPSD by default
    r = _load(tmp_path, "distill.views.kind=cutmix", "distill.views.alpha=0.4", "baseline.views={kind: mosaic}")
    assert (r.distill.views.kind, r.distill.views.alpha, r.baseline.views.kind) == ("cutmix", 0.4, "mosaic")
    for bad, words in [
        ("distill.views.kind=blend", ["distill.views.kind", "'none', 'mixup', 'cutmix' or 'mosaic'", "'blend'"]),
        ("baseline.views.kind=cut", ["baseline.views.kind", "'cut'"]),
        ("distill.views.min_share=0.7", ["distill.views.min_share", "0.7"]),
        ("distill.views.prob=2", ["distill.views.prob"]),
        ("distill.views.strength=1", ["unknown key 'distill.views.strength'", "kind, prob, alpha, min_share"]),
    ]:
        with pytest.raises(UserError) as e:
            _load(tmp_path, bad)
        message = e.value.format_message()
        assert all(w in message for w in words) and "\n" not in message, message
    with pytest.raises(UserError) as e:  # clean-image targets cannot describe a mixed view
        _load(tmp_path, "distill.views.kind=cutmix", "distill.teacher_logits=cached_clean")
    message = e.value.format_message()
    assert "'distill.views.kind' is 'cutmix' but distill.teacher_logits is 'cached_clean'" in message
    assert "online or cached_views" in message
    assert message.startswith("--set distill.views.kind:") and "\n" not in message
    assert _load(tmp_path, "distill.views.kind=cutmix", "distill.teacher_logits=cached_views").distill.views.kind == "cutmix"
    # through the CLI: exit 2, one line, before anything runs
    result = CliRunner().invoke(cli, ["distill", "--recipe", str(tmp_path / "r.yaml"), "--set", "distill.views.kind=mosaic",
                                      "--set", "distill.teacher_logits=cached_clean"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "run").exists()


def _dense(inputs_shape, units, seed):
    import keras

    inputs = keras.Input(inputs_shape)
    out = keras.layers.Dense(units, kernel_initializer=keras.initializers.GlorotUniform(seed))(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, out)


class _Capture(DistillationLoss):
    captured = {}

    def call(self, y_true, y_pred):
        self.captured["y"], self.captured["s"] = y_true, y_pred
        return super().call(y_true, y_pred)


def test_online_teachers_see_the_mixed_batch():
    """Online: the teachers' targets are of the batch the pipeline mixed, the labels are its labels."""
    m, seed = 4, 11
    rng = np.random.default_rng(1)
    x = rng.random((6, 8, 8, 3)).astype(np.float32)
    y = (rng.random((6, m)) < 0.4).astype(np.float32)
    clusters = [[3, 1], [0, 2]]
    teachers = [_dense((8, 8, 3), len(c), i) for i, c in enumerate(clusters)]
    student = _dense((8, 8, 3), m, 9)
    mix = views.mixer(recipe.ViewsConfig(kind="cutmix"), seed)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(6).enumerate().map(lambda t, b: mix(*b, t))
    wrapper = distill.online_wrapper([(teachers, clusters)], m)(student)
    wrapper.compile(optimizer="sgd", loss=_Capture(m, [0.5]), run_eagerly=True)
    xm, ym = views.mix_batch(x, y, views.step_seed(seed, 0), "cutmix")
    want_s = student(xm).numpy()
    wrapper.fit(ds, epochs=1, verbose=0, shuffle=False)
    got = np.asarray(_Capture.captured["y"])
    np.testing.assert_array_equal(got[:, :m], ym.numpy())
    merged = np.zeros((6, m), np.float32)
    for t, c in zip(teachers, clusters):
        merged[:, c] = t(xm).numpy()
    np.testing.assert_allclose(got[:, m:], merged, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(_Capture.captured["s"]), want_s, rtol=1e-5, atol=1e-5)
    assert not np.allclose(xm.numpy(), x)


@pytest.mark.parametrize("kind", MIXED)
def test_compiled_fit_with_views(kind):
    """Student (online teachers) and baseline in compiled `fit` steps on a mixed dataset."""
    m = 4
    rng = np.random.default_rng(3)
    x = rng.random((16, 8, 8, 3)).astype(np.float32)
    y = (rng.random((16, m)) < 0.4).astype(np.float32)
    mix = views.mixer(recipe.ViewsConfig(kind=kind, prob=0.5), 0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).enumerate().map(lambda t, b: mix(*b, t))
    clusters = [[0, 1, 2, 3]]
    student = _dense((8, 8, 3), m, 1)
    wrapper = distill.online_wrapper([([_dense((8, 8, 3), m, 2)], clusters)], m)(student)
    wrapper.compile(optimizer="sgd", loss=DistillationLoss(m, [0.5]))
    before = student.get_weights()[0].copy()
    history = wrapper.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"]).all() and not np.array_equal(student.get_weights()[0], before)
    model = _dense((8, 8, 3), m, 3)
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    assert np.isfinite(model.fit(ds, epochs=2, verbose=0, shuffle=False).history["loss"]).all()


def test_tiny_distill_with_views(tmp_path):
    """The real trainer (`train.fit`: pipeline, selection, backup, loss terms) distils on mosaic views."""
    from cpsd_tf.data import prepare, records
    from cpsd_tf.models import build_model

    r = recipe.load(write_tiny_recipe(tmp_path, train=32, val=8, test=8), ["distill.views.kind=mosaic"])
    prepare.run(r)
    info = records.load_info(r.data.dir)
    m = info.num_classes
    halves = [list(range(0, m, 2)), list(range(1, m, 2))]
    sets = [([build_model("tiny_cnn", "linear", len(c), 32, weights=None) for c in halves], halves)]
    loss = distill.make_loss(r, m, ["cgp"])
    metrics = train.fit(r, tmp_path / "student", num_classes=m, class_names=info.classes, epochs=1, title="student",
                        loss=loss, wrap_model=distill.online_wrapper(sets, m, terms=(loss, ["cgp"])),
                        mix=views.mixer(r.distill.views, r.seed))
    assert rundir.model_is_done(tmp_path / "student")
    record = metrics["history"][-1]
    assert np.isfinite(record["loss"]) and record["loss"] == pytest.approx(
        record["loss_asl"] + record["loss_distill_cgp"], rel=1e-4)


@pytest.mark.large
def test_run_with_views_records_them(tmp_path):
    """The stages: a mosaic baseline and a cutmix CPSD student, with the views in their provenance."""
    path = write_tiny_recipe(tmp_path, distill={"views": {"kind": "cutmix"}}, baseline={"views": {"kind": "mosaic"}})
    result = CliRunner().invoke(cli, ["run", "--recipe", str(path)])
    assert result.exit_code == 0, result.output
    assert "cutmix views" in result.output and "mosaic views" in result.output
    run = tmp_path / "run"
    assert json.loads((run / "student" / "provenance.json").read_text())["values"]["distill.views.kind"] == "cutmix"
    assert json.loads((run / "baseline" / "provenance.json").read_text())["values"]["baseline.views.kind"] == "mosaic"
    # cached_views on mixed views: the teachers' logits of every mixed batch, then a student joined to them
    cached = ["--set", "distill.teacher_logits=cached_views"]
    exported = CliRunner().invoke(cli, ["logits", "--recipe", str(path), *cached])
    assert exported.exit_code == 0, exported.output
    assert "every cutmix view of" in exported.output
    student = json.loads((run / "student" / "metrics.json").read_text())
    for name in ("cgp", "dgp"):
        table = np.load(run / "logits" / "views" / f"{name}.mixed.npy")
        assert table.shape == (student["epochs"] * student["steps_per_epoch"], student["batch_size"], 30)
        assert table.dtype == np.float16 and np.isfinite(table).all()
    redone = CliRunner().invoke(cli, ["distill", "--recipe", str(path), *cached, "--force"])
    assert redone.exit_code == 0, redone.output
    assert "(cached_views targets, cutmix views)" in redone.output
    values = json.loads((run / "student" / "provenance.json").read_text())["values"]
    assert (values["distill.teacher_logits"], values["distill.views.kind"]) == ("cached_views", "cutmix")
