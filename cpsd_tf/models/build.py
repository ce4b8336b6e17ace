"""The one model factory: backbone + head -> keras.Model, [0, 1] RGB images -> logits [B, num_classes].

Every model (baseline, teachers, student) comes from `build_model`, so they share one architecture and
differ only in `num_classes` (and the class names/indices a teacher passes for its cluster).

Layers of the returned functional model that other stages rely on:
- "backbone": the backbone sub-model (input preprocessing included; see `backbones.py`);
- "features": identity over the backbone's last spatial map [B, h, w, C] (Grad-CAM target:
  `model.get_layer("features").output`);
- "logits": the float32 output [B, num_classes].

Saved models: `model.save("model.keras")` then, after `import cpsd_tf.models`,
`keras.saving.load_model("model.keras")` restores it (the custom layers register on import).
"""

import keras

from cpsd_tf.models.backbones import build_backbone, get_backbone_spec
from cpsd_tf.models.heads import apply_head, prepare_head

FEATURES_LAYER = "features"
LOGITS_LAYER = "logits"


def build_model(
    backbone,
    head,
    num_classes,
    image_size,
    *,
    weights=None,
    head_options=None,
    class_names=None,
    class_indices=None,
    name=None,
) -> keras.Model:
    """Build a multi-label classifier taking float32 [B, S, S, 3] RGB images in [0, 1], returning logits.

    Args:
        backbone: str, a backbone name (`cpsd_tf.models.available_backbones()`).
        head: str, a head name: "linear", "transformer" or "query2label".
        num_classes: int, number of outputs (m for baseline/student, |C_t| for a teacher).
        image_size: int, side S of the square input images.
        weights: "imagenet", None or a path to backbone weights. Defaults to None (random init).
        head_options: dict, head options (e.g. {"hidden": 512, "depth": 3, "label_embedding": "glove.txt"});
            unknown keys are a `UserError`. Defaults to None (the head's defaults).
        class_names: list of str, names of the outputs, in order (matched against a text label-embedding
            file). Defaults to None.
        class_indices: list of int, dataset class index of each output (rows of a .npy label embedding;
            a teacher passes its cluster). Defaults to None (0..num_classes-1).
        name: str, model name. Defaults to "<backbone>_<head>".

    Example:
        model = build_model("tiny_cnn", "linear", num_classes=7, image_size=32)
        model(np.zeros((2, 32, 32, 3), "float32")).shape  # (2, 7)
    """
    get_backbone_spec(backbone)  # fail fast on names and options, before any weights are fetched
    options, embeddings = prepare_head(head, num_classes, head_options, class_names, class_indices)
    trunk = build_backbone(backbone, image_size, weights=weights)

    images = keras.Input(shape=(image_size, image_size, 3), name="images")
    features = keras.layers.Identity(name=FEATURES_LAYER)(trunk(images))
    logits = apply_head(head, features, num_classes, options, embeddings)
    return keras.Model(images, logits, name=name or f"{backbone}_{head}")
