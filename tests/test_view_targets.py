"""Cached teacher logits of every view (`cached_views`) equal the teachers run online on the training stream."""

import math

import numpy as np
import pytest
import tensorflow as tf

from cpsd_tf import logits as logits_mod
from cpsd_tf import view_targets
from cpsd_tf.data import pipeline, records, scenes
from cpsd_tf.data.augment_config import AugmentConfig
from cpsd_tf.models import build_model

S = 32
N = 20  # training images
PASSES = 3
SEED = 7
BATCH = 8
AUGMENT = AugmentConfig(flip=True, translate=0.2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    scenes.generate(out, scenes.ScenesConfig(train=N, val=2, test=2, image_size=S), seed=0)
    return str(out)


@pytest.fixture(scope="module")
def teacher_sets(data_dir):
    """Set 1: two teachers on a 2-way class split (CGP-like); set 2: one all-class teacher (SD-like)."""
    m = records.load_info(data_dir).num_classes
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    order = rng.permutation(m)
    halves = [sorted(int(c) for c in order[: m // 2]), sorted(int(c) for c in order[m // 2:])]
    split = ([build_model("tiny_cnn", "linear", len(c), S, weights=None) for c in halves], halves)
    full = ([build_model("tiny_cnn", "linear", m, S, weights=None)], [None])
    return [split, full]


@pytest.fixture(scope="module")
def tables(data_dir, teacher_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    m = records.load_info(data_dir).num_classes
    result = {}
    for dtype in ("float16", "float32"):
        paths = [out / f"cgp-{dtype}.npy", out / f"sd-{dtype}.npy"]
        written = view_targets.compute(
            teacher_sets, data_dir, "train", passes=PASSES, image_size=S, augment=AUGMENT, seed=SEED,
            batch_size=BATCH, num_classes=m, out_paths=paths, dtype=dtype, progress=False,
        )
        assert written == paths
        assert sorted(p.name for p in out.iterdir() if dtype in p.name) == sorted(p.name for p in paths)  # no temp left
        result[dtype] = [np.load(p) for p in paths]
    return result


def online(teacher_sets, images, m):
    """The teachers run on a batch, merged with `logits.merge` (independent of `view_targets`)."""
    out = []
    for models, subsets in teacher_sets:
        parts = [(s, mdl(images, training=False).numpy()) for mdl, s in zip(models, subsets)]
        out.append(logits_mod.merge(parts, images.shape[0], m))
    return out


def stream(data_dir, **kwargs):
    return pipeline.build(data_dir, "train", image_size=S, batch_size=BATCH, training=True, augment=AUGMENT,
                          seed=SEED, repeat=True, with_index=True, with_pass=True, **kwargs)


def test_tables_match_teachers_run_online_on_the_training_stream(data_dir, teacher_sets, tables):
    m = records.load_info(data_dir).num_classes
    for dtype, tabs in tables.items():
        assert all(t.shape == (PASSES, N, m) and t.dtype == np.dtype(dtype) for t in tabs)
    join = {dtype: view_targets.targets_fn(tabs) for dtype, tabs in tables.items()}
    diffs = {"float16": 0.0, "float32": 0.0}
    seen = []
    for features, y in stream(data_dir, shuffle_buffer=8, deterministic=True).take(math.ceil(PASSES * N / BATCH) - 1):
        e, i = features["pass"].numpy(), features["index"].numpy()
        seen += list(zip(e, i))
        ref = online(teacher_sets, features["image"], m)
        for dtype, fn in join.items():
            got = fn(y, features["pass"], features["index"]).numpy()
            np.testing.assert_array_equal(got[:, :m], y.numpy())
            for k, r in enumerate(ref):
                diffs[dtype] = max(diffs[dtype], float(np.abs(got[:, m * (k + 1): m * (k + 2)] - r).max()))
    print(f"max |cached_views - online|: {diffs}")
    assert diffs["float16"] <= 1e-3 and diffs["float32"] <= 1e-5
    # every record once per pass
    assert {e for e, _ in seen} == set(range(PASSES))
    for e in range(PASSES - 1):
        assert sorted(i for p, i in seen if p == e) == list(range(N))


def test_targets_fn_in_dataset_map_and_errors(data_dir, tables):
    m = records.load_info(data_dir).num_classes
    fn = view_targets.targets_fn(tables["float16"])
    ds = stream(data_dir).map(lambda f, y: (f["image"], fn(y, f["pass"], f["index"]), f["pass"], f["index"]))
    x, t, e, i = next(iter(ds))
    assert t.dtype == tf.float32 and t.shape == (BATCH, 3 * m)
    np.testing.assert_array_equal(t[:, m:2 * m].numpy(), tables["float16"][0][e.numpy(), i.numpy()].astype(np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(tf.zeros([1, m]), tf.constant([0], tf.int64), tf.constant([10_000], tf.int64))  # index beyond the table
    # read-ahead past the last pass (never trained on) gets the last pass's rows, not an error
    ahead = fn(tf.zeros([1, m]), tf.constant([PASSES + 3], tf.int64), tf.constant([0], tf.int64))
    np.testing.assert_array_equal(ahead[0, m:2 * m].numpy(), tables["float16"][0][PASSES - 1, 0].astype(np.float32))


def test_views_do_not_depend_on_shuffle_order_and_differ_between_passes(data_dir):
    def views_by_key(ds, batches):
        out = {}
        for features, _ in ds.take(batches):
            for x, e, i in zip(features["image"].numpy(), features["pass"].numpy(), features["index"].numpy()):
                out[(int(e), int(i))] = x
        return out

    batches = (2 * N) // BATCH  # two passes
    small = views_by_key(stream(data_dir, shuffle_buffer=2, deterministic=True), batches)
    large = views_by_key(stream(data_dir, shuffle_buffer=64, cache=True), batches)
    common = sorted(set(small) & set(large))
    assert len(common) >= N  # different orders, the same (pass, index) keys
    for key in common:
        np.testing.assert_array_equal(small[key], large[key])
    for e in range(2):  # build_views: the same views, in index order
        views = pipeline.build_views(data_dir, "train", e, image_size=S, augment=AUGMENT, seed=SEED, batch_size=6)
        for x, index in views:
            for img, i in zip(x.numpy(), index.numpy()):
                if (e, int(i)) in small:
                    np.testing.assert_array_equal(img, small[(e, int(i))])
    v0, v1 = (np.concatenate([x for x, _ in pipeline.build_views(data_dir, "train", e, image_size=S, augment=AUGMENT,
                                                                  seed=SEED, batch_size=N)]) for e in (0, 1))
    differ = [not np.array_equal(a, b) for a, b in zip(v0, v1)]
    assert sum(differ) >= N // 2  # a flip + translate draw repeats between passes only by chance


def test_compute_checks_and_passes_needed(data_dir, teacher_sets, tmp_path):
    m = records.load_info(data_dir).num_classes
    assert view_targets.passes_needed(N, 8, 2, 1) == 1 and view_targets.passes_needed(N, 8, 2, 5) == 4
    models, subsets = teacher_sets[0]
    with pytest.raises(ValueError, match="exactly once"):
        view_targets.compute([(models, [subsets[0], subsets[0]])], data_dir, "train", passes=1, image_size=S,
                             augment=AUGMENT, seed=SEED, batch_size=BATCH, num_classes=m,
                             out_paths=[tmp_path / "bad.npy"], progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


# --- mixed views (`distill.views`): tables per (batch, row) of the deterministic mixed stream -------------

MIXED_STEPS = 5


def mixed_stream(data_dir, cfg, **kwargs):
    from cpsd_tf import views

    return pipeline.build(data_dir, "train", image_size=S, batch_size=BATCH, training=True, augment=AUGMENT,
                          seed=SEED, repeat=True, shuffle_buffer=8, deterministic=True, with_step=True,
                          mix=views.mixer(cfg, SEED), with_objects=views.by_object(cfg), **kwargs)


@pytest.mark.parametrize("labels", ["area", "objects"])
def test_mixed_view_tables_match_teachers_run_online_on_the_same_batch(data_dir, teacher_sets, tmp_path, labels):
    """cached_views with cutmix: table row [t, b] = the teachers on row b of batch t, as online computes them."""
    from cpsd_tf.recipe import ViewsConfig

    cfg = ViewsConfig(kind="cutmix", labels=labels)
    m = records.load_info(data_dir).num_classes
    tabs = {}
    for dtype in ("float16", "float32"):
        paths = [tmp_path / f"cgp-{dtype}.npy", tmp_path / f"sd-{dtype}.npy"]
        view_targets.compute_steps(teacher_sets, mixed_stream(data_dir, cfg), steps=MIXED_STEPS, batch_size=BATCH,
                                   num_classes=m, out_paths=paths, dtype=dtype, progress=False)
        tabs[dtype] = [np.load(p) for p in paths]
        assert all(t.shape == (MIXED_STEPS, BATCH, m) and t.dtype == np.dtype(dtype) for t in tabs[dtype])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # no temporary left
        f"{s}-{d}.npy" for s in ("cgp", "sd") for d in ("float16", "float32"))
    join = {dtype: view_targets.step_targets_fn(t) for dtype, t in tabs.items()}
    diffs = {"float16": 0.0, "float32": 0.0}
    unmixed = pipeline.build(data_dir, "train", image_size=S, batch_size=BATCH, training=True, augment=AUGMENT,
                             seed=SEED, repeat=True, shuffle_buffer=8, deterministic=True)
    changed = 0
    for t, ((features, y), (plain, _)) in enumerate(zip(mixed_stream(data_dir, cfg).take(MIXED_STEPS), unmixed)):
        assert (features["step"].numpy() == t).all()
        changed += int(not np.array_equal(features["image"].numpy(), plain.numpy()))
        ref = online(teacher_sets, features["image"], m)  # a fresh stream: the very batch t the tables saw
        for dtype, fn in join.items():
            got = fn(y, features["step"]).numpy()
            np.testing.assert_array_equal(got[:, :m], y.numpy())
            for k, r in enumerate(ref):
                diffs[dtype] = max(diffs[dtype], float(np.abs(got[:, m * (k + 1): m * (k + 2)] - r).max()))
    print(f"max |cached mixed views - online|: {diffs}")
    assert diffs["float16"] <= 1e-3 and diffs["float32"] <= 1e-5
    assert changed == MIXED_STEPS  # the batches are mixed
    # read-ahead past the last batch (never trained on) takes the last batch's rows
    ahead = join["float32"](tf.zeros([BATCH, m]), tf.fill([BATCH], tf.constant(MIXED_STEPS + 2, tf.int64)))
    np.testing.assert_array_equal(ahead[:, m:2 * m].numpy(), tabs["float32"][0][-1])


def test_pipeline_mix_is_the_mix_of_batch_t(data_dir):
    """The pipeline mixes batch t with the seed of step t: `mix_batch` of the unmixed batch t."""
    from cpsd_tf import views
    from cpsd_tf.recipe import ViewsConfig

    mixed = mixed_stream(data_dir, ViewsConfig(kind="mosaic", labels="objects"))
    plain = pipeline.build(data_dir, "train", image_size=S, batch_size=BATCH, training=True, augment=AUGMENT,
                           seed=SEED, repeat=True, shuffle_buffer=8, deterministic=True, with_objects=True)
    for t, ((f, y), (p, py)) in enumerate(zip(mixed.take(3), plain)):
        want_x, want_y = views.mix_batch(p["image"], py, views.step_seed(SEED, t), "mosaic", objects=p["objects"])
        np.testing.assert_array_equal(f["image"].numpy(), want_x.numpy())
        np.testing.assert_array_equal(y.numpy(), want_y.numpy())
        assert "objects" not in f  # consumed by the mix
    with pytest.raises(ValueError, match="says it is batch"):  # a stream that does not start at batch 0
        view_targets.compute_steps([], mixed.skip(1), steps=1, batch_size=BATCH, num_classes=3, out_paths=[],
                                   progress=False)


def test_training_stream_order_does_not_depend_on_the_global_seed(data_dir, tmp_path):
    """The mixed-view tables (`cpsd-tf logits`) and the student (`fit`) build the stream in different processes
    and states: batch t must be the same whatever TensorFlow's global seed was before."""
    import json

    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf import train, views

    from helpers_recipes import write_tiny_recipe

    tree = json.loads(write_tiny_recipe(tmp_path).read_text())
    r = recipe_mod.from_dict(tree, source="r.yaml", overrides=[f"data.dir={data_dir}", "distill.views.kind=cutmix"])
    firsts = []
    for before in (1, 2):
        tf.random.set_seed(before)
        stream = train.training_stream(r, 8, mix=views.mixer(r.distill.views, r.seed), with_index=True, with_step=True)
        firsts.append([f["index"].numpy() for f, _ in stream.take(3)])
    np.testing.assert_array_equal(firsts[0], firsts[1])
