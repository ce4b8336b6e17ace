"""Where the objects of an image go in its augmented view: boxes moved by the very draws of
`augment.augment_image` (flip and translation exactly, each drawn RandAugment op as the axis-aligned box
around the moved box), for mixed views labelled by object (`cpsd_tf.views`, `pipeline.build(with_objects=True)`).

Boxes are float32 [..., 4] rows (top, left, bottom, right) in pixels of a `size` x `size` image (pixel
edges). The random crop is not covered (`augment_config.objects_moved` names it in a config).
"""

import math

import tensorflow as tf

from cpsd_tf.data.augment import MAX_ROTATE_DEGREES, MAX_SHEAR, MAX_TRANSLATE
from cpsd_tf.data.augment_config import AugmentConfig


def view_geometry(seed, config: AugmentConfig, size):
    """Where `augment_image(image, seed, config)` moves the content of a `size` x `size` image.

    Returns (flipped, dy, dx): bool scalar (mirrored left-right first) and float32 scalars (then shifted
    dy pixels down and dx right), the very draws `random_flip` and `random_translate` make from `seed`.
    RandAugment's geometric ops come after these (`view_boxes` follows them too); the crop is not covered
    (`objects_moved` names it in a config).
    """
    s_flip, s_translate, _, _ = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
    flipped, dy, dx = tf.constant(False), tf.constant(0.0), tf.constant(0.0)
    if config.flip:  # tf.image.stateless_random_flip_left_right: one uniform draw, mirrored below 0.5
        flipped = tf.random.stateless_uniform([], s_flip, 0.0, 1.0) < 0.5
    if config.translate > 0:
        side = tf.cast(size, tf.float32)
        offset = tf.round(tf.random.stateless_uniform([2], s_translate, -config.translate, config.translate) * side)
        limit = tf.floor(side / 2.0)  # `shift` clamps mirror-padded shifts to half the side
        dy, dx = tf.unstack(tf.clip_by_value(offset, -limit, limit))
    return flipped, dy, dx


def move_boxes(boxes, flipped, dy, dx, size):
    """Boxes float32 [..., 4] (top, left, bottom, right in pixels) moved as `view_geometry` says."""
    top, left, bottom, right = tf.unstack(boxes, axis=-1)
    side = tf.cast(size, tf.float32)
    left, right = tf.where(flipped, side - right, left), tf.where(flipped, side - left, right)
    return tf.stack([top + dy, left + dx, bottom + dy, right + dx], axis=-1)


def _forward_maps(config: AugmentConfig, size):
    """float32 [n_ops, 2, 3] for each sign (-1, +1): where each RandAugment op of `config` moves a point.

    Row i maps (x, y, 1) in index coordinates (pixel j's centre at j) to where op i puts that content; ops
    that move no pixel map it to itself. Each is the inverse of the op's own output -> input map.
    """
    ra = config.randaugment
    level = float(ra.magnitude) / 10.0
    side = tf.cast(size, tf.float32)
    maps = []
    for sign in (-1.0, 1.0):
        rows = []
        for name in ra.ops:
            a, b, c, d, e, f = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0  # x' = a x + b y + c, y' = d x + e y + f
            if name == "rotate":  # `rotate`: input = R (x, y) + offset; forward = R^T (x', y') - R^T offset
                angle = sign * MAX_ROTATE_DEGREES * level * math.pi / 180.0
                cos, sin, h = math.cos(angle), math.sin(angle), side - 1.0
                x_off, y_off = (h - (cos * h - sin * h)) / 2.0, (h - (sin * h + cos * h)) / 2.0
                a, b, d, e = cos, sin, -sin, cos
                c, f = -(cos * x_off + sin * y_off), -(-sin * x_off + cos * y_off)
            elif name == "shear_x":  # out[y, x] = in[y, x + L y]
                b = -sign * MAX_SHEAR * level
            elif name == "shear_y":  # out[y, x] = in[y + L x, x]
                d = -sign * MAX_SHEAR * level
            elif name == "translate_x":
                c = tf.round(sign * MAX_TRANSLATE * level * side)
            elif name == "translate_y":
                f = tf.round(sign * MAX_TRANSLATE * level * side)
            rows.append(tf.reshape(tf.cast(tf.stack([a, b, c, d, e, f]), tf.float32), [2, 3]))
        maps.append(tf.stack(rows))
    return tf.stack(maps)


def _enclose(boxes, matrix):
    """The axis-aligned boxes around `boxes` [K, 4] (top, left, bottom, right; pixel edges) moved by the
    forward map `matrix` [2, 3] (index coordinates)."""
    top, left, bottom, right = tf.unstack(boxes, axis=-1)
    xs = tf.stack([left, right, left, right], axis=-1) - 0.5
    ys = tf.stack([top, top, bottom, bottom], axis=-1) - 0.5
    x2 = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2] + 0.5
    y2 = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2] + 0.5
    return tf.stack([tf.reduce_min(y2, -1), tf.reduce_min(x2, -1), tf.reduce_max(y2, -1), tf.reduce_max(x2, -1)], -1)


def view_boxes(boxes, seed, config: AugmentConfig, size):
    """Where `augment_image(image, seed, config)` puts the objects of boxes [K, 4] (top, left, bottom, right
    in pixels of a `size` x `size` image): flip and translate exactly (`view_geometry`), then each drawn
    RandAugment op, a rotated or sheared box becoming the axis-aligned box around it. The draws are the
    augmentation's own. Cutout hides, it does not move, so it is not followed; the crop is not covered
    (`objects_moved`).
    """
    flipped, dy, dx = view_geometry(seed, config, size)
    boxes = move_boxes(boxes, flipped, dy, dx, size)
    ra = config.randaugment
    if ra is None:
        return boxes
    maps = _forward_maps(config, size)
    s_ra = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))[2]
    seeds = tf.random.experimental.stateless_split(s_ra, num=2 * ra.num_ops)
    for i in range(ra.num_ops):  # the draws of `randaugment`
        which = tf.random.stateless_uniform([], seeds[2 * i], minval=0, maxval=len(ra.ops), dtype=tf.int32)
        positive = tf.cast(tf.random.stateless_uniform([], seeds[2 * i + 1]) >= 0.5, tf.int32)
        boxes = _enclose(boxes, maps[positive, which])
    return boxes
