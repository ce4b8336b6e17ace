"""The tf.data pipeline on a tiny dataset: functions eagerly and inside `Dataset.map`, then `build`."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cpsd_tf.data import pipeline, preprocess, records
from cpsd_tf.data.augment_config import AugmentConfig
from cpsd_tf.errors import UserError

S = 16  # image size
CLASSES = ["a", "b", "c", "d", "e"]
LABELS = [[], [0], [3, 4], [], [3], [0, 4], [], [4], [1, 3, 4], [2]]
COLOR = (10, 200, 90)  # record 5: a constant-colour PNG
# Every augmentation kind, but only a few RandAugment ops: tracing all 14 branches of `tf.switch_case` per
# dataset costs ~1 s (each op is tested in test_augment.py).
FULL_AUGMENT = AugmentConfig(
    flip=True,
    translate=0.1,
    randaugment={"num_ops": 2, "magnitude": 9, "ops": ["rotate", "equalize", "color", "translate_x"]},
    cutout={"probability": 0.5},
)


def encode(array, fmt, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, fmt)
    return buf.getvalue()


def make_images():
    """Mixed formats, sizes and channel counts (decode must always give RGB)."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(len(LABELS)):
        h, w = [(20, 24), (32, 16), (24, 24), (16, 16)][i % 4]
        if i == 5:
            images.append(encode(np.full((30, 20, 3), COLOR, np.uint8), "PNG"))
        elif i == 2:
            images.append(encode(rng.integers(0, 256, (h, w), dtype=np.uint8), "PNG"))  # grayscale
        elif i == 3:
            images.append(encode(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "PNG"))  # RGBA
        else:
            fmt = "JPEG" if i % 2 == 0 else "PNG"
            images.append(encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), fmt))
    return images


@pytest.fixture(scope="module")
def images():
    return make_images()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, images):
    out = tmp_path_factory.mktemp("data")
    recs = [records.Record(image=b, image_id=f"img{i}", labels=y) for i, (b, y) in enumerate(zip(images, LABELS))]
    records.write_split(out, "train", CLASSES, recs, examples_per_shard=4)  # 3 shards
    return str(out)


def multi_hot_np(labels, cols=range(len(CLASSES))):
    return np.array([[1.0 if c in y else 0.0 for c in cols] for y in labels], np.float32)


def collect(ds):
    """Concatenate a `(images, targets)` or `({"image", "index"}, targets)` dataset into NumPy arrays."""
    xs, ys, idx = [], [], []
    for features, y in ds:
        if isinstance(features, dict):
            xs.append(features["image"].numpy())
            idx.append(features["index"].numpy())
        else:
            xs.append(features.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys), (np.concatenate(idx) if idx else None)


# --- per-image functions -----------------------------------------------------------------------------


def test_preprocess_eval_eager_and_in_map(images):
    eager = np.stack([preprocess.preprocess_eval(tf.constant(b), S).numpy() for b in images])
    mapped = np.stack(list(tf.data.Dataset.from_tensor_slices(images).map(lambda b: preprocess.preprocess_eval(b, S))))
    np.testing.assert_array_equal(eager, mapped)
    assert eager.shape == (len(images), S, S, 3) and eager.dtype == np.float32
    assert eager.min() >= 0 and eager.max() <= 1
    np.testing.assert_allclose(eager[5], np.broadcast_to(np.array(COLOR) / 255.0, (S, S, 3)), atol=1e-7)
    np.testing.assert_array_equal(eager[2][..., 0], eager[2][..., 1])  # grayscale -> 3 equal channels
    # exactly the canonical recipe: decode, bilinear resize, round to uint8, / 255
    ref = np.asarray(Image.open(io.BytesIO(images[1])).convert("RGB"))
    ref = np.round(tf.image.resize(ref, [S, S], method="bilinear").numpy()).clip(0, 255) / 255.0
    np.testing.assert_allclose(eager[1], ref, atol=1e-7)


def test_multi_hot_eager_and_in_map():
    cases = [([], None), ([0, 3], None), ([3, 4], [4, 1, 3]), ([2], [4, 1])]
    for labels, subset in cases:
        fn = lambda y: pipeline.multi_hot(y, 5, subset)  # noqa: E731
        eager = fn(tf.constant(labels, tf.int64)).numpy()
        mapped = next(iter(tf.data.Dataset.from_tensors(tf.constant(labels, tf.int64)).map(fn))).numpy()
        cols = subset if subset is not None else range(5)
        np.testing.assert_array_equal(eager, multi_hot_np([labels], cols)[0])
        np.testing.assert_array_equal(mapped, eager)
        assert eager.dtype == np.float32


