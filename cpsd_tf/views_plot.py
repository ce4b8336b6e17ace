"""`cpsd-tf data views`: one training batch as a model of the recipe sees it, drawn with its labels.

The batch is batch t (`--step`) of the very stream `fit` trains on (`train.training_stream`: the recipe's
seed, batch size and shuffle buffer, kept in order as a mixed-view run keeps it), augmented as
`data.augment` says, then mixed as `<model>.views` mixes it (`cpsd_tf.views`): the same augmentation, mix
and ASL labels the training step gets. The first `count` images of the batch are drawn (a view depends on
the whole batch it is mixed in, so the batch keeps its training size).
Each panel's title lists the view's positive labels, then the labels its image had before mixing and lost
("lost:") and those the mix brought in ("new:"). With labels by object, each object's box is outlined where
it lands: green when its class is a label of the view, red when it is not.

Uses matplotlib's object API with the Agg canvas, so no global backend is switched.
"""

import textwrap

import numpy as np

from cpsd_tf import io, train, views
from cpsd_tf.errors import UserError

MODELS = ("distill", "baseline", "teachers")


def batch(recipe, model="distill", count=16, step=0):
    """(views float32 [n, S, S, 3], labels [n, m], labels before mixing [n, m], outlines) of the first
    `count` images of training batch `step`; `outlines` (labels by object only, else None) is float32
    [n, S, S]: class + 1 on the outline of each object's box as it lands in the view (drawn per image, then
    mixed by the very same mix), 0 elsewhere.

    Args:
        recipe: the resolved `Recipe`.
        model: str, whose views: "distill" (the student), "baseline" or "teachers". Teachers are shown
            with every class on every image (a teacher trains on its own classes among these).
        count: int >= 1, images drawn, at most the training batch (`train.batch_size`, or the split's size
            when smaller).
        step: int >= 0, the batch position t in the training stream (data pass t // steps per epoch).
    Raises:
        UserError: `count` is larger than the training batch.
    """
    import tensorflow as tf

    from cpsd_tf.data import pipeline

    data, cfg = recipe.data, getattr(recipe, model).views
    size = min(recipe.train.batch_size, pipeline.num_examples(data.dir, data.train_split))
    if count > size:
        raise UserError(f"--count: {count} is more than the training batch ({size} images: train.batch_size "
                        f"{recipe.train.batch_size}, split '{data.train_split}' of {data.dir})")
    by_object = views.by_object(cfg)
    stream = train.training_stream(recipe, size, with_objects=by_object, with_step=True)  # in order, as fit's
    features, y = next(iter(stream.skip(step)))
    x, t = features["image"], features["step"][0]
    objects = features["objects"] if by_object else None
    before = y.numpy()
    outlines = None if objects is None else _outlines(objects.numpy(), data.image_size)
    mix = views.mixer(cfg, recipe.seed)
    if mix is not None:
        if outlines is not None:  # same seed, same batch: the same boxes, quarters and partners
            outlines = mix(tf.constant(outlines[..., None]), y, t, objects)[0].numpy()[..., 0]
        x, y = mix(x, y, t, objects)
    keep = slice(0, count)
    return (x.numpy()[keep], np.asarray(y)[keep], before[keep],
            None if outlines is None else outlines[keep])


def _outlines(objects, size):
    """float32 [n, S, S]: class + 1 on the one-pixel outline of each object's box (rows of `objects`
    [n, K, 5] in pixels, class -1 pads), clipped to the frame."""
    out = np.zeros((len(objects), size, size), np.float32)
    for i, rows in enumerate(objects):
        for c, top, left, bottom, right in rows[rows[:, 0] >= 0]:
            t, lf = int(np.clip(np.floor(top), 0, size - 1)), int(np.clip(np.floor(left), 0, size - 1))
            b, r = int(np.clip(np.ceil(bottom), 1, size)) - 1, int(np.clip(np.ceil(right), 1, size)) - 1
            if b < t or r < lf:
                continue
            out[i, t, lf:r + 1] = out[i, b, lf:r + 1] = c + 1
            out[i, t:b + 1, lf] = out[i, t:b + 1, r] = c + 1
    return out


def describe(cfg) -> str:
    """One line on a views config, e.g. "cutmix (alpha 1, prob 1, labels by object, min_visible 0.5)"."""
    if cfg.kind == "none":
        return "no mixed views"
    rule = (f"labels by object, min_visible {cfg.min_visible:g}" if cfg.labels == "objects" and cfg.kind != "mixup"
            else f"labels by share, min_share {cfg.min_share:g}")
    return f"{cfg.kind} (alpha {cfg.alpha:g}, prob {cfg.prob:g}, {rule})"


def _overlay(outline, labels):
    """RGBA [S, S, 4]: green where an outline's class is a label of the view, red where it is not."""
    rgba = np.zeros((*outline.shape, 4), np.float32)
    on = outline > 0
    kept = np.zeros(outline.shape, bool)
    kept[on] = labels[np.round(outline[on]).astype(int) - 1] > 0
    rgba[on & kept] = (0.0, 1.0, 0.0, 0.75)
    rgba[on & ~kept] = (1.0, 0.0, 0.0, 0.75)
    return rgba


def _augment_text(augment) -> str:
    parts = ["flip"] if augment.flip else []
    if augment.translate:
        parts.append(f"translate {augment.translate:g}")
    parts += [name for name in ("crop", "randaugment", "cutout") if getattr(augment, name) is not None]
    return ", ".join(parts) or "none"


def _title(classes, after, before, width=22):
    now = [classes[c] for c in np.flatnonzero(after)]
    lost = [classes[c] for c in np.flatnonzero((before > 0) & (after == 0))]
    gained = [classes[c] for c in np.flatnonzero((after > 0) & (before == 0))]
    lines = textwrap.wrap(", ".join(now) or "(no label)", width)[:3]
    for word, names in (("lost", lost), ("new", gained)):
        if names:
            lines += textwrap.wrap(f"{word}: " + ", ".join(names), width)[:2]
    return "\n".join(lines)


def plot(path, images, after, before, classes, title, outlines=None, dpi=150):
    """Write the panels of a batch atomically to `path` (PNG); `outlines` (see `batch`) are drawn green for
    an object whose class is a label of the view, red for one that is not."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(2.4 * cols, 2.9 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for i, (ax, image, a, b) in enumerate(zip(axes, images, after, before)):
        ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
        if outlines is not None:
            ax.imshow(_overlay(outlines[i], a), interpolation="nearest")
        ax.set_title(_title(classes, a, b), fontsize=7)
    fig.suptitle(title, fontsize=9)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def run(recipe, out, model="distill", count=16, step=0):
    """Draw the batch of `batch(...)` into `out`; return the line to print."""
    from cpsd_tf.data import records

    if model not in MODELS:
        raise UserError(f"--model: '{model}' is not one of {', '.join(MODELS)}")
    classes = records.load_info(recipe.data.dir).classes
    images, after, before, outlines = batch(recipe, model, count, step)
    cfg = getattr(recipe, model).views
    title = f"{model} training views, batch {step}: {describe(cfg)}; augment: {_augment_text(recipe.data.augment)}"
    if outlines is not None:
        title += "\nboxes: green, an object labelled in the view; red, one that is not"
    plot(out, images, after, before, classes, title, outlines)
    changed = int(((after > 0) != (before > 0)).any(axis=1).sum())
    return (f"[data] {len(images)} {model} training views ({describe(cfg)}) -> {out}; {changed} of them have "
            f"other labels than their image")
