"""Per-image training augmentations built from `tf.image` / raw ops, seeded with stateless random ops.

Every function takes ONE image, float32 [H, W, 3] with values in [0, 1], and returns the same shape,
dtype and range. Random functions take a `seed` int32/int64 tensor of shape [2] (stateless: same seed,
same result), so they run identically eagerly, inside `tf.function` and inside `Dataset.map`.

Why not `keras.layers.RandAugment`: measured on 2 CPU cores it runs at ~30 img/s at 224 px inside
`Dataset.map` (it computes all ops per call and applies one op choice to a whole batch); here each image
draws its own ops and `tf.switch_case` runs only the chosen one.

The config models (`AugmentConfig`, ...) live in `augment_config.py` (no TensorFlow import) and are
re-exported here.

Example:
    cfg = AugmentConfig(flip=True, randaugment={"num_ops": 2, "magnitude": 9}, cutout={})
    out = augment_image(image, tf.constant([0, 7]), cfg)
"""

import math

import tensorflow as tf

from cpsd_tf.data.augment_config import (  # noqa: F401  (re-exported)
    RANDAUGMENT_OPS,
    AugmentConfig,
    CropConfig,
    CutoutConfig,
    RandAugmentConfig,
    objects_moved,
)

GEOMETRIC_FILL = 0.5  # mid-gray fill of rotate/shear/translate (RandAugment's (128, 128, 128))

# Magnitude ranges at magnitude 10 (timm's "increasing" RandAugment: a larger magnitude is always stronger).
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.45  # fraction of the side
MAX_ENHANCE = 0.9  # color/contrast/brightness/sharpness factor is 1 +- 0.9 * magnitude / 10
MAX_POSTERIZE_DROP = 4  # bits dropped at magnitude 10 (keeps 4 of 8)


# --- pixel ops ---------------------------------------------------------------------------------------
# Speed notes (TF 2.21 CPU, one 224 px image inside `Dataset.map`, CPU time): elementwise ops with a scalar
# cost ~0.02 ms, but broadcasting a [3] vector over [H, W, 3] (~0.3 ms), `tf.where` on full images
# (~0.75 ms), reductions over axes [0, 1] (~0.45 ms) and a 1x1 depthwise convolution (~0.2 ms) do not.
# Per-channel maths therefore views the image as rows [H, W * 3] and broadcasts a [W * 3] row (the [3]
# vector tiled W times; ~0.04 ms), and per-channel reductions go over rows first, then over [W, 3].
# `tf.gather` costs ~0.7 ms per 150k elements, so a lookup table pays only where nothing elementwise
# can replace it (equalize); solarize and posterize stay elementwise (~0.1 ms).

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L")