def test_preprocess_train_is_stateless_eager_and_in_map(images):
    cfg = AugmentConfig.model_validate({**FULL_AUGMENT.model_dump(), "crop": {"scale": (0.5, 1.0)}})
    fn = lambda b, s: preprocess.preprocess_train(b, s, S, cfg)  # noqa: E731
    seed = np.array([4, 2], np.int64)
    eager = fn(tf.constant(images[0]), tf.constant(seed)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors((images[0], seed)).map(fn))).numpy()
    np.testing.assert_allclose(eager, mapped, atol=1e-6)
    assert eager.shape == (S, S, 3) and eager.dtype == np.float32 and 0 <= eager.min() and eager.max() <= 1
    plain = preprocess.preprocess_train(tf.constant(images[0]), tf.constant(seed), S, None).numpy()
    np.testing.assert_array_equal(plain, preprocess.preprocess_eval(tf.constant(images[0]), S).numpy())


# --- build -------------------------------------------------------------------------------------------


def test_eval_pipeline_order_targets_index(data_dir):
    ds = pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=False, with_index=True)
    spec = ds.element_spec
    assert spec[0]["image"].shape.as_list() == [None, S, S, 3] and spec[0]["image"].dtype == tf.float32
    assert spec[0]["index"].dtype == tf.int64 and spec[1].shape.as_list() == [None, 5] and spec[1].dtype == tf.float32
    sizes = [int(y.shape[0]) for _, y in ds]
    assert sizes == [4, 4, 2]  # the last partial batch is kept for evaluation
    x, y, idx = collect(ds)
    np.testing.assert_array_equal(idx, np.arange(len(LABELS)))  # in index order
    np.testing.assert_array_equal(y, multi_hot_np(LABELS))
    np.testing.assert_allclose(x[5], np.broadcast_to(np.array(COLOR) / 255.0, (S, S, 3)), atol=1e-7)
    x2, y2, _ = collect(pipeline.build(data_dir, "train", image_size=S, batch_size=3, training=False))
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_with_index_for_fit_and_logits_join(data_dir):
    ds = pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=False, with_index=True)
    x, y, _ = collect(pipeline.for_fit(ds))
    x_ref, y_ref, _ = collect(ds)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    table = tf.constant(np.arange(len(LABELS) * 5, dtype=np.float32).reshape(len(LABELS), 5) * 10)
    joined = ds.map(lambda f, y: (f["image"], (y, tf.gather(table, f["index"]))))
    for (_, (_, t)), (f, _) in zip(joined, ds):
        np.testing.assert_array_equal(t.numpy(), table.numpy()[f["index"].numpy()])


def test_subtask_view_remaps_columns_and_filters_positives(data_dir):
    subset = [4, 1]
    ds = pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=False, subset=subset, with_index=True)
    _, y, idx = collect(ds)
    np.testing.assert_array_equal(y, multi_hot_np(LABELS, subset))
    ds = pipeline.build(
        data_dir, "train", image_size=S, batch_size=4, training=False, subset=subset, images="positive", with_index=True
    )
    _, y, idx = collect(ds)
    keep = [i for i, labels in enumerate(LABELS) if set(labels) & set(subset)]
    np.testing.assert_array_equal(idx, keep)
    np.testing.assert_array_equal(y, multi_hot_np([LABELS[i] for i in keep], subset))
    assert pipeline.num_examples(data_dir, "train", subset=subset, images="positive") == len(keep) == 4
    assert pipeline.num_examples(data_dir, "train", subset=subset) == len(LABELS)
    assert pipeline.num_examples(data_dir, "train", images="positive") == 7
    index, targets = pipeline.labels_matrix(data_dir, "train", subset=subset, images="positive")
    np.testing.assert_array_equal(index, keep)
    np.testing.assert_array_equal(targets, y)


