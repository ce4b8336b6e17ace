"""Mixed training views that break context (issue 15): mixup, cutmix and mosaic of a training batch.

`distill.views` mixes every batch before the student AND its online teachers see it, so the teachers'
knowledge of out-of-context scenes (pasted objects, blended scenes) is asked of the student on those very
views (function matching, Beyer et al., CVPR 2022). `baseline.views` gives the baseline the same views, so
a gain can be told apart from the augmentation itself. Teachers are trained without them unless
`teachers.views` says otherwise (not in the paper: teachers that have seen mixed views themselves).

Kinds (one image's share of the mixed view in brackets; `alpha` sets the shares):
- `mixup`: `λ·x_i + (1 − λ)·x_j` [λ ~ Beta(alpha, alpha), the partner 1 − λ];
- `cutmix`: a box of x_j pasted at the same place into x_i, area 1 − λ (λ ~ Beta(alpha, alpha), box
  clipped to the image) [x_i: the fraction of its pixels still visible, x_j: the box's];
- `mosaic`: a 2×2 grid split at a random point (each axis ~ Beta(alpha, alpha)); each quarter shows the
  pixels of one image at that place: x_i top-left, its partners top-right, bottom-left, bottom-right
  (no resampling, so objects keep their scale) [each image: its quarter's area].
Each image of the batch is mixed with probability `prob` (else it keeps its own view); its partners are
the next images of the batch (j = i + 1, i + 2, i + 3 modulo B): the batch is shuffled, so a roll pairs
random images without ever pairing an image with itself (when B > 1).

Labels (the ASL term): the union of the labels of the images whose share of the mixed view is at least
`min_share` (and > 0). For cutmix and mosaic this is the union of the images whose area is kept, an image
left with a sliver below `min_share` dropping its labels (its objects are most likely cut away). For mixup
the same rule: every image blended in with weight >= `min_share` is a positive for its classes. Not a
soft label λ·y_i + (1 − λ)·y_j: ASL's asymmetric focusing and probability shift are defined for 0/1 targets
(a soft target has no calibrated optimum there), and how visible a faint object is, is exactly what the
teachers' logits on the mixed view tell the student through the distillation term. Not the dominant
image's labels alone: those would call a visible blended object a negative. `DistillationLoss` is unchanged.

Labels by object (`labels: objects`, cutmix and mosaic): the area rule above passes on every label of an
image whose pasted box or quarter holds >= `min_share` of the view, whether or not its objects are inside:
on the 32 px scenes most such positives are wrong (a baseline trained on them lost 4.6 mAP with cutmix and
9.7 with mosaic). When the data say where each object is (`<split>.objects.npz`: the scenes generator
and the COCO converter write one per split; `pipeline.build(with_objects=True)` moves the boxes with each
view's flip, translation and RandAugment ops), an object is a positive of the mixed view when at least `min_visible` of its box (its part
inside the frame) is still shown: its own image's box minus the pasted one, the partner's box inside the
pasted one, each mosaic source's box inside its quarter. Boxes are coarse (an occluder or the glyph's
own shape is not known), so `min_visible` 0.5 asks for half a box. Mixup keeps the share rule: a blended
object is everywhere it was.

Where: in the input pipeline, after batching (`pipeline.build(mix=views.mixer(...))`): batch t of the
training stream (t = 0, 1, 2, ... its position in the stream) is mixed with the stateless seed `(seed, t)`,
so one code path serves the baseline, the teachers and the student, the online student's teachers see the
very batch the student sees, and a multi-worker run mixes each global batch before its workers cut their
rows (the same views as one process).

Randomness and cached targets: the view of batch t is a pure function of (the batch, seed, t), eagerly, in
`tf.function` and in `Dataset.map`. It depends on the batch it is mixed in, so it is not a function of
(data pass, record) and clean-image targets (`cached_clean`) cannot describe it (the recipe refuses them).
With `deterministic=True` batch t is the same in every run, so `distill.teacher_logits: cached_views` stores
the teachers' logits of every mixed batch once, by (t, row) (`view_targets.compute_steps`), and every
student of the run joins them by t: the targets `online` computes, at a baseline step's cost. A resumed run
starts its stream (and t) again at 0, in both modes alike.

Cost: hand-written tf ops on the whole batch. Mixing B = 64 images of 32 px in a tf.function costs
0.7-1.1 ms (mixup), 1.1-1.4 ms (cutmix) and 1.7-1.8 ms (mosaic, one gather) of CPU over two runs
(`python -m cpsd_tf.views`), against ~130 ms for a student step; `tools/bench_distill.py --views KIND`
times whole steps. Keras 3's `layers.MixUp` / `CutMix` (0.5 / 1.8 ms in the same measurement) draw from a
stateful `SeedGenerator` and return lambda-weighted soft labels: neither fits the seeds or the label rule
above.

Example:
    images, labels = mix_batch(images, labels, tf.constant([0, 7]), "cutmix", alpha=1.0)
"""

