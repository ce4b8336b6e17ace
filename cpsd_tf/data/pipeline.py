"""The tf.data input pipeline: TFRecord shards -> batches of (images, multi-hot targets[, index, pass]).

Steps: read shards -> parse -> multi-hot targets (optionally a sub-task view) -> [filter] -> [cache] ->
[shuffle] -> [repeat] -> [pass number] -> decode -> [random resized crop] -> resize -> [augment] -> batch ->
prefetch, with `AUTOTUNE` parallelism.

Element structure (`build`):
    default: `(images, targets)`, ready for `model.fit` / `model.evaluate`.
    with_index and/or with_pass: `({"image": images, "index": index, "pass": pass}, targets)` (only the
    asked-for keys); `for_fit(ds)` keeps only the images.
    images   float32 [B, S, S, 3], RGB in [0, 1] (models carry their own input preprocessing);
    targets  float32 [B, m] multi-hot (m = number of classes, or |subset| for a sub-task view);
    index    int64 [B], the record's `index` (row of `logits/*.npy`), e.g. for
             `ds.map(lambda f, y: (f["image"], (y, tf.gather(table, f["index"]))))`;
    pass     int64 [B], the data pass (epoch of the data, 0, 1, 2, ...) the element belongs to in the
             repeated training stream: element p of the stream is in pass p // N (N = images per pass,
             `num_examples`); 0 for a dataset that is not repeated. Row of a `view_targets` table.
             (With `deterministic=False` elements of neighbouring passes may mix in the batches around a
             pass boundary; each element's pass is still its own.)
    with_objects: adds `"objects"`, float32 [B, K, 5]: where the record's objects are in its view (rows
             (class, top, left, bottom, right) in pixels, class -1 pads), from `<split>.objects.npz`
             (`cpsd_tf.data.objects`), for mixed views that label by object (`cpsd_tf.views`).
    step     (with_step) int64 [B], the batch's position t = 0, 1, 2, ... in the stream: the row of a
             mixed-view target table (`view_targets.compute_steps`).
    mix: every batch is mixed (`cpsd_tf.views`) after batching, by its position t: images and labels are
             the mixed view's (objects, given, are consumed by the mix).
    A 3-tuple `(x, y, index)` is deliberately not offered: `model.fit` would read `index` as sample weights.

Per-image preprocessing (decode, resize, augmentation, `view_seed`) is `cpsd_tf.data.preprocess`.

Order and randomness:
    Evaluation (`training=False`) reads shards in order, so batches come in `index` order.
    Training shuffles shard order and records (buffer `shuffle_buffer`) with `seed`; each pass over the
    data (each iteration of the dataset, or each round of `repeat`) gets a new order.
    Views are reproducible per record: with `repeat=True` the augmentation seed of record i in data pass
    e is `view_seed(seed, e, i)`, a pure function, so the augmented image ("view") of (e, i) does not
    depend on the shuffle order, the buffer, `cache`, `deterministic` or the batch size, and
    `build_views(..., pass_=e)` gives the very same views in `index` order (e.g. to run teachers on them
    once: `cpsd_tf.view_targets`). Without `repeat`, a training dataset draws its seeds from
    `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)` as before: each new iteration gets new
    augmentations, not reproducible per record.
    `deterministic=True` also keeps parallel steps in order so two runs give identical batches;
    `deterministic=False` (the training default) lets them finish out of order, which is faster but makes
    the exact order run-dependent (not the views).

Example:
    ds = build("data/scenes", "train", image_size=64, batch_size=32, training=True,
               augment=AugmentConfig(flip=False, randaugment={}), repeat=True)
    model.fit(ds, steps_per_epoch=num_examples("data/scenes", "train") // 32)
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from cpsd_tf.data import augment as aug
from cpsd_tf.data import boxes
from cpsd_tf.data import objects as objects_file
from cpsd_tf.data import records
from cpsd_tf.data.augment_config import AugmentConfig
from cpsd_tf.data.preprocess import augment_decoded, decode_resize, preprocess_eval, preprocess_train, to_unit, view_seed
from cpsd_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_SELECTIONS = ("all", "positive")


def multi_hot(labels, num_classes, subset=None):
    """Class indices int [k] -> float32 multi-hot [num_classes], or [len(subset)] keeping `subset`'s columns."""
    hot = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
    hot = tf.minimum(hot, 1.0)
    if subset is not None:
        hot = tf.gather(hot, tf.constant(list(subset), tf.int32))
    return hot