def test_training_deterministic_is_reproducible_and_epochs_differ(data_dir):
    kwargs = dict(image_size=S, batch_size=4, training=True, augment=FULL_AUGMENT, shuffle_buffer=16,
                  deterministic=True, drop_remainder=False, with_index=True)
    ds = pipeline.build(data_dir, "train", seed=3, **kwargs)
    first = collect(ds)
    second = collect(ds)  # a new iteration = a new epoch: new order, new augmentations
    again = collect(pipeline.build(data_dir, "train", seed=3, **kwargs))
    other = collect(pipeline.build(data_dir, "train", seed=4, **kwargs))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert sorted(first[2]) == list(range(len(LABELS)))  # every image once per epoch
    assert sorted(second[2]) == list(range(len(LABELS)))
    assert not np.array_equal(first[2], second[2]) or not np.array_equal(first[0], second[0])
    assert not np.array_equal(first[2], other[2]) or not np.array_equal(first[0], other[0])
    x, y, idx = first
    np.testing.assert_array_equal(y, multi_hot_np([LABELS[i] for i in idx]))  # targets follow their image
    assert x.dtype == np.float32 and x.shape[1:] == (S, S, 3) and 0 <= x.min() and x.max() <= 1


def test_training_repeat_drop_remainder_and_default_nondeterministic(data_dir):
    ds = pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=True, augment=FULL_AUGMENT, repeat=True)
    assert ds.element_spec[0].shape.as_list() == [4, S, S, 3]  # static batch for training
    batches = list(ds.take(6))  # > 1 epoch
    assert all(int(x.shape[0]) == 4 for x, _ in batches)


def test_cache_gives_the_same_batches(data_dir):
    kwargs = dict(image_size=S, batch_size=4, training=False, with_index=True)
    plain = collect(pipeline.build(data_dir, "train", **kwargs))
    cached_ds = pipeline.build(data_dir, "train", cache=True, **kwargs)
    for _ in range(2):  # first epoch fills the cache, second reads it
        for a, b in zip(plain, collect(cached_ds)):
            np.testing.assert_array_equal(a, b)
    for augment in (FULL_AUGMENT, AugmentConfig.model_validate({**FULL_AUGMENT.model_dump(), "crop": {}})):
        kwargs = dict(image_size=S, batch_size=4, training=True, augment=augment, deterministic=True,
                      drop_remainder=False, with_index=True, cache=True, seed=1)
        x, y, idx = collect(pipeline.build(data_dir, "train", **kwargs))
        assert x.shape == (len(LABELS), S, S, 3) and sorted(idx) == list(range(len(LABELS)))
        np.testing.assert_array_equal(y, multi_hot_np([LABELS[i] for i in idx]))


def test_model_fit_consumes_the_dataset(data_dir):
    ds = pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=True, augment=FULL_AUGMENT, repeat=True)
    model = keras.Sequential([keras.Input((S, S, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="val"), "no split 'val'"),
        (dict(subset=[0, 5]), "outside 0..4"),
        (dict(subset=[1, 1]), "repeats"),
        (dict(subset=[]), "empty"),
        (dict(images="some"), "images"),
    ],
)
def test_bad_arguments_are_user_errors(data_dir, kwargs, match):
    kwargs = {"split": "train", **kwargs}
    split = kwargs.pop("split")
    with pytest.raises(UserError, match=match):
        pipeline.build(data_dir, split, image_size=S, batch_size=4, training=False, **kwargs)
    with pytest.raises(UserError, match=match):
        pipeline.num_examples(data_dir, split, **kwargs)
    with pytest.raises(UserError, match=match):
        pipeline.build_views(data_dir, split, 0, image_size=S, augment=FULL_AUGMENT, batch_size=4, **kwargs)


def test_normalize_is_gone(data_dir, images):
    with pytest.raises(TypeError):
        pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=False, normalize="unit")
    with pytest.raises(TypeError):
        preprocess.preprocess_eval(tf.constant(images[0]), S, "unit")


# --- reproducible views: (seed, pass, index) -> image ---------------------------------------------------


def stream_views(ds, batches):
    """{(pass, index): image} and the (pass, index) sequence of `batches` batches of a with_pass stream."""
    views, order = {}, []
    for features, _ in ds.take(batches):
        for x, e, i in zip(features["image"].numpy(), features["pass"].numpy(), features["index"].numpy()):
            views[(int(e), int(i))] = x
            order.append((int(e), int(i)))
    return views, order