import numpy as np

KINDS = ("none", "mixup", "cutmix", "mosaic")
_KEY_SALT = 0x7E1E5  # keeps view seeds apart from the pipeline's augmentation seeds


def _beta(seed, shape, alpha):
    """Stateless Beta(alpha, alpha) samples, float32 `shape` (via two Gamma draws)."""
    import tensorflow as tf

    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    g1 = tf.random.stateless_gamma(shape, s1, alpha=alpha, dtype=tf.float32)
    g2 = tf.random.stateless_gamma(shape, s2, alpha=alpha, dtype=tf.float32)
    total = g1 + g2
    return tf.where(total > 0, g1 / tf.maximum(total, 1e-30), 0.5)  # tiny alpha: both Gammas may be 0


def _span(length, size, center):
    """Integer [start, end) of a `size`-long span centred at `center`, clipped to [0, length)."""
    import tensorflow as tf

    half = size / 2.0
    start = tf.clip_by_value(tf.round(center - half), 0.0, length)
    end = tf.clip_by_value(tf.round(center + half), 0.0, length)
    return start, end


def _inside(coords, start, end):
    """float32 [B, L]: coordinate l of image b is in [start_b, end_b)."""
    import tensorflow as tf

    return tf.cast((coords[None, :] >= start[:, None]) & (coords[None, :] < end[:, None]), tf.float32)


def _overlap(boxes, top, left, bottom, right):
    """float32 [B, K]: area of boxes [B, K, 4] (top, left, bottom, right) inside the regions [B] given."""
    import tensorflow as tf

    t, l, b, r = tf.unstack(boxes, axis=-1)
    h = tf.maximum(tf.minimum(b, bottom[:, None]) - tf.maximum(t, top[:, None]), 0.0)
    w = tf.maximum(tf.minimum(r, right[:, None]) - tf.maximum(l, left[:, None]), 0.0)
    return h * w


def _object_labels(sources, frame, num_classes, min_visible):
    """Multi-hot [B, m] of the objects that stay visible in a mixed view.

    sources: list of (objects, region, minus): `objects` float32 [B, K, 5] (class, top, left, bottom,
    right; class -1 pads) of the image view i shows there, `region` (top, left, bottom, right) [B] each,
    `minus` True when the image shows everywhere BUT the region (cutmix's own image). `frame`: the view's
    (top, left, bottom, right). An object is a positive when at least `min_visible` of its part inside
    the frame is shown.
    """
    import tensorflow as tf

    out = tf.zeros([tf.shape(frame[0])[0], num_classes])
    for objects, region, minus in sources:
        boxes = objects[..., 1:]
        in_frame = _overlap(boxes, *frame)
        shown = _overlap(boxes, *region)
        if minus:
            shown = in_frame - shown
        keep = (objects[..., 0] >= 0) & (in_frame > 0) & (shown >= min_visible * in_frame)
        hot = tf.one_hot(tf.cast(objects[..., 0], tf.int32), num_classes) * tf.cast(keep, tf.float32)[..., None]
        out = tf.maximum(out, tf.reduce_max(hot, axis=1))
    return out


