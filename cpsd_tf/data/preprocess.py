"""Per-image preprocessing: the canonical decode and resize, training augmentation, and the seed of each view.

Canonical preprocessing (`preprocess_eval`; the export stage puts it inside the SavedModel):
    `tf.io.decode_image(channels=3, expand_animations=False)` (JPEG or PNG, gray -> RGB, alpha dropped)
    -> `tf.image.resize` to S x S, bilinear, no antialias (aspect ratio not kept, like ASL's `Resize`)
    -> rounded to uint8 (so caching decoded images is exact) -> float32 / 255: RGB in [0, 1].
Training adds, per image, the augmentations of an `AugmentConfig` (see `augment.py`) on float32 [0, 1]
images.

Every function is pure and works eagerly, in `tf.function` and in `Dataset.map`; `cpsd_tf.data.pipeline`
builds the input streams from them.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from cpsd_tf.data import augment as aug
from cpsd_tf.data.augment_config import AugmentConfig

ANTIALIAS = False  # part of the canonical preprocessing; True costs ~2x in decode+resize on CPU


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


def preprocess_eval(encoded, image_size):
    """Encoded JPEG/PNG bytes (scalar string) -> float32 [S, S, 3] in [0, 1], exactly as evaluation feeds the model.

    Args:
        encoded: scalar `tf.string` tensor, the image file bytes.
        image_size: int, output side S.

    Example (a batch of bytes, e.g. in a SavedModel signature):
        tf.map_fn(lambda b: preprocess_eval(b, 224), bytes_batch, fn_output_signature=tf.float32)
    """
    return to_unit(decode_resize(encoded, image_size))


def preprocess_train(encoded, seed, image_size, augment: Optional[AugmentConfig]):
    """Encoded bytes -> augmented float32 [S, S, 3] in [0, 1]; `seed` int [2] (stateless: same seed, same image)."""
    s_crop, s_aug = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = decode(encoded)
    if augment is not None and augment.crop is not None:
        begin, size = aug.crop_window(tf.shape(image), s_crop, augment.crop)
        image = tf.slice(image, begin, size)
    image = to_unit(resize(image, image_size))
    if augment is not None and not augment.is_identity:
        image = aug.augment_image(image, s_aug, augment)
    return image


def augment_decoded(image, seed, augment: Optional[AugmentConfig]):
    """uint8 [S, S, 3] (already `decode_resize`d) -> augmented float32 [S, S, 3] in [0, 1].

    Equal to `preprocess_train(encoded, seed, S, augment)` when `augment.crop` is None (the crop happens
    before resizing, so it needs the encoded image).
    """
    image = to_unit(image)
    if augment is not None and not augment.is_identity:
        image = aug.augment_image(image, tf.random.experimental.stateless_split(seed, num=2)[1], augment)
    return image


def _seed_key(seed) -> int:
    """A 62-bit key of the stream `seed` (a view seed's first word is key + pass: no overflow, no overlap)."""
    return int(np.random.SeedSequence([int(seed), 0x5EED]).generate_state(1, np.uint64)[0] >> np.uint64(2))


def view_seed(seed, pass_, index):
    """The augmentation seed (int64 [2]) of record `index` in data pass `pass_` of a repeated training stream.

    `[key(seed) + pass_, index]`: a pure function of (seed, pass, index), so the view of a record in a pass
    can be recomputed anywhere (`build_views`). TensorFlow's stateless ops scramble their [2] seed through
    Philox, so neighbouring seeds give independent streams; a plain `stack` keeps the per-element cost of
    the training stream what it was (two `stateless_fold_in` calls cost ~35 us CPU per image).
    Works eagerly, in `tf.function` and in `Dataset.map`.

    Args:
        seed: int, the `seed` given to `build`.
        pass_: int64 scalar (tensor or int), the data pass e >= 0.
        index: int64 scalar (tensor or int), the record's `index`.
    """
    key = tf.constant(_seed_key(seed), tf.int64)
    return tf.stack([key + tf.cast(pass_, tf.int64), tf.cast(index, tf.int64)])
