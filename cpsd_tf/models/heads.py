"""Classification heads by name: spatial features [B, h, w, C] -> per-class logits [B, num_classes].

One factory, `prepare_head` + `apply_head` (used by `build_model`), serves the baseline (all m classes), every teacher (the |C_t| classes of its
cluster: pass that cluster's `class_names` / `class_indices`) and the student.

- "linear": global average pooling + dense (the paper's plain ResNet101 baseline).
- "transformer": the paper's "ResNet101-TF" (§4.1): features -> 1x1 projection to `hidden` + learned
  position embedding, one class token per class prepended, a pre-norm transformer encoder (depth 3,
  4 heads, hidden 1024 in the paper), per-class linear read-out of each class token. Class tokens start
  from a label-embedding file (the paper uses GloVe) when `label_embedding` is given, else learned.
- "query2label": Query2Label (Liu et al. 2021): one learnable query per class, a post-norm (DETR-style)
  transformer decoder (self-attention among queries, cross-attention over the projected feature tokens
  whose keys carry a learned position embedding), per-class linear read-out. Defaults follow Q2L-R101
  (hidden 2048, 4 heads, feed-forward 4 x hidden, 2 decoder layers). Differences from the official Q2L,
  kept for simplicity: no transformer encoder layer before the decoder, learned (not sine) positions, and
  the first decoder layer keeps its self-attention.

Label-embedding files (`label_embedding` head option):
- text (any suffix but .npy): one line per word/class, "name v1 v2 ... vd" (GloVe format); classes are
  matched by name (case-insensitive, "_" equals " ", multi-word names like "traffic light" allowed);
- `.npy`: a float array [M, d] whose row j is the vector of dataset class j; the model's class `i` takes
  row `class_indices[i]` (a teacher passes its cluster's indices; default 0..num_classes-1).
If d differs from `hidden`, a learned dense layer ("label_projection") maps the vectors to `hidden`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from cpsd_tf.errors import UserError
from cpsd_tf.models.layers import ClassTokens, PerClassLogits, PositionEmbedding

layers = keras.layers


# === Options ===


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1"


def _positive_float(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return ok, "a number > 0"


def _rate(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
    return ok, "a number in [0, 1)"


def _optional_path(value):
    return value is None or (isinstance(value, str) and bool(value)), "a file path or null"


_CHECKS = {
    "hidden": _positive_int,
    "depth": _positive_int,
    "heads": _positive_int,
    "mlp_ratio": _positive_float,
    "dropout": _rate,
    "label_embedding": _optional_path,
}


@dataclass(frozen=True)
class HeadSpec:
    """A head: `build(features, num_classes, embeddings, options)` returns the logits tensor."""

    build: Callable
    defaults: dict


def resolve_head_options(head, options=None):
    """Defaults of `head` overridden by `options`; unknown keys and bad values are `UserError`s.

    Example:
        resolve_head_options("transformer", {"hidden": 64})["depth"]  # 3
    """
    spec = get_head_spec(head)
    options = dict(options or {})
    for key, value in options.items():
        if key not in spec.defaults:
            allowed = ", ".join(sorted(spec.defaults)) or "(none)"
            raise UserError(f"unknown head option {key!r} for head {head!r}; allowed: {allowed}")
        ok, expected = _CHECKS[key](value)
        if not ok:
            raise UserError(f"head option {key!r} of head {head!r} must be {expected}, received {value!r}")
    resolved = {**spec.defaults, **options}
    if "heads" in resolved and resolved["hidden"] % resolved["heads"]:
        raise UserError(
            f"head {head!r}: option 'hidden' ({resolved['hidden']}) must be divisible by 'heads' ({resolved['heads']})"
        )
    return resolved


# === Label embeddings ===


def _normalise(name):
    return tuple(str(name).lower().replace("_", " ").split())


def _read_text_embeddings(path, class_names):
    wanted = {_normalise(n): n for n in class_names}
    first_words = {words[0] for words in wanted if words}
    found = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            first = line.split(None, 1)
            key = _normalise(first[0]) if first else ()
            if not key or key[0] not in first_words:  # cheap skip of most lines of a big GloVe file
                continue
            tokens = line.lower().replace("_", " ").split()
            # Longest class name that starts the line and is followed only by numbers.
            for words, name in sorted(wanted.items(), key=lambda kv: -len(kv[0])):
                if name in found or tuple(tokens[: len(words)]) != words:
                    continue
                try:
                    vector = np.asarray([float(t) for t in tokens[len(words) :]], dtype=np.float32)
                except ValueError:
                    continue
                if vector.size:
                    found[name] = vector
                    break
    missing = [n for n in class_names if n not in found]
    if missing:
        listed = ", ".join(map(repr, missing))
        raise UserError(f"{path}: no label-embedding line for class {missing[0]!r} (missing: {listed})")
    dims = {n: found[n].size for n in class_names}
    dim = dims[class_names[0]]
    for name, d in dims.items():
        if d != dim:
            raise UserError(f"{path}: class {name!r} has a {d}-d vector but class {class_names[0]!r} has {dim}")
    return np.stack([found[n] for n in class_names])


def _read_npy_embeddings(path, num_classes, class_names, class_indices):
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"{path}: cannot read as a .npy array: {e}") from None
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.number):
        raise UserError(f"{path}: label embeddings must be a numeric [classes, d] array, found shape {table.shape}")
    if class_indices is None:
        if table.shape[0] != num_classes:
            raise UserError(
                f"{path}: has {table.shape[0]} rows but the model has {num_classes} classes "
                "(a model over a subset of classes must pass class_indices, or use a text file matched by name)"
            )
        class_indices = range(num_classes)
    rows = []
    for i, j in enumerate(class_indices):
        label = repr(class_names[i]) if class_names else f"#{i}"
        if not 0 <= int(j) < table.shape[0]:
            raise UserError(f"{path}: no row {j} for class {label} (the file has {table.shape[0]} rows)")
        rows.append(table[int(j)])
    return np.asarray(rows, dtype=np.float32)


def load_label_embeddings(path, num_classes, class_names=None, class_indices=None):
    """Read one vector per model class from a label-embedding file; returns float32 [num_classes, d].

    Args:
        path: str, a `.npy` [M, d] array or a text file of "name v1 ... vd" lines (see the module doc).
        num_classes: int, number of model classes.
        class_names: list of str, the model's class names (required for text files). Defaults to None.
        class_indices: list of int, row of a `.npy` file for each model class. Defaults to None
            (rows 0..num_classes-1, and the file must have exactly num_classes rows).

    Example:
        vectors = load_label_embeddings("glove.txt", 2, class_names=["dog", "traffic light"])
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such label-embedding file (head option 'label_embedding')")
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{path}: {len(class_names)} class names given for a model with {num_classes} classes")
    if class_indices is not None and len(class_indices) != num_classes:
        raise UserError(f"{path}: {len(class_indices)} class indices given for a model with {num_classes} classes")
    if path.suffix == ".npy":
        vectors = _read_npy_embeddings(path, num_classes, class_names, class_indices)
    else:
        if class_names is None:
            raise UserError(f"{path}: a text label-embedding file needs the class names of the model")
        vectors = _read_text_embeddings(path, list(class_names))
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        label = repr(class_names[i]) if class_names else f"#{i}"
        raise UserError(f"{path}: the vector of class {label} has NaN or infinite values")
    return vectors


