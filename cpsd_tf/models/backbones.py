"""Backbones by name: image [B, S, S, 3] in [0, 1] RGB -> last spatial feature map [B, h, w, C].

Input convention (the same for every backbone): the data pipeline feeds float32 RGB images in [0, 1].
Each backbone declares the preprocessing its weights were trained with, and the backbone model starts
with an `ImagePreprocessing` layer (named "preprocess") that maps [0, 1] RGB to it:

| backbone            | application expects                         | preprocessing mode |
|---------------------|---------------------------------------------|--------------------|
| resnet50/101/152    | caffe: 0-255 BGR minus ImageNet mean        | "caffe"            |
| efficientnetv2_*    | 0-255 RGB (rescales internally)             | "pixels"           |
| convnext_*          | 0-255 RGB (rescales + normalises internally)| "pixels"           |
| mobilenetv3_*       | 0-255 RGB (rescales internally)             | "pixels"           |
| tiny_cnn            | [-1, 1] RGB                                  | "symmetric"        |

So a saved model always takes [0, 1] RGB images; never apply `preprocess_input` outside the model.

`weights`: "imagenet" (keras.applications download), None (random init) or the path of a weights file
loaded into the backbone with `load_weights` (e.g. a downloaded keras.applications "notop" `.h5` file,
or `model.get_layer("backbone").save_weights("bb.weights.h5")` of an earlier run). Offline, "imagenet"
also works when the keras.applications file is already in `~/.keras/models/`; a failed download is a
`UserError` suggesting a local file.

Example:
    backbone = build_backbone("resnet101", image_size=448, weights="imagenet")
    backbone.output_shape  # (None, 14, 14, 2048)
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import keras

from cpsd_tf.errors import UserError
from cpsd_tf.models.layers import ImagePreprocessing

BACKBONE_LAYER_NAME = "backbone"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: `build(preprocessed_images, weights)` returns the feature-map tensor."""

    build: Callable
    preprocessing: str  # an `ImagePreprocessing` mode
    min_size: int
    pretrained: bool = True


def _application(factory, **extra):
    def build(inputs, weights):
        return factory(include_top=False, weights=weights, input_tensor=inputs, **extra).output

    return build


def _bn(name):
    # Synchronised across replicas under a tf.distribute strategy, so multi-device training computes
    # the same batch statistics as one device; a plain BatchNormalization without a strategy.
    return keras.layers.BatchNormalization(synchronized=True, name=name)


def _residual_block(x, filters, stride, name):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN plus a (projected) shortcut, then ReLU."""
    layers = keras.layers
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = _bn(name=f"{name}_proj_bn")(shortcut)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = _bn(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = _bn(name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _tiny_cnn(inputs, weights):
    """~0.3 M parameter residual CNN: stem 32 -> stages 32/64/128 (stride 2 each): S -> S/8 spatially."""
    del weights  # random init; files are loaded by build_backbone
    layers = keras.layers
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, filters in enumerate((32, 64, 128)):
        x = _residual_block(x, filters, stride=2, name=f"stage{i + 1}")
    return x


_APPS = keras.applications
BACKBONES = {
    "tiny_cnn": BackboneSpec(_tiny_cnn, "symmetric", min_size=8, pretrained=False),
    "resnet50": BackboneSpec(_application(_APPS.ResNet50), "caffe", min_size=32),
    "resnet101": BackboneSpec(_application(_APPS.ResNet101), "caffe", min_size=32),
    "resnet152": BackboneSpec(_application(_APPS.ResNet152), "caffe", min_size=32),
    "efficientnetv2_b0": BackboneSpec(_application(_APPS.EfficientNetV2B0), "pixels", min_size=32),
    "efficientnetv2_b1": BackboneSpec(_application(_APPS.EfficientNetV2B1), "pixels", min_size=32),
    "efficientnetv2_b2": BackboneSpec(_application(_APPS.EfficientNetV2B2), "pixels", min_size=32),
    "efficientnetv2_b3": BackboneSpec(_application(_APPS.EfficientNetV2B3), "pixels", min_size=32),
    "efficientnetv2_s": BackboneSpec(_application(_APPS.EfficientNetV2S), "pixels", min_size=32),
    "convnext_tiny": BackboneSpec(_application(_APPS.ConvNeXtTiny), "pixels", min_size=32),
    "convnext_small": BackboneSpec(_application(_APPS.ConvNeXtSmall), "pixels", min_size=32),
    "convnext_base": BackboneSpec(_application(_APPS.ConvNeXtBase), "pixels", min_size=32),
    "mobilenetv3_small": BackboneSpec(_application(_APPS.MobileNetV3Small), "pixels", min_size=32),
    "mobilenetv3_large": BackboneSpec(_application(_APPS.MobileNetV3Large), "pixels", min_size=32),
}


def available_backbones():
    """Names accepted by `build_backbone`, sorted."""
    return sorted(BACKBONES)


def get_backbone_spec(name):
    """The `BackboneSpec` of `name`; a `UserError` listing the choices when unknown."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(available_backbones())}")
    return spec


def build_backbone(name, image_size, weights=None) -> keras.Model:
    """Build backbone `name` for [image_size, image_size, 3] RGB images in [0, 1].

    Args:
        name: str, a key of `BACKBONES` (see `available_backbones()`).
        image_size: int, side of the square input images.
        weights: "imagenet", None or a path to a weights file. Defaults to None.

    Returns:
        A functional `keras.Model` named "backbone" whose first layer after the input is the
        `ImagePreprocessing` layer "preprocess" and whose output is the last spatial feature map [B, h, w, C].

    Example:
        build_backbone("tiny_cnn", 32).output_shape  # (None, 4, 4, 128)
    """
    spec = get_backbone_spec(name)
    if int(image_size) < spec.min_size:
        raise UserError(f"backbone {name!r} needs image_size >= {spec.min_size}, received {image_size}")
    weights_file: Optional[Path] = None
    if weights == "imagenet":
        if not spec.pretrained:
            raise UserError(f"backbone {name!r} has no ImageNet weights; use weights: null or a weights file")
    elif weights is not None:
        weights_file = Path(weights)
        if not weights_file.is_file():
            raise UserError(f"{weights}: no such weights file (model.weights; use imagenet, null or a file)")

    inputs = keras.Input(shape=(image_size, image_size, 3), name="images")
    x = ImagePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    try:
        features = spec.build(x, "imagenet" if weights == "imagenet" else None)
    except Exception as e:  # no network / cache problems while fetching ImageNet weights
        if weights != "imagenet":
            raise
        raise UserError(
            f"backbone {name!r}: could not get ImageNet weights ({type(e).__name__}: {e}); "
            "set model.weights to a local weights file or null"
        ) from None
    # One name for every backbone, so the full model reaches it as model.get_layer("backbone").
    backbone = keras.Model(inputs, features, name=BACKBONE_LAYER_NAME)
    if weights_file is not None:
        try:
            backbone.load_weights(str(weights_file))
        except Exception as e:
            raise UserError(f"{weights_file}: cannot load these weights into backbone {name!r}: {e}") from None
    return backbone