def blend(degenerate, image, factor):
    """`degenerate + factor * (image - degenerate)`, clipped to [0, 1] (PIL's ImageEnhance)."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _rows(image):
    """[..., W, 3] -> rows [N, W * 3] (channels interleaved), and the [W * 3] row of a per-channel [3] vector."""
    shape = tf.shape(image)
    rows = tf.reshape(image, [-1, shape[-2] * shape[-1]])
    return rows, lambda vector: tf.tile(tf.reshape(vector, [3]), [shape[-2]])


def channel_affine(image, scale, offset):
    """`image * scale + offset` with per-channel [3] `scale` and `offset`, for [H, W, 3] or [B, H, W, 3]."""
    rows, row = _rows(image)
    out = rows * row(tf.cast(scale, image.dtype)) + row(tf.cast(offset, image.dtype))
    return tf.reshape(out, tf.shape(image))


def channel_reduce(image, reduce_fn):
    """Per-channel reduction [3] of an [H, W, 3] image (`tf.reduce_min`, `tf.reduce_max`, `tf.reduce_mean`)."""
    rows, _ = _rows(image)
    return reduce_fn(tf.reshape(reduce_fn(rows, axis=0), [-1, 3]), axis=0)


def color_matrix(image, matrix):
    """Per-pixel colour transform `out[c] = sum_k image[k] * matrix[k, c]` (a 1x1 convolution)."""
    kernel = tf.reshape(tf.cast(matrix, tf.float32), [1, 1, 3, 3])
    return tf.nn.conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]


def grayscale(image):
    """Luma [H, W, 1] of an RGB image."""
    r, g, b = GRAY_WEIGHTS
    return image[..., 0:1] * r + image[..., 1:2] * g + image[..., 2:3] * b


def autocontrast(image):
    """Stretch each channel to the full [0, 1] range (a constant channel is left as is)."""
    lo = channel_reduce(image, tf.reduce_min)
    hi = channel_reduce(image, tf.reduce_max)
    ok = hi > lo
    scale = tf.where(ok, 1.0 / tf.where(ok, hi - lo, 1.0), 1.0)
    offset = tf.where(ok, -lo * scale, 0.0)
    return tf.clip_by_value(channel_affine(image, scale, offset), 0.0, 1.0)


def equalize(image):
    """Histogram equalisation per channel on the 8-bit levels (PIL's `ImageOps.equalize` algorithm).

    One histogram of `level + 256 * channel` (768 bins), a [768] lookup table built from it, one gather.
    """
    rows, row = _rows(image)
    index = tf.cast(rows * 255.0 + 0.5, tf.int32) + row(tf.constant([0, 256, 512]))  # [H, W * 3]
    hist = tf.raw_ops.Bincount(arr=tf.reshape(index, [-1]), size=768, weights=tf.constant([], tf.int32))
    hist = tf.reshape(hist, [3, 256])
    nonzero = tf.cast(hist > 0, tf.int32)
    last = 255 - tf.argmax(tf.reverse(nonzero, axis=[1]), axis=1, output_type=tf.int32)
    last_count = tf.gather(hist, last, batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last_count) // 255  # [3]
    safe = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1) + safe // 2) // safe
    lut = tf.clip_by_value(tf.concat([tf.zeros([3, 1], tf.int32), lut[:, :-1]], axis=1), 0, 255)
    identity = tf.broadcast_to(tf.range(256, dtype=tf.int32), [3, 256])
    lut = tf.where(step[:, None] == 0, identity, lut)  # PIL leaves a channel with one level unchanged
    lut = tf.reshape(tf.cast(lut, tf.float32) / 255.0, [768])
    return tf.reshape(tf.gather(lut, index), tf.shape(image))


def solarize(image, threshold):
    """Invert the pixels at or above `threshold` (in [0, 1])."""
    above = tf.cast(image >= threshold, tf.float32)
    return image + above * (1.0 - 2.0 * image)


def posterize(image, bits):
    """Keep the `bits` (1..8) most significant bits of each 8-bit level."""
    step = float(2 ** (8 - int(bits)))
    return tf.floor(tf.round(image * 255.0) / step) * (step / 255.0)


def adjust_color(image, factor):
    """Saturation: blend with the grayscale image (factor 0 = gray, 1 = unchanged)."""
    factor = tf.cast(factor, tf.float32)
    to_gray = tf.tile(tf.constant(GRAY_WEIGHTS)[:, None], [1, 3])  # [3 in, 3 out]
    matrix = factor * tf.eye(3) + (1.0 - factor) * to_gray
    return tf.clip_by_value(color_matrix(image, matrix), 0.0, 1.0)


def adjust_contrast(image, factor):
    """Contrast: blend with the mean gray level (factor 0 = flat gray, 1 = unchanged)."""
    mean = tf.tensordot(channel_reduce(image, tf.reduce_mean), tf.constant(GRAY_WEIGHTS), 1)  # mean of the luma
    return blend(mean, image, factor)


def adjust_brightness(image, factor):
    """Brightness: blend with black (factor 0 = black, 1 = unchanged)."""
    return tf.clip_by_value(image * factor, 0.0, 1.0)


def sharpness(image, factor):
    """Blend with PIL's smoothing filter (3x3, centre 5, /13); border pixels stay as they are.

    The blend `smooth + factor * (image - smooth)` is folded into the 3x3 kernel: one convolution.
    """
    factor = tf.cast(factor, tf.float32)
    smooth = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    centre = tf.constant([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    kernel = tf.tile(((1.0 - factor) * smooth + factor * centre)[:, :, None, None], [1, 1, 3, 1])
    inner = tf.nn.depthwise_conv2d(image[None], kernel, strides=[1, 1, 1, 1], padding="VALID")[0]
    shape = tf.shape(image)  # (oneDNN returns the input shape, not an empty one, for sides < 3: cut to size)
    inner = inner[: tf.maximum(shape[0] - 2, 0), : tf.maximum(shape[1] - 2, 0)]
    band = tf.concat([image[1:-1, :1], tf.clip_by_value(inner, 0.0, 1.0), image[1:-1, -1:]], axis=1)
    return tf.ensure_shape(tf.concat([image[:1], band, image[-1:]], axis=0), image.shape)


# --- geometric ops -----------------------------------------------------------------------------------


def transform(image, matrix, *, fill_mode="CONSTANT", fill_value=GEOMETRIC_FILL, interpolation="BILINEAR"):
    """Apply a projective transform given as the 8 numbers [a0, a1, a2, b0, b1, b2, c0, c1].

    Output pixel (x, y) samples the input at ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k) with
    k = c0 x + c1 y + 1 (the `tf.raw_ops.ImageProjectiveTransformV3` convention).
    """
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.reshape(tf.cast(matrix, tf.float32), [1, 8]),
        output_shape=shape[:2],
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation=interpolation,
        fill_mode=fill_mode,
    )[0]
    return tf.ensure_shape(out, image.shape)


def rotate(image, degrees):
    """Rotate about the centre by `degrees` (counter-clockwise), gray fill.

    (`transform`, not a per-pixel `crop_and_resize`: with the angle known only at run time, making the
    50k sample points costs more than the ~0.35 ms the resampling saves at 224 px.)
    """
    angle = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    shape = tf.cast(tf.shape(image), tf.float32)
    h, w = shape[0] - 1.0, shape[1] - 1.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_off = (w - (cos * w - sin * h)) / 2.0
    y_off = (h - (sin * w + cos * h)) / 2.0
    return transform(image, tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0]))


def _shear(image, level, fill, vertical):
    """Shear by whole lines: out[y, x] = image[y, x + level * y] (rows), or image[y + level * x, x] (columns).

    Each output line is one input line shifted, so the bilinear sample of `transform` is a linear one along
    the line: one 1-pixel-wide `crop_and_resize` box per line, ~3x cheaper than `transform` for rows and
    ~1.5x for columns (whose boxes come out transposed). The image is padded with one `fill` line on each
    side, so a sample less than one pixel outside blends the edge pixel with `fill` and one further out is
    `fill`, as `transform`'s CONSTANT mode does.
    """
    shape = tf.shape(image)
    lines, length = (shape[1], shape[0]) if vertical else (shape[0], shape[1])
    pad = [[1, 1], [0, 0], [0, 0]] if vertical else [[0, 0], [1, 1], [0, 0]]
    padded = tf.pad(image, pad, constant_values=fill)
    across = tf.range(lines, dtype=tf.float32)
    start = tf.cast(level, tf.float32) * across + 1.0  # first sample of each line, padded coordinates
    across = across / tf.cast(tf.maximum(lines - 1, 1), tf.float32)
    span = tf.cast(length + 1, tf.float32)  # padded length - 1
    start, end = start / span, (start + tf.cast(length - 1, tf.float32)) / span
    if vertical:
        boxes, crop = tf.stack([start, across, end, across], axis=1), tf.stack([length, 1])
    else:
        boxes, crop = tf.stack([across, start, across, end], axis=1), tf.stack([1, length])
    out = tf.image.crop_and_resize(padded[None], boxes, tf.zeros([lines], tf.int32), crop, extrapolation_value=fill)
    if vertical:  # [W, H, 1, 3]: one box per column
        return tf.ensure_shape(tf.transpose(tf.reshape(out, [lines, length, 3]), [1, 0, 2]), image.shape)
    return tf.ensure_shape(tf.reshape(out, shape), image.shape)


def shear_x(image, level):
    """Horizontal shear x' = x + level * y (PIL's affine convention), gray fill.

    Equal to `transform(image, [1, level, 0, 0, 1, 0, 0, 0])` (bilinear, CONSTANT fill) within float
    rounding (< 0.02 grey levels).
    """
    return _shear(image, level, GEOMETRIC_FILL, vertical=False)


def shear_y(image, level):
    """Vertical shear y' = y + level * x, gray fill (as `transform(image, [1, 0, 0, level, 1, 0, 0, 0])`)."""
    return _shear(image, level, GEOMETRIC_FILL, vertical=True)