# === Building blocks ===


def _class_tokens(context, num_classes, hidden, embeddings, name):
    """[B, m, hidden] class tokens/queries, from `embeddings` [m, d] (projected when d != hidden) or learned."""
    dim = hidden if embeddings is None else embeddings.shape[1]
    table = ClassTokens(num_classes, dim, name=name)
    tokens = table(context)
    if embeddings is not None:
        table.set_tokens(embeddings)
        if dim != hidden:
            tokens = layers.Dense(hidden, name="label_projection")(tokens)
    return tokens


def _project(features, hidden):
    """[B, h, w, C] -> [B, h*w, hidden] (1x1 convolution, flattened)."""
    h, w = features.shape[1], features.shape[2]
    x = layers.Conv2D(hidden, 1, name="head_input_proj")(features)
    return layers.Reshape((h * w, hidden), name="head_flatten")(x)


def _mlp(x, hidden, ratio, dropout, activation, name):
    y = layers.Dense(int(round(hidden * ratio)), activation=activation, name=f"{name}_fc1")(x)
    y = layers.Dropout(dropout, name=f"{name}_drop1")(y)
    y = layers.Dense(hidden, name=f"{name}_fc2")(y)
    return layers.Dropout(dropout, name=f"{name}_drop2")(y)


def _attention(heads, hidden, dropout, name):
    return layers.MultiHeadAttention(heads, hidden // heads, dropout=dropout, name=name)


def _encoder_block(x, o, name):
    """Pre-norm (ViT) encoder block."""
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(x)
    y = _attention(o["heads"], o["hidden"], o["dropout"], f"{name}_attn")(y, y)
    y = layers.Dropout(o["dropout"], name=f"{name}_attn_drop")(y)
    x = layers.Add(name=f"{name}_add1")([x, y])
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(x)
    y = _mlp(y, o["hidden"], o["mlp_ratio"], o["dropout"], "gelu", f"{name}_mlp")
    return layers.Add(name=f"{name}_add2")([x, y])


def _decoder_block(queries, memory, memory_keys, o, name):
    """Post-norm (DETR / Query2Label) decoder block."""
    y = _attention(o["heads"], o["hidden"], o["dropout"], f"{name}_self_attn")(queries, queries)
    y = layers.Dropout(o["dropout"], name=f"{name}_self_drop")(y)
    q = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_ln1")(layers.Add(name=f"{name}_add1")([queries, y]))
    y = _attention(o["heads"], o["hidden"], o["dropout"], f"{name}_cross_attn")(q, memory, key=memory_keys)
    y = layers.Dropout(o["dropout"], name=f"{name}_cross_drop")(y)
    q = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_ln2")(layers.Add(name=f"{name}_add2")([q, y]))
    y = _mlp(q, o["hidden"], o["mlp_ratio"], o["dropout"], "relu", f"{name}_mlp")
    return layers.LayerNormalization(epsilon=1e-5, name=f"{name}_ln3")(layers.Add(name=f"{name}_add3")([q, y]))


# === Heads ===


def _linear(features, num_classes, embeddings, o):
    del embeddings
    x = layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = layers.Dropout(o["dropout"], name="head_dropout")(x)
    return layers.Dense(num_classes, name="head_classifier")(x)


def _transformer(features, num_classes, embeddings, o):
    tokens = _project(features, o["hidden"])
    tokens = PositionEmbedding(name="head_position")(tokens)
    classes = _class_tokens(tokens, num_classes, o["hidden"], embeddings, name="class_tokens")
    x = layers.Concatenate(axis=1, name="head_tokens")([classes, tokens])
    x = layers.Dropout(o["dropout"], name="head_token_drop")(x)
    for i in range(o["depth"]):
        x = _encoder_block(x, o, name=f"encoder{i}")
    x = layers.LayerNormalization(epsilon=1e-6, name="head_norm")(x)
    classes = layers.Cropping1D((0, tokens.shape[1]), name="head_class_outputs")(x)
    return PerClassLogits(name="head_per_class")(classes)


def _query2label(features, num_classes, embeddings, o):
    memory = _project(features, o["hidden"])
    memory_keys = PositionEmbedding(name="head_position")(memory)
    queries = _class_tokens(memory, num_classes, o["hidden"], embeddings, name="class_queries")
    for i in range(o["depth"]):
        queries = _decoder_block(queries, memory, memory_keys, o, name=f"decoder{i}")
    return PerClassLogits(name="head_per_class")(queries)


_ATTENTION_DEFAULTS = {"heads": 4, "mlp_ratio": 4.0, "dropout": 0.1, "label_embedding": None}
HEADS = {
    "linear": HeadSpec(_linear, {"dropout": 0.0}),
    "transformer": HeadSpec(_transformer, {"hidden": 1024, "depth": 3, **_ATTENTION_DEFAULTS}),
    "query2label": HeadSpec(_query2label, {"hidden": 2048, "depth": 2, **_ATTENTION_DEFAULTS}),
}


def available_heads():
    """Names accepted by `build_model` as heads, sorted."""
    return sorted(HEADS)


def get_head_spec(name):
    """The `HeadSpec` of `name`; a `UserError` listing the choices when unknown."""
    spec = HEADS.get(name)
    if spec is None:
        raise UserError(f"unknown head {name!r}; choose one of: {', '.join(available_heads())}")
    return spec


def prepare_head(head, num_classes, options=None, class_names=None, class_indices=None):
    """Validate everything about a head before any layer is built; returns (options, embeddings or None)."""
    options = resolve_head_options(head, options)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise UserError(f"num_classes must be an integer >= 1, received {num_classes!r}")
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{len(class_names)} class names given for a model with {num_classes} classes")
    embeddings = None
    if options.get("label_embedding"):
        embeddings = load_label_embeddings(options["label_embedding"], num_classes, class_names, class_indices)
    return options, embeddings


def apply_head(head, features, num_classes, options, embeddings):
    """Apply head `head` to a feature map [B, h, w, C] with the options and embeddings of `prepare_head`; logits [B, n] float32."""
    logits = HEADS[head].build(features, int(num_classes), embeddings, options)
    # float32 logits whatever the compute dtype (mixed precision).
    return layers.Activation("linear", dtype="float32", name="logits")(logits)
