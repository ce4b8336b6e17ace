"""The tf.data input pipeline: TFRecord shards -> batches of (images, multi-hot targets[, index]).

Steps: read shards -> parse -> multi-hot targets (optionally a sub-task view) -> [filter] -> [cache] ->
[shuffle] -> [repeat] -> decode -> [random resized crop] -> resize -> [augment] -> normalise -> batch ->
prefetch, with `AUTOTUNE` parallelism.

Element structure (`build`):
    with_index=False (default): `(images, targets)`, ready for `model.fit` / `model.evaluate`.
    with_index=True: `({"image": images, "index": index}, targets)`; `for_fit(ds)` drops `index`.
    images   float32 [B, S, S, 3], normalised as below;
    targets  float32 [B, m] multi-hot (m = number of classes, or |subset| for a sub-task view);
    index    int64 [B], the record's `index` (row of `logits/*.npy`), e.g. for
             `ds.map(lambda f, y: (f["image"], (y, tf.gather(table, f["index"]))))`.
    A 3-tuple `(x, y, index)` is deliberately not offered: `model.fit` would read `index` as sample weights.

Canonical preprocessing (`preprocess_eval`, reused by the export stage inside the SavedModel):
    `tf.io.decode_image(channels=3, expand_animations=False)` (JPEG or PNG, gray -> RGB, alpha dropped)
    -> `tf.image.resize` to S x S, bilinear, no antialias (aspect ratio not kept, like ASL's `Resize`)
    -> rounded to uint8 (so caching decoded images is exact) -> float32 / 255 -> `normalize`:
        "unit":     [0, 1] (default);
        "imagenet": (x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225);
        "raw":      [0, 255] float32 (for models that carry their own preprocessing layer).
Training adds, per image and before normalisation, the augmentations of an `AugmentConfig`
(see `augment.py`) on float32 [0, 1] images.

Order and randomness:
    Evaluation (`training=False`) reads shards in order, so batches come in `index` order.
    Training shuffles shard order and records (buffer `shuffle_buffer`) with `seed`, and draws per-image
    augmentation seeds from `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`: each new
    iteration (epoch) of the same dataset gets a new order and new augmentations, and two datasets
    built with the same arguments give the same sequence. `deterministic=True` also keeps parallel steps
    in order so two runs give identical batches; `deterministic=False` (the training default) lets
    them finish out of order, which is faster but makes the exact order run-dependent.

Example:
    ds = build("data/scenes", "train", image_size=64, batch_size=32, training=True,
               augment=AugmentConfig(flip=False, randaugment={}), repeat=True)
    model.fit(ds, steps_per_epoch=num_examples("data/scenes", "train") // 32)
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from cpsd_tf.data import augment as aug
from cpsd_tf.data import records
from cpsd_tf.data.augment_config import AugmentConfig
from cpsd_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
NORMALIZATIONS = ("unit", "imagenet", "raw")
IMAGE_SELECTIONS = ("all", "positive")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ANTIALIAS = False  # part of the canonical preprocessing; True costs ~2x in decode+resize on CPU


# --- per-image functions (pure; work eagerly, in tf.function and in Dataset.map) ----------------------


def decode(encoded):
    """Decode JPEG/PNG bytes (scalar string tensor) into uint8 [H, W, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def resize(image, image_size):
    """Resize uint8 [H, W, 3] to uint8 [S, S, 3] (bilinear, rounded): the canonical resize."""
    out = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=ANTIALIAS)
    return tf.saturate_cast(tf.round(out), tf.uint8)


def decode_resize(encoded, image_size):
    """`resize(decode(encoded))`: uint8 [S, S, 3]."""
    return resize(decode(encoded), image_size)


def to_unit(image):
    """uint8 -> float32 in [0, 1]."""
    return tf.cast(image, tf.float32) / 255.0


def _check_normalize(normalize):
    if normalize not in NORMALIZATIONS:
        raise UserError(f"Invalid value for `normalize`. Expected one of {list(NORMALIZATIONS)}. Received: {normalize!r}")


def normalize_image(image, normalize="unit"):
    """Map float32 images in [0, 1] (any leading shape, 3 channels last) to the model's input range."""
    _check_normalize(normalize)
    image = tf.convert_to_tensor(image, tf.float32)
    if normalize == "imagenet":
        mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        if image.shape.rank in (3, 4):  # a 1x1 depthwise conv: ~5x faster than broadcasting a [3] vector
            return aug.channel_affine(image, 1.0 / std, -mean / std)
        return (image - mean) / std
    if normalize == "raw":
        return image * 255.0
    return image


def preprocess_eval(encoded, image_size, normalize="unit"):
    """Encoded JPEG/PNG bytes (scalar string) -> float32 [S, S, 3], exactly as evaluation feeds the model.

    Args:
        encoded: scalar `tf.string` tensor, the image file bytes.
        image_size: int, output side S.
        normalize: str, one of "unit", "imagenet", "raw". Defaults to "unit".

    Example (a batch of bytes, e.g. in a SavedModel signature):
        tf.map_fn(lambda b: preprocess_eval(b, 224), bytes_batch, fn_output_signature=tf.float32)
    """
    return normalize_image(to_unit(decode_resize(encoded, image_size)), normalize)


def preprocess_train(encoded, seed, image_size, augment: Optional[AugmentConfig], normalize="unit"):
    """Encoded bytes -> augmented float32 [S, S, 3]; `seed` int [2] (stateless: same seed, same image)."""
    s_crop, s_aug = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = decode(encoded)
    if augment is not None and augment.crop is not None:
        begin, size = aug.crop_window(tf.shape(image), s_crop, augment.crop)
        image = tf.slice(image, begin, size)
    image = to_unit(resize(image, image_size))
    if augment is not None and not augment.is_identity:
        image = aug.augment_image(image, s_aug, augment)
    return normalize_image(image, normalize)


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
    normalize: str = "unit",
    shuffle_buffer: int = 1024,
    seed: int = 0,
    deterministic: Optional[bool] = None,
    drop_remainder: Optional[bool] = None,
    repeat: bool = False,
    cache: bool = False,
    with_index: bool = False,
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
        normalize: str, "unit", "imagenet" or "raw". Defaults to "unit".
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

    Returns:
        A `tf.data.Dataset`.
    """
    if int(image_size) < 1 or int(batch_size) < 1:
        raise ValueError(f"image_size and batch_size must be >= 1, received {image_size} and {batch_size}")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise TypeError(f"`augment` must be an AugmentConfig or None, received {type(augment).__name__}")
    _check_images(images)
    _check_normalize(normalize)
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

    # --- decode, augment, normalise: the expensive per-image work, in parallel
    if augment is None:

        def prepare(image, y, index):
            image = to_unit(image) if decode_early else to_unit(decode_resize(image, image_size))
            return normalize_image(image, normalize), y, index

    else:
        # one stateless seed [2] per element; a new sequence on each new iteration (epoch)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds)

        def prepare(element, s):
            image, y, index = element
            if decode_early:
                s_aug = tf.random.experimental.stateless_split(s, num=2)[1]
                out = normalize_image(aug.augment_image(to_unit(image), s_aug, augment), normalize)
            else:
                out = preprocess_train(image, s, image_size, augment, normalize)
            return out, y, index

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if with_index:
        ds = ds.map(lambda x, y, index: ({"image": x, "index": index}, y))
    else:
        ds = ds.map(lambda x, y, index: (x, y))
    ds = ds.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)


def for_fit(ds):
    """`({"image", "index"}, targets)` batches -> `(images, targets)` for `model.fit`."""
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