def mix_batch(images, labels, seed, kind, *, alpha=1.0, prob=1.0, min_share=0.1, objects=None, min_visible=0.5):
    """Mix a batch with itself: images [B, H, W, C], labels [B, m] -> (mixed images, their labels).

    Args:
        images: float [B, H, W, C] tensor (the training batch, e.g. RGB in [0, 1]).
        labels: float [B, m] multi-hot tensor.
        seed: int32/int64 [2] stateless seed; the same seed and batch give the same output.
        kind: str, one of `KINDS` ("none" returns the batch unchanged).
        alpha: float > 0, shares ~ Beta(alpha, alpha) (module docstring). Defaults to 1.0 (uniform).
        prob: float in [0, 1], probability that an image is mixed. Defaults to 1.0.
        min_share: float, an image's labels enter the mixed view's labels when its share is at least this
            (and > 0). Defaults to 0.1.
        objects: float32 [B, K, 5] or None, where each image's objects are in its view (rows (class, top,
            left, bottom, right) in pixels, class -1 pads: `pipeline.build(with_objects=True)`). Given,
            cutmix and mosaic label by object (`min_visible`) instead of by share; mixup keeps the share
            rule (a blended object is visible wherever it is). Defaults to None.
        min_visible: float in (0, 1], an object is a positive of the mixed view when at least this fraction
            of its box (its part inside the frame) is shown. Defaults to 0.5.

    Returns:
        (images, labels) of the same shapes and dtypes.
    """
    import tensorflow as tf

    if kind not in KINDS:
        raise ValueError(f"Invalid view kind. Expected one of {list(KINDS)}. Received: {kind!r}")
    if kind == "none":
        return images, labels
    seed = tf.cast(seed, tf.int64)
    s_apply, s_share, s_place = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    shape = tf.shape(images)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    mixed = tf.random.stateless_uniform([b], s_apply) < prob  # [B]
    x = tf.cast(images, tf.float32)
    y = tf.cast(labels, tf.float32)
    partner_labels = [tf.roll(y, shift=-k, axis=0) for k in range(4 if kind == "mosaic" else 2)]
    partner = tf.roll(x, shift=-1, axis=0)  # image i + 1 (mixup, cutmix)

    if kind == "mixup":
        lam = tf.where(mixed, _beta(s_share, [b], alpha), 1.0)  # the image's own weight
        out = lam[:, None, None, None] * x + (1.0 - lam)[:, None, None, None] * partner
        shares = [lam, 1.0 - lam]
    elif kind == "cutmix":
        lam = _beta(s_share, [b], alpha)
        side = tf.sqrt(1.0 - lam)  # the box: (1 - λ) of the area before clipping, the image's aspect ratio
        center = tf.random.stateless_uniform([b, 2], s_place) * tf.stack([h, w])
        y0, y1 = _span(h, side * h, center[:, 0])
        x0, x1 = _span(w, side * w, center[:, 1])
        keep = tf.cast(mixed, tf.float32)
        rows = _inside(tf.range(h), y0, y1) * keep[:, None]  # an unmixed image: an empty box
        cols = _inside(tf.range(w), x0, x1)
        box = rows[:, :, None, None] * cols[:, None, :, None]  # [B, H, W, 1]
        out = x + box * (partner - x)
        pasted = tf.reduce_sum(rows, 1) * tf.reduce_sum(cols, 1) / (h * w)
        shares = [1.0 - pasted, pasted]
        y1 = tf.where(mixed, y1, y0)  # an unmixed image: an empty box
        regions = [((y0, x0, y1, x1), True), ((y0, x0, y1, x1), False)]
    else:  # mosaic
        split = _beta(s_share, [b, 2], alpha)
        split = tf.where(mixed[:, None], split, 1.0)  # an unmixed image: its quarter is the whole image
        sy, sx = tf.round(split[:, 0] * h), tf.round(split[:, 1] * w)
        top = _inside(tf.range(h), tf.zeros_like(sy), sy)  # [B, H]
        left = _inside(tf.range(w), tf.zeros_like(sx), sx)  # [B, W]
        rows, cols = tf.reduce_sum(top, 1) / h, tf.reduce_sum(left, 1) / w  # top and left fractions
        shares = [rows * cols, rows * (1.0 - cols), (1.0 - rows) * cols, (1.0 - rows) * (1.0 - cols)]
        # pixel (b, r, c) comes from image b + k (k = 0..3 by quarter): one gather (4 masked sums cost 4x)
        k = tf.cast(2.0 * (1.0 - top)[:, :, None] + (1.0 - left)[:, None, :], tf.int32)  # [B, H, W]
        source = (tf.range(b)[:, None, None] + k) % b
        hi, wi = shape[1], shape[2]
        flat = (source * hi + tf.range(hi)[None, :, None]) * wi + tf.range(wi)[None, None, :]
        out = tf.reshape(tf.gather(tf.reshape(x, [-1, shape[3]]), flat), shape)
        zero, hh, ww = tf.zeros_like(sy), tf.fill(tf.shape(sy), h), tf.fill(tf.shape(sx), w)
        regions = [((zero, zero, sy, sx), False), ((zero, sx, sy, ww), False), ((sy, zero, hh, sx), False),
                   ((sy, sx, hh, ww), False)]

    if objects is not None and kind != "mixup":
        objects = tf.cast(objects, tf.float32)
        zeros = tf.zeros([b])
        frame = (zeros, zeros, zeros + h, zeros + w)
        sources = [(tf.roll(objects, shift=-k, axis=0), region, minus) for k, (region, minus) in enumerate(regions)]
        out_labels = _object_labels(sources, frame, tf.shape(labels)[1], min_visible)
    else:
        keep_labels = [tf.cast((s > 0) & (s >= min_share), tf.float32)[:, None] for s in shares]
        out_labels = tf.reduce_max(tf.stack([k * py for k, py in zip(keep_labels, partner_labels)]), axis=0)
    return tf.cast(out, images.dtype), tf.cast(out_labels, labels.dtype)


