"""Model zoo: backbones, heads and the one factory `build_model`.

Importing this package registers the custom layers, so a saved `.keras` model reloads with
`keras.saving.load_model(path)`.

Example:
    from cpsd_tf.models import build_model
    model = build_model("resnet101", "transformer", num_classes=80, image_size=448, weights="imagenet")
"""

from cpsd_tf.models import layers  # noqa: F401  (registers the custom layers)
from cpsd_tf.models.backbones import BACKBONES, available_backbones, build_backbone
from cpsd_tf.models.build import FEATURES_LAYER, LOGITS_LAYER, build_model
from cpsd_tf.models.heads import HEADS, available_heads, load_label_embeddings, resolve_head_options

__all__ = [
    "BACKBONES",
    "FEATURES_LAYER",
    "HEADS",
    "LOGITS_LAYER",
    "available_backbones",
    "available_heads",
    "build_backbone",
    "build_model",
    "load_label_embeddings",
    "resolve_head_options",
]