# --- dataset builders ---------------------------------------------------------------------------------


def _check_subset(subset, num_classes, data_dir):
    if subset is None:
        return None
    subset = [int(i) for i in subset]
    if not subset:
        raise UserError(f"{data_dir}: the class subset of a sub-task is empty")
    bad = [i for i in subset if not 0 <= i < num_classes]
    if bad:
        raise UserError(f"{data_dir}: class subset has indices {bad[:5]} outside 0..{num_classes - 1}")
    if len(set(subset)) != len(subset):
        raise UserError(f"{data_dir}: class subset repeats an index: {subset}")
    return subset


def _check_images(images):
    if images not in IMAGE_SELECTIONS:
        raise UserError(f"Invalid value for `images`. Expected one of {list(IMAGE_SELECTIONS)}. Received: {images!r}")


def num_examples(data_dir, split, *, subset: Optional[Sequence[int]] = None, images="all") -> int:
    """Number of images `build` yields per epoch (before batching) for the same `subset` / `images`."""
    _check_images(images)
    records.shard_paths(data_dir, split)  # a bad split is the UserError of `records`
    info = records.load_info(data_dir)
    subset = _check_subset(subset, info.num_classes, data_dir)
    if images == "all":
        return int(info.splits[split])
    _, y = records.read_labels(data_dir, split)
    if subset is not None:
        y = y[:, subset]
    return int(y.any(axis=1).sum())