def shift(image, dy, dx, *, mode="CONSTANT", fill=GEOMETRIC_FILL):
    """Shift the content by whole pixels (dy down, dx right) with `tf.pad` `mode` ("CONSTANT" with `fill`,
    or "SYMMETRIC": mirror padding, shifts clamped to half the side). Cheaper than `transform`."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    limit_h, limit_w = (h, w) if mode == "CONSTANT" else (h // 2, w // 2)
    dy = tf.clip_by_value(tf.cast(dy, tf.int32), -limit_h, limit_h)
    dx = tf.clip_by_value(tf.cast(dx, tf.int32), -limit_w, limit_w)
    part = image[tf.maximum(-dy, 0) : h - tf.maximum(dy, 0), tf.maximum(-dx, 0) : w - tf.maximum(dx, 0)]
    paddings = [[tf.maximum(dy, 0), tf.maximum(-dy, 0)], [tf.maximum(dx, 0), tf.maximum(-dx, 0)], [0, 0]]
    if mode == "CONSTANT":
        out = tf.pad(part, paddings, constant_values=fill)
    else:
        out = tf.pad(part, paddings, mode=mode)
    return tf.ensure_shape(out, image.shape)


def translate_xy(image, dx, dy):
    """Shift the content by (dx, dy) pixels (rounded; positive = right/down), gray fill."""
    return shift(image, tf.round(tf.cast(dy, tf.float32)), tf.round(tf.cast(dx, tf.float32)))


# --- RandAugment -------------------------------------------------------------------------------------


def _op_table(magnitude):
    """Name -> fn(image, sign) at a fixed magnitude; `sign` is a float32 scalar, +1 or -1."""
    level = float(magnitude) / 10.0
    enhance = MAX_ENHANCE * level

    def side(image, axis):
        return tf.cast(tf.shape(image)[axis], tf.float32)

    return {
        "identity": lambda x, s: x,
        "autocontrast": lambda x, s: autocontrast(x),
        "equalize": lambda x, s: equalize(x),
        "rotate": lambda x, s: rotate(x, s * MAX_ROTATE_DEGREES * level),
        # PIL threshold 256 - 256 * level on 8-bit levels: nothing is inverted at magnitude 0.
        "solarize": lambda x, s: solarize(x, (256.0 - 256.0 * level) / 255.0),
        "color": lambda x, s: adjust_color(x, 1.0 + s * enhance),
        "posterize": lambda x, s: posterize(x, 8 - int(MAX_POSTERIZE_DROP * level)),
        "contrast": lambda x, s: adjust_contrast(x, 1.0 + s * enhance),
        "brightness": lambda x, s: adjust_brightness(x, 1.0 + s * enhance),
        "sharpness": lambda x, s: sharpness(x, 1.0 + s * enhance),
        "shear_x": lambda x, s: shear_x(x, s * MAX_SHEAR * level),
        "shear_y": lambda x, s: shear_y(x, s * MAX_SHEAR * level),
        "translate_x": lambda x, s: translate_xy(x, s * MAX_TRANSLATE * level * side(x, 1), 0.0),
        "translate_y": lambda x, s: translate_xy(x, 0.0, s * MAX_TRANSLATE * level * side(x, 0)),
    }


def apply_op(image, name, magnitude, sign=1.0):
    """Apply one RandAugment op by name at `magnitude` (0..10); `sign` picks the direction of signed ops."""
    table = _op_table(magnitude)
    if name not in table:
        raise ValueError(f"Unknown RandAugment op '{name}'. Expected one of {list(RANDAUGMENT_OPS)}.")
    return table[name](image, tf.constant(sign, tf.float32))


def randaugment(image, seed, *, num_ops=2, magnitude=9.0, ops=RANDAUGMENT_OPS):
    """RandAugment for one image: `num_ops` ops drawn uniformly with replacement, each with a random sign.

    Only the drawn op runs (`tf.switch_case`), so the cost is that of `num_ops` ops, not of all of them.
    """
    table = _op_table(magnitude)
    fns = [table[name] for name in ops]
    seeds = tf.random.experimental.stateless_split(seed, num=2 * num_ops)
    for i in range(num_ops):
        which = tf.random.stateless_uniform([], seeds[2 * i], minval=0, maxval=len(fns), dtype=tf.int32)
        coin = tf.random.stateless_uniform([], seeds[2 * i + 1])
        sign = tf.where(coin < 0.5, -1.0, 1.0)
        branches = [lambda fn=fn, x=image: fn(x, sign) for fn in fns]
        image = tf.ensure_shape(tf.switch_case(which, branches), image.shape)
    return image


# --- other augmentations -----------------------------------------------------------------------------


def cutout(image, seed, *, probability=1.0, size=0.5, fill="random"):
    """Erase one square of side `size` x image side, centred uniformly (clipped at the borders).

    Applied with `probability`; `fill` is "random" (one random colour per image), "gray" (0.5) or "zero".
    """
    if fill not in ("random", "gray", "zero"):
        raise ValueError(f"Invalid cutout fill '{fill}'. Expected one of ['random', 'gray', 'zero'].")
    s_apply, s_y, s_x, s_fill = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    ch = tf.cast(tf.round(size * tf.cast(h, tf.float32)), tf.int32)
    cw = tf.cast(tf.round(size * tf.cast(w, tf.float32)), tf.int32)
    cy = tf.random.stateless_uniform([], s_y, minval=0, maxval=h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], s_x, minval=0, maxval=w, dtype=tf.int32)
    y0 = tf.clip_by_value(cy - ch // 2, 0, h)
    y1 = tf.clip_by_value(cy - ch // 2 + ch, 0, h)
    x0 = tf.clip_by_value(cx - cw // 2, 0, w)
    x1 = tf.clip_by_value(cx - cw // 2 + cw, 0, w)
    if fill == "random":
        color = tf.random.stateless_uniform([3], s_fill)
    else:
        color = tf.fill([3], 0.5 if fill == "gray" else 0.0)

    def erase():
        block = tf.broadcast_to(color, [y1 - y0, x1 - x0, 3])
        band = tf.concat([image[y0:y1, :x0], block, image[y0:y1, x1:]], axis=1)
        return tf.ensure_shape(tf.concat([image[:y0], band, image[y1:]], axis=0), image.shape)

    apply = tf.random.stateless_uniform([], s_apply) < probability
    return tf.cond(apply, erase, lambda: image)


def random_flip(image, seed):
    """Horizontal flip with probability 0.5."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def random_translate(image, seed, max_fraction):
    """Shift by whole pixels, uniformly up to `max_fraction` (<= 0.5) of each side, mirror padding."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    offset = tf.round(tf.random.stateless_uniform([2], seed, -max_fraction, max_fraction) * shape)
    return shift(image, offset[0], offset[1], mode="SYMMETRIC")


def crop_window(image_shape, seed, crop: CropConfig):
    """Random resized crop window (begin [3], size [3]) for an image of `image_shape` [H, W, C]."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=list(crop.ratio),
        area_range=list(crop.scale),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def augment_image(image, seed, config: AugmentConfig):
    """Flip -> translate -> RandAugment -> cutout on one float32 [H, W, 3] image in [0, 1].

    (The random resized crop of `config.crop` happens before resizing, in the pipeline: see `crop_window`.)
    """
    s_flip, s_translate, s_ra, s_cutout = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
    if config.flip:
        image = random_flip(image, s_flip)
    if config.translate > 0:
        image = random_translate(image, s_translate, config.translate)
    if config.randaugment is not None:
        ra = config.randaugment
        image = randaugment(image, s_ra, num_ops=ra.num_ops, magnitude=ra.magnitude, ops=ra.ops)
    if config.cutout is not None and config.cutout.probability > 0:
        c = config.cutout
        image = cutout(image, s_cutout, probability=c.probability, size=c.size, fill=c.fill)
    return image
