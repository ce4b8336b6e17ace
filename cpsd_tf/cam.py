"""`cpsd-tf cam`: Grad-CAM class activation maps of one label, one row per model (paper Fig. 4).

Grad-CAM (Selvaraju et al., 2017) on the backbone's last feature map, the layer every cpsd-tf model names
`features`: the channels are weighted by the spatial mean of the label logit's gradient, summed, passed
through a ReLU and scaled to [0, 1]. It needs only that layer, so it works for every head (linear,
transformer, query2label) and for teachers (whose outputs are their cluster's classes).
"""

from pathlib import Path

import click
import numpy as np

from cpsd_tf import io
from cpsd_tf.errors import UserError


def grad_cam(model, image, column):
    """Grad-CAM of output `column` for one image.

    Args:
        model: a cpsd-tf Keras model (has a layer named "features").
        image: float32 [S, S, 3], the model's input (already preprocessed).
        column: int, the output whose logit is explained.

    Returns:
        (heat float32 [S, S] in [0, 1] at input resolution, probability float).

    Example:
        heat, p = grad_cam(model, preprocess_eval(png_bytes, 32), column=3)
    """
    import keras
    import tensorflow as tf

    from cpsd_tf.models import FEATURES_LAYER

    try:
        features_layer = model.get_layer(FEATURES_LAYER)
    except ValueError:
        raise UserError(f"model {model.name!r} has no '{FEATURES_LAYER}' layer; Grad-CAM needs a cpsd-tf model") from None
    probe = keras.Model(model.inputs, [features_layer.output, model.outputs[0]])
    x = tf.convert_to_tensor(image[np.newaxis], tf.float32)
    with tf.GradientTape() as tape:
        features, logits = probe(x, training=False)
        score = tf.cast(logits[0, column], tf.float32)
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)  # [1, 1, 1, C]
    cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1))[0]  # [h, w]
    size = image.shape[:2]
    cam = tf.image.resize(cam[..., tf.newaxis], size, method="bilinear")[..., 0].numpy()
    peak = float(cam.max())
    heat = cam / peak if peak > 0 else np.zeros_like(cam)
    return heat.astype(np.float32), float(tf.sigmoid(score).numpy())


def peak(heat):
    """(row, col) of a heat map's maximum: the centre of its top plateau.

    Upsampling keeps a border cell's value flat out to the edge, so a bare argmax would land on row or
    column 0 whenever the hottest cell touches the border.
    """
    rows, cols = np.nonzero(heat >= heat.max() - 1e-6)
    return int(round(rows.mean())), int(round(cols.mean()))


def peak_in_box(heat, box, margin=0):
    """Whether the heat map's peak lies in `box` = (top, left, side), grown by `margin` pixels per side."""
    row, col = peak(heat)
    top, left, side = box
    return top - margin <= row < top + side + margin and left - margin <= col < left + side + margin


def feature_stride(model):
    """Input pixels per cell of the model's `features` map (e.g. 8 for tiny_cnn)."""
    from cpsd_tf.models import FEATURES_LAYER

    return int(model.input_shape[1]) // int(model.get_layer(FEATURES_LAYER).output.shape[1])


def _model_name(path):
    path = Path(path)
    folder = path.parent if path.suffix == ".keras" else path
    return folder.name


def explain(model_paths, image_bytes, label, image_name="image"):
    """One row per model: {name, classes, owns, probability, heat, image} for `label`.

    A model that does not predict `label` (a teacher of another cluster) gets owns=False and no heat map;
    when no model predicts it, a `UserError` lists what the models do predict.
    """
    from cpsd_tf import rundir
    from cpsd_tf.data import preprocess
    from cpsd_tf.predict import check_image

    check_image(image_bytes, image_name)
    rows = []
    for path in model_paths:
        if Path(path).is_dir() and (Path(path) / "saved_model.pb").is_file():
            raise UserError(f"{path}: cam needs a trained .keras model (a SavedModel keeps no layer to explain)")
        model = rundir.load_model(path)
        classes = rundir.model_classes(path, int(model.output_shape[-1]))
        image = preprocess.preprocess_eval(image_bytes, int(model.input_shape[1])).numpy()  # [0, 1] RGB
        row = {"name": _model_name(path), "path": str(path), "classes": classes, "owns": label in classes,
               "image": image, "heat": None, "probability": None}
        if row["owns"]:
            row["heat"], row["probability"] = grad_cam(model, image, classes.index(label))
        rows.append(row)
    if not any(r["owns"] for r in rows):
        known = sorted({c for r in rows for c in r["classes"]})
        shown = ", ".join(known[:12]) + (f", … ({len(known)} in all)" if len(known) > 12 else "")
        raise UserError(f"--label {label!r}: no given model predicts this class; they predict: {shown}")
    return rows


def draw(rows, label, out_png):
    """Write the figure: per row the input and the Grad-CAM overlay (atomically, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(5.2, 2.6 * len(rows)), squeeze=False)
    for (ax_img, ax_cam), row in zip(axes, rows):
        ax_img.imshow(row["image"], interpolation="nearest")
        ax_img.set_title(row["name"], fontsize=9)
        ax_cam.imshow(row["image"], interpolation="nearest")
        if row["owns"]:
            ax_cam.imshow(row["heat"], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
            y, x = peak(row["heat"])
            ax_cam.plot([x], [y], marker="+", color="white", markersize=10, mew=2)
            ax_cam.set_title(f"{label}: p = {row['probability']:.2f}", fontsize=9)
        else:
            ax_cam.imshow(np.full(row["image"].shape[:2], 0.5), cmap="gray", alpha=0.6, vmin=0, vmax=1)
            ax_cam.set_title(f"does not predict {label}", fontsize=9)
        for ax in (ax_img, ax_cam):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with io.atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run(models, image, label, out):
    """`cpsd-tf cam`: explain `label` in `image` with every model, print one line per model, write `out`."""
    image = Path(image)
    if not image.is_file():
        raise UserError(f"{image}: no such image file")
    rows = explain(models, image.read_bytes(), label, image_name=str(image))
    for row in rows:
        if row["owns"]:
            y, x = peak(row["heat"])
            click.echo(f"{row['name']}: p({label}) = {row['probability']:.3f}, activation peak at row {y}, column {x}")
        else:
            click.echo(f"{row['name']}: does not predict {label} (a teacher of {', '.join(row['classes'])})")
    draw(rows, label, out)
    click.echo(f"Wrote {out} ({len(rows)} row{'s' if len(rows) > 1 else ''})")
    return rows