def build(
    data_dir,
    split,
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    augment: Optional[AugmentConfig] = None,
    subset: Optional[Sequence[int]] = None,
    images: str = "all",
    shuffle_buffer: int = 1024,
    seed: int = 0,
    deterministic: Optional[bool] = None,
    drop_remainder: Optional[bool] = None,
    repeat: bool = False,
    cache: bool = False,
    with_index: bool = False,
    with_pass: bool = False,
    with_objects: bool = False,
    mix=None,
    with_step: bool = False,
) -> tf.data.Dataset:
    """Build the batched dataset of a split (structure and preprocessing in the module docstring).

    Args:
        data_dir: str or Path, data folder with `dataset.json` and shards.
        split: str, split name; an unknown split is a `UserError`.
        image_size: int, side S of the square images.
        batch_size: int, images per batch.
        training: bool, shuffle and augment (True) or read in `index` order (False).
        augment: `AugmentConfig` or None, augmentations (used only when `training`). Defaults to None.
        subset: list of int or None, sub-task view: keep these class columns, in this order (remapped to
            0..len-1). Defaults to None (all classes).
        images: str, "all" or "positive" (only images with >= 1 positive among the kept classes).
            Defaults to "all".
        shuffle_buffer: int, records in the shuffle buffer (training; <= 1 = no shuffle). It holds
            encoded records, or with `cache` decoded images (S*S*3 bytes each); with `cache` shards are
            read in order, so make it cover the split. Defaults to 1024.
        seed: int, seed of shard/record shuffling and augmentation. Defaults to 0.
        deterministic: bool or None, keep parallel steps in order. Defaults to None: `not training`.
        drop_remainder: bool or None, drop the last partial batch. Defaults to None: `training`.
        repeat: bool, repeat forever. Defaults to False.
        cache: bool, keep the parsed (and, without `augment.crop`, decoded and resized) images in memory
            after the first epoch; for small datasets. Defaults to False.
        with_index: bool, yield `({"image", "index"}, targets)` instead of `(images, targets)`.
            Defaults to False.
        with_pass: bool, also yield the data pass of each element under `"pass"` (int64 [B]), e.g.
            `({"image", "index", "pass"}, targets)` with `with_index`. Needs `repeat=True` when
            training (a non-repeated training stream has no reproducible views). Defaults to False.
        with_objects: bool, also yield where each record's objects are in its view, under `"objects"`
            (float32 [B, K, 5] rows (class, top, left, bottom, right) in pixels of the S x S view, after its
            flip, translation and RandAugment ops: `boxes.view_boxes`; class -1 pads), from the split's objects file (`cpsd_tf.data.objects`).
            Defaults to False.
        mix: callable or None, `views.mixer`: (images, labels, step, objects) -> (images, labels), applied to
            every batch with its position `step` (0, 1, 2, ... in the stream; restarts with each new
            iterator) after batching; with `with_objects` it takes the objects, which are then not yielded.
            The mixed view of batch t is a pure function of the batch and t, so with `deterministic=True`
            batch t is the same in every run (cached mixed-view targets: `view_targets.compute_steps`).
            Defaults to None.
        with_step: bool, also yield each batch's position in the stream under `"step"` (int64 [B], the
            same value on every row). Defaults to False.

    Returns:
        A `tf.data.Dataset`.
    """
    if int(image_size) < 1 or int(batch_size) < 1:
        raise ValueError(f"image_size and batch_size must be >= 1, received {image_size} and {batch_size}")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise TypeError(f"`augment` must be an AugmentConfig or None, received {type(augment).__name__}")
    _check_images(images)
    if with_pass and training and not repeat:
        raise ValueError("with_pass=True needs repeat=True for a training dataset (views are reproducible per "
                         "(pass, index) only in the repeated stream)")
    paths = records.shard_paths(data_dir, split)
    info = records.load_info(data_dir)
    subset = _check_subset(subset, info.num_classes, data_dir)
    image_size = int(image_size)
    deterministic = (not training) if deterministic is None else bool(deterministic)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    augment = augment if training else None
    if augment is not None and augment.is_identity:
        augment = None
    decode_early = cache and (augment is None or augment.crop is None)
    if with_objects:
        moved = augment is not None and aug.objects_moved(augment)
        if moved:
            raise UserError(f"{moved} moves objects in ways their boxes do not follow; object boxes follow flips, "
                            "translations and RandAugment, not the random crop")
        table = tf.constant(objects_file.table(data_dir, split) * np.float32([1, image_size, image_size, image_size,
                                                                          image_size]))

    # --- records, in index order (evaluation) or shuffled by shard (training)
    if training and len(paths) > 1 and not cache:
        files = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        ds = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(paths), 8),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
    else:
        ds = tf.data.TFRecordDataset(paths)

    # --- parse, targets, sub-task filter: cheap, before any decoding
    m = info.num_classes

    def parse(serialized):
        ex = records.parse_example(serialized)
        return ex["image"], multi_hot(ex["labels"], m, subset), ex["index"]

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if images == "positive":
        ds = ds.filter(lambda encoded, y, index: tf.reduce_any(y > 0))
    if decode_early:
        ds = ds.map(
            lambda encoded, y, index: (decode_resize(encoded, image_size), y, index),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
    if cache:
        ds = ds.cache()
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    # --- the data pass of each element: element p of the repeated stream is in pass p // N
    counted = repeat and training and (augment is not None or with_pass)
    if counted:
        per_pass = max(num_examples(data_dir, split, subset=subset, images=images), 1)
        ds = ds.enumerate()  # (p, (encoded or image, y, index))
    random_seeds = augment is not None and not counted
    if random_seeds:
        # one stateless seed [2] per element; a new sequence on each new iteration (epoch)
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2))

    # --- decode, augment: the expensive per-image work, in parallel
    def prepare(*element):
        if counted:
            p, (image, y, index) = element
            pass_ = p // per_pass
        elif random_seeds:
            (image, y, index), s = element
            pass_ = tf.constant(0, tf.int64)
        else:
            image, y, index = element
            pass_ = tf.constant(0, tf.int64)
        if augment is None:
            out = to_unit(image) if decode_early else to_unit(decode_resize(image, image_size))
        else:
            if counted:
                s = view_seed(seed, pass_, index)  # a pure function of (seed, pass, index)
            if decode_early:
                out = augment_decoded(image, s, augment)
            else:
                out = preprocess_train(image, s, image_size, augment)
        if not with_objects:
            return out, y, index, pass_
        objects = tf.gather(table, index)
        if augment is not None:  # the boxes follow the view's flip, translation and RandAugment
            s_aug = tf.random.experimental.stateless_split(s, num=2)[1]  # as preprocess_train / augment_decoded
            objects = tf.concat([objects[:, :1], boxes.view_boxes(objects[:, 1:], s_aug, augment, image_size)], axis=1)
        return out, y, index, pass_, objects

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    yield_objects = with_objects and mix is None  # a mix consumes the objects
    keyed = with_index or with_pass or yield_objects or with_step

    def finish(x, y, index, pass_, objects=None, step=None):
        if mix is not None:
            x, y = mix(x, y, step, objects)
        if not keyed:
            return x, y
        out = {"image": x}
        if with_index:
            out["index"] = index
        if with_pass:
            out["pass"] = pass_
        if yield_objects:
            out["objects"] = objects
        if with_step:
            out["step"] = tf.fill(tf.shape(index), step)
        return out, y

    if mix is not None or with_step:
        ds = ds.enumerate()  # (t, batch): the batch's position t in the stream
        ds = ds.map(lambda t, batch: finish(*batch, step=t), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    else:
        ds = ds.map(finish)
    ds = ds.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)


