"""Small custom layers of the model zoo, registered so a `.keras` file reloads with `keras.saving.load_model`.

Every layer here is registered under the package name "cpsd_tf"; importing `cpsd_tf.models` (or this
module) before `keras.saving.load_model(path)` makes them known. Each layer's `get_config` mirrors its
`__init__`; weights (e.g. class tokens initialised from GloVe vectors) are never stored in the config, they
are restored from the saved weights.
"""

import keras
from keras import ops

# ImageNet channel means (BGR order) that caffe-style `keras.applications.resnet.preprocess_input` subtracts.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

PREPROCESSING_MODES = ("unit", "symmetric", "pixels", "caffe")


@keras.saving.register_keras_serializable(package="cpsd_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Map float RGB images in [0, 1] to the input range a backbone was trained with.

    The data pipeline always feeds RGB images in [0, 1]; this layer (the first layer of every backbone)
    converts them, so a saved model takes [0, 1] RGB images whatever its backbone.

    Args:
        mode: str, one of
            "unit" (leave [0, 1] as is),
            "symmetric" (2x - 1, i.e. [-1, 1]),
            "pixels" (255x: applications that rescale internally, e.g. EfficientNetV2, ConvNeXt, MobileNetV3),
            "caffe" (255x, RGB -> BGR, minus the ImageNet BGR mean: `keras.applications.resnet.preprocess_input`).
            Defaults to "unit".

    Example:
        x = ImagePreprocessing("caffe")(keras.ops.ones((1, 8, 8, 3)))
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"Invalid value for argument `mode`. Expected one of {PREPROCESSING_MODES}. Received: {mode!r}"
            )
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "unit":
            return x
        if self.mode == "symmetric":
            return x * 2.0 - 1.0
        x = x * 255.0
        if self.mode == "pixels":
            return x
        x = ops.flip(x, axis=-1)  # RGB -> BGR
        return x - ops.cast(ops.convert_to_tensor(_CAFFE_BGR_MEAN), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="cpsd_tf")
class ClassTokens(keras.layers.Layer):
    """A learned table of `num_tokens` vectors (one per class), tiled over the batch of its input.

    The input only supplies the batch size. To start from label embeddings (e.g. GloVe) call
    `set_tokens(array)` once the layer is built.

    Args:
        num_tokens: int, number of tokens (classes).
        dim: int, size of each token.
        initializer: str or initializer, initial values of the table. Defaults to None
            (`TruncatedNormal(stddev=0.02)`).

    Example:
        tokens = ClassTokens(5, 16)(keras.ops.zeros((2, 7, 16)))  # [2, 5, 16]
    """

    def __init__(self, num_tokens, dim, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = int(num_tokens)
        self.dim = int(dim)
        self.initializer = keras.initializers.get(initializer or keras.initializers.TruncatedNormal(stddev=0.02))

    def build(self, input_shape):
        self.tokens = self.add_weight(
            name="tokens", shape=(self.num_tokens, self.dim), initializer=self.initializer, trainable=True
        )

    def set_tokens(self, values):
        """Overwrite the table with `values` ([num_tokens, dim])."""
        self.tokens.assign(ops.convert_to_tensor(values, dtype=self.tokens.dtype))

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        tokens = ops.cast(self.tokens, self.compute_dtype)
        return ops.broadcast_to(tokens[None], (batch, self.num_tokens, self.dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_tokens, self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_tokens": self.num_tokens,
            "dim": self.dim,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="cpsd_tf")
class PositionEmbedding(keras.layers.Layer):
    """Add a learned position vector to each token of a fixed-length sequence [B, L, D].

    Args:
        stddev: float, standard deviation of the initial vectors. Defaults to 0.02.

    Example:
        y = PositionEmbedding()(keras.ops.zeros((2, 49, 16)))
    """

    def __init__(self, stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)

    def build(self, input_shape):
        length, dim = input_shape[-2], input_shape[-1]
        if length is None or dim is None:
            raise ValueError(
                f"PositionEmbedding needs a static sequence length and width; received shape {input_shape}"
            )
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(length, dim),
            initializer=keras.initializers.TruncatedNormal(stddev=self.stddev),
            trainable=True,
        )

    def call(self, tokens):
        return tokens + ops.cast(self.embeddings, self.compute_dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@keras.saving.register_keras_serializable(package="cpsd_tf")
class PerClassLogits(keras.layers.Layer):
    """Per-class linear read-out: logit_i = <w_i, token_i> + b_i for tokens [B, m, D] -> logits [B, m].

    Each class has its own weight vector, dotted with that class's token (Query2Label's GroupWiseLinear).

    Example:
        logits = PerClassLogits()(keras.ops.ones((2, 5, 16)))  # [2, 5]
    """

    def build(self, input_shape):
        num, dim = input_shape[-2], input_shape[-1]
        limit = 1.0 / float(dim) ** 0.5  # torch nn.Linear's default, as in Query2Label
        self.kernel = self.add_weight(
            name="kernel",
            shape=(num, dim),
            initializer=keras.initializers.RandomUniform(-limit, limit),
            trainable=True,
        )
        self.bias = self.add_weight(
            name="bias", shape=(num,), initializer=keras.initializers.RandomUniform(-limit, limit), trainable=True
        )

    def call(self, tokens):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = ops.cast(self.bias, self.compute_dtype)
        return ops.sum(tokens * kernel[None], axis=-1) + bias[None]

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]