def _seed_key(seed) -> int:
    """A 62-bit key of the recipe `seed` for the views' stateless seeds."""
    return int(np.random.SeedSequence([int(seed), _KEY_SALT]).generate_state(1, np.uint64)[0] >> np.uint64(2))


def step_seed(seed, step):
    """The stateless seed (int64 [2]) of the views of training step `step` of a run seeded `seed`."""
    import tensorflow as tf

    return tf.stack([tf.constant(_seed_key(seed), tf.int64), tf.cast(step, tf.int64)])


def mixer(cfg, seed, subset=None):
    """A views config (`recipe.ViewsConfig`) -> fn(images, labels, step[, objects]) -> (images, labels), or
    None for "none". `subset` (a teacher's class columns): its labels are those columns, so objects of
    other classes are no label of it."""
    if cfg is None or cfg.kind == "none":
        return None
    column = None
    if subset is not None:  # dataset class -> the teacher's column, -1 for the classes it does not have
        column = np.full(max(subset) + 2, -1.0, np.float32)
        column[np.asarray(subset)] = np.arange(len(subset))

    def mix(images, labels, step, objects=None):
        if objects is not None and column is not None:
            import tensorflow as tf

            cls = tf.cast(objects[..., :1], tf.int32)
            inside = (cls >= 0) & (cls < len(column))
            local = tf.where(inside, tf.gather(tf.constant(column), tf.clip_by_value(cls, 0, len(column) - 1)), -1.0)
            objects = tf.concat([local, objects[..., 1:]], axis=-1)
        return mix_batch(images, labels, step_seed(seed, step), cfg.kind, alpha=cfg.alpha, prob=cfg.prob,
                         min_share=cfg.min_share, objects=objects, min_visible=cfg.min_visible)

    return mix


def by_object(cfg) -> bool:
    """Whether a views config labels its mixed views by object (the training data must carry objects)."""
    return cfg is not None and cfg.labels == "objects" and cfg.kind in ("cutmix", "mosaic")


def check_targets(kind, teacher_logits, where="distill.views.kind"):
    """The error text when mixed views meet clean-image teacher targets, else None."""
    if kind == "none" or teacher_logits != "cached_clean":
        return None
    return (f"key '{where}' is '{kind}' but distill.teacher_logits is 'cached_clean' (clean-image targets cannot "
            f"describe a mixed view); use distill.teacher_logits: online or cached_views")


def _bench(rounds=5, calls=50):
    """Print the cost of mixing one batch (B=64, 32 px) of each kind in a tf.function: the median CPU time
    (process time, all threads: robust to other load on a shared machine) and wall time per batch, the
    kinds taking turns `rounds` times."""
    import time

    import tensorflow as tf

    x = tf.random.uniform([64, 32, 32, 3])
    y = tf.cast(tf.random.uniform([64, 30]) < 0.1, tf.float32)
    corner = tf.random.uniform([64, 5, 2], 0, 24)
    objects = tf.concat([tf.cast(tf.random.uniform([64, 5, 1], 0, 30, tf.int32), tf.float32), corner, corner + 8], -1)
    fns = {kind: tf.function(lambda x, y, s, kind=kind: mix_batch(x, y, step_seed(0, s), kind)) for kind in KINDS[1:]}
    for kind in ("cutmix", "mosaic"):  # labels by object (5 objects per image)
        fns[f"{kind}+objects"] = tf.function(lambda x, y, s, kind=kind: mix_batch(x, y, step_seed(0, s), kind,
                                                                                   objects=objects))
    cpu, wall = {k: [] for k in fns}, {k: [] for k in fns}
    for kind, fn in fns.items():  # trace and warm up
        for s in range(10):
            fn(x, y, tf.constant(s, tf.int64))[0].numpy()
    for r in range(rounds):
        for kind, fn in fns.items():
            for s in range(calls):
                step = tf.constant(r * calls + s, tf.int64)
                c0, w0 = time.process_time(), time.perf_counter()
                fn(x, y, step)[0].numpy()
                cpu[kind].append(time.process_time() - c0)
                wall[kind].append(time.perf_counter() - w0)
    for kind in fns:
        cpu_ms, wall_ms = 1000 * float(np.median(cpu[kind])), 1000 * float(np.median(wall[kind]))
        print(f"{kind:15s} {cpu_ms:.2f} ms CPU, {wall_ms:.2f} ms "
              f"wall per batch (B=64, 32 px, median of {rounds * calls})")


if __name__ == "__main__":
    _bench()