def build_views(
    data_dir,
    split,
    pass_: int,
    *,
    image_size: int,
    augment: Optional[AugmentConfig],
    seed: int = 0,
    batch_size: int = 64,
    subset: Optional[Sequence[int]] = None,
    images: str = "all",
) -> tf.data.Dataset:
    """Batches `(images, index)` of every record of a split, in `index` order, as data pass `pass_` shows them.

    The images are exactly the augmented views the repeated training stream
    `build(data_dir, split, training=True, repeat=True, augment=augment, seed=seed, image_size=..., subset=...,
    images=...)` yields for these records in pass `pass_` (any `shuffle_buffer`, `cache`, `deterministic`
    or batch size): e.g. to run teachers once on every view (`cpsd_tf.view_targets`).

    Args:
        data_dir: str or Path, data folder with `dataset.json` and shards.
        split: str, split name.
        pass_: int >= 0, the data pass e.
        image_size: int, side S of the square images.
        augment: `AugmentConfig` or None (None or an identity config: the evaluation view).
        seed: int, the training stream's `seed`. Defaults to 0.
        batch_size: int, images per batch (the last batch may be partial). Defaults to 64.
        subset, images: as in `build`: with `images="positive"` only the records the stream yields.
            Defaults to None and "all".

    Returns:
        A `tf.data.Dataset` of `(float32 [B, S, S, 3], int64 [B])`.
    """
    if int(pass_) < 0:
        raise ValueError(f"pass_ must be >= 0, received {pass_}")
    if int(image_size) < 1 or int(batch_size) < 1:
        raise ValueError(f"image_size and batch_size must be >= 1, received {image_size} and {batch_size}")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise TypeError(f"`augment` must be an AugmentConfig or None, received {type(augment).__name__}")
    _check_images(images)
    paths = records.shard_paths(data_dir, split)
    info = records.load_info(data_dir)
    subset = _check_subset(subset, info.num_classes, data_dir)
    image_size, pass_, m = int(image_size), int(pass_), info.num_classes
    if augment is not None and augment.is_identity:
        augment = None

    def parse(serialized):
        ex = records.parse_example(serialized)
        return ex["image"], multi_hot(ex["labels"], m, subset), ex["index"]

    def view(encoded, y, index):
        if augment is None:
            return preprocess_eval(encoded, image_size), index
        return preprocess_train(encoded, view_seed(seed, pass_, index), image_size, augment), index

    ds = tf.data.TFRecordDataset(paths).map(parse, num_parallel_calls=AUTOTUNE)
    if images == "positive":
        ds = ds.filter(lambda encoded, y, index: tf.reduce_any(y > 0))
    ds = ds.map(view, num_parallel_calls=AUTOTUNE).batch(batch_size)
    return ds.prefetch(AUTOTUNE)


def for_fit(ds):
    """`({"image", "index"[, "pass"]}, targets)` batches -> `(images, targets)` for `model.fit`."""
    return ds.map(lambda features, y: (features["image"], y))


def labels_matrix(data_dir, split, *, subset: Optional[Sequence[int]] = None, images="all"):
    """(index int64 [n], targets float32 [n, m or |subset|]) of the images `build` yields, in index order.

    The same selection as `build(..., training=False)` without decoding images (e.g. for metrics).
    """
    _check_images(images)
    info = records.load_info(data_dir)
    subset = _check_subset(subset, info.num_classes, data_dir)
    index, y = records.read_labels(data_dir, split)
    y = y.astype(np.float32)
    if subset is not None:
        y = y[:, subset]
    if images == "positive":
        keep = y.any(axis=1)
        index, y = index[keep], y[keep]
    return index, y