@pytest.mark.parametrize("crop", [False, True])
def test_training_stream_views_are_a_function_of_seed_pass_index(data_dir, crop):
    # (RandAugment once: each dataset traces its ops)
    augment = FULL_AUGMENT if not crop else AugmentConfig(flip=True, translate=0.1, crop={})
    kwargs = dict(image_size=S, training=True, augment=augment, repeat=True, with_index=True, with_pass=True, seed=5)
    n, passes = len(LABELS), 2
    a, order = stream_views(pipeline.build(data_dir, "train", batch_size=5, shuffle_buffer=3, deterministic=True,
                                           **kwargs), passes * n // 5)
    b, order_b = stream_views(pipeline.build(data_dir, "train", batch_size=4, shuffle_buffer=64, cache=True,
                                             **kwargs), (passes + 1) * n // 4)  # nondeterministic order
    assert [e for e, _ in order] == sorted(e for e, _ in order) == [e for e in range(passes) for _ in range(n)]
    for e in range(passes):
        assert sorted(i for p, i in order if p == e) == list(range(n))  # every record once per pass
    assert [i for _, i in order] != [i for _, i in order_b[: len(order)]]  # different orders ...
    common = set(a) & set(b)
    assert len(common) >= n
    for key in common:  # ... the same views
        np.testing.assert_array_equal(a[key], b[key])
    for e in range(passes):
        x, idx = map(np.concatenate, zip(*pipeline.build_views(data_dir, "train", e, image_size=S, augment=augment,
                                                                seed=5, batch_size=4)))
        np.testing.assert_array_equal(idx, np.arange(n))  # index order
        for img, i in zip(x, idx):
            np.testing.assert_array_equal(img, a[(e, int(i))])
    assert sum(not np.array_equal(a[(0, i)], a[(1, i)]) for i in range(n)) >= n // 2  # passes differ
    other, _ = stream_views(pipeline.build(data_dir, "train", batch_size=5, **{**kwargs, "seed": 6}), n // 5)
    assert sum(not np.array_equal(other[k], a[k]) for k in other) >= n // 2  # seeds differ


def test_pass_counts_the_filtered_records_and_views_without_augment(data_dir):
    # deterministic=True: with parallel steps out of order, an element of pass 3 may come before one of pass 2
    kwargs = dict(image_size=S, batch_size=2, training=True, subset=[4, 1], images="positive", repeat=True,
                  with_pass=True, seed=1, deterministic=True)
    for augment in (None, FULL_AUGMENT):
        ds = pipeline.build(data_dir, "train", augment=augment, **kwargs)
        assert set(ds.element_spec[0]) == {"image", "pass"}
        passes = np.concatenate([f["pass"].numpy() for f, _ in ds.take(6)])
        np.testing.assert_array_equal(passes, np.repeat([0, 1, 2], 4))  # 4 positive images per pass
    views = pipeline.build_views(data_dir, "train", 2, image_size=S, augment=None, subset=[4, 1], images="positive")
    x, idx = map(np.concatenate, zip(*views))
    np.testing.assert_array_equal(idx, [2, 5, 7, 8])  # the records with class 4 or 1
    clean = collect(pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=False, subset=[4, 1],
                                   images="positive", with_index=True))
    np.testing.assert_array_equal(idx, clean[2])
    np.testing.assert_array_equal(x, clean[0])  # no augmentation: the evaluation view


def test_with_pass_needs_repeat_when_training_and_is_zero_for_evaluation(data_dir):
    with pytest.raises(ValueError, match="repeat"):
        pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=True, with_pass=True)
    ds = pipeline.build(data_dir, "train", image_size=S, batch_size=4, training=False, with_pass=True, with_index=True)
    assert set(ds.element_spec[0]) == {"image", "index", "pass"}
    assert all((f["pass"].numpy() == 0).all() for f, _ in ds)
    with pytest.raises(ValueError, match="pass_"):
        pipeline.build_views(data_dir, "train", -1, image_size=S, augment=None)


def test_view_seed_is_pure_and_distinct():
    seeds = {tuple(preprocess.view_seed(s, e, i).numpy()) for s in (0, 1) for e in range(3) for i in range(4)}
    assert len(seeds) == 24
    np.testing.assert_array_equal(preprocess.view_seed(3, 2, 7), preprocess.view_seed(3, tf.constant(2, tf.int64), 7))
    mapped = next(iter(tf.data.Dataset.from_tensors((tf.constant(2, tf.int64), tf.constant(7, tf.int64))).map(
        lambda e, i: preprocess.view_seed(3, e, i))))
    np.testing.assert_array_equal(mapped, preprocess.view_seed(3, 2, 7))
