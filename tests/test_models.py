"""Model zoo: backbones, heads, the factory, label embeddings, saving, training, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsd_tf.errors import UserError
from cpsd_tf.models import (
    FEATURES_LAYER,
    available_backbones,
    available_heads,
    build_backbone,
    build_model,
    load_label_embeddings,
)
from cpsd_tf.models.layers import ImagePreprocessing
from model_helpers import assert_save_reload_equal

SIZE = 16
# Tiny attention heads: the real defaults (hidden 1024/2048) are far too big for unit tests.
TINY = {"hidden": 16, "heads": 2, "depth": 1, "mlp_ratio": 2.0}
HEAD_OPTIONS = {"linear": {}, "transformer": TINY, "query2label": TINY}
HEAD_NAMES = sorted(HEAD_OPTIONS)
CLASSES = ["person", "traffic light", "dog", "fire_hydrant", "cat", "car", "tree"]


def images(n=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def tiny(head, num_classes=7, **kwargs):
    options = {**HEAD_OPTIONS[head], **kwargs.pop("head_options", {})}
    return build_model("tiny_cnn", head, num_classes, kwargs.pop("image_size", SIZE), head_options=options, **kwargs)


# === Registries and errors ===


def test_registries_hold_the_documented_names():
    assert set(available_heads()) == {"linear", "transformer", "query2label"}
    expected = {
        "tiny_cnn", "resnet50", "resnet101", "resnet152", "efficientnetv2_b0", "efficientnetv2_b1",
        "efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s", "convnext_tiny", "convnext_small",
        "convnext_base", "mobilenetv3_small", "mobilenetv3_large",
    }  # fmt: skip
    assert set(available_backbones()) == expected


def test_unknown_backbone_lists_choices():
    with pytest.raises(UserError, match=r"unknown backbone 'resnet7'; choose one of: .*resnet101.*tiny_cnn"):
        build_model("resnet7", "linear", 3, SIZE)


def test_unknown_head_lists_choices():
    with pytest.raises(UserError, match=r"unknown head 'mlp'; choose one of: linear, query2label, transformer"):
        build_model("tiny_cnn", "mlp", 3, SIZE)


def test_unknown_or_bad_head_option_names_the_key():
    with pytest.raises(UserError, match=r"unknown head option 'width' for head 'transformer'; allowed: .*hidden"):
        tiny("transformer", head_options={"width": 8})
    with pytest.raises(UserError, match=r"unknown head option 'hidden' for head 'linear'; allowed: dropout"):
        tiny("linear", head_options={"hidden": 8})
    with pytest.raises(UserError, match=r"'depth' of head 'query2label' must be an integer >= 1, received 0"):
        tiny("query2label", head_options={"depth": 0})
    with pytest.raises(UserError, match=r"'hidden' \(18\) must be divisible by 'heads' \(4\)"):
        tiny("transformer", head_options={"hidden": 18, "heads": 4})


def test_bad_weights_and_sizes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"nope\.weights\.h5: no such weights file"):
        build_model("tiny_cnn", "linear", 3, SIZE, weights=str(tmp_path / "nope.weights.h5"))
    with pytest.raises(UserError, match=r"'tiny_cnn' has no ImageNet weights"):
        build_model("tiny_cnn", "linear", 3, SIZE, weights="imagenet")
    with pytest.raises(UserError, match=r"'resnet50' needs image_size >= 32, received 16"):
        build_model("resnet50", "linear", 3, 16)
    with pytest.raises(UserError, match=r"num_classes must be an integer >= 1, received 0"):
        build_model("tiny_cnn", "linear", 0, SIZE)


# === Shapes, features layer, saving ===


def test_tiny_cnn_has_about_300k_parameters():
    params = build_backbone("tiny_cnn", SIZE).count_params()
    assert 150_000 <= params <= 450_000, params


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_student_and_teacher_shapes_and_saving(head, tmp_path):
    x = images(3)
    for num_classes in (7, 3):  # all m classes, then a teacher's |C_t|
        model = tiny(head, num_classes, name=f"{head}_{num_classes}")
        logits = keras.ops.convert_to_numpy(model(x))
        assert logits.shape == (3, num_classes) and logits.dtype == np.float32
        assert np.isfinite(logits).all()
        features = model.get_layer(FEATURES_LAYER)
        assert tuple(features.output.shape) == (None, SIZE // 8, SIZE // 8, 128)
    reloaded = assert_save_reload_equal(model, x, tmp_path)
    assert reloaded.get_layer(FEATURES_LAYER).output.shape == features.output.shape


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_one_training_step_per_head_reduces_bce(head):
    keras.utils.set_random_seed(0)
    model = tiny(head, 5, head_options={"dropout": 0.0})  # no dropout: the loss is a function of the weights
    x = images(8, seed=1)
    y = (np.random.default_rng(2).random((8, 5)) < 0.4).astype(np.float32)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(1e-2)

    def step():  # eager: tracing a tf.function costs more than these few tiny steps
        with tf.GradientTape() as tape:
            loss = bce(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return float(loss)

    losses = [step() for _ in range(4)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses


def test_grad_cam_can_reach_the_features_layer():
    model = tiny("transformer", 3)
    probe = keras.Model(model.inputs, [model.get_layer(FEATURES_LAYER).output, model.output])
    x = tf.constant(images(1))
    with tf.GradientTape() as tape:
        features, logits = probe(x)
        score = logits[:, 1]
    grads = tape.gradient(score, features)
    assert grads.shape == features.shape and float(tf.reduce_max(tf.abs(grads))) > 0


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny("query2label", 4)
        logits = model(images(2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == "float32" and np.isfinite(keras.ops.convert_to_numpy(logits)).all()


# === Backbone preprocessing and weights ===


def test_caffe_preprocessing_matches_keras_resnet_preprocess_input():
    x = images(2)
    ours = keras.ops.convert_to_numpy(ImagePreprocessing("caffe")(x))
    reference = keras.applications.resnet.preprocess_input(x * 255.0)
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ImagePreprocessing("pixels")(x)), x * 255.0, rtol=1e-6)


def test_backbone_weights_file_is_loaded(tmp_path):
    source = build_backbone("tiny_cnn", SIZE)
    path = tmp_path / "bb.weights.h5"
    source.save_weights(path)
    model = build_model("tiny_cnn", "linear", 3, SIZE, weights=str(path))
    for a, b in zip(model.get_layer("backbone").weights, source.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras warns before it raises
def test_backbone_weights_file_that_does_not_fit_is_a_user_error(tmp_path):
    path = tmp_path / "other.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(path)
    with pytest.raises(UserError, match=r"other\.weights\.h5: cannot load these weights into backbone 'tiny_cnn'"):
        build_model("tiny_cnn", "linear", 3, SIZE, weights=str(path))


# One head on a keras.applications backbone in the fast suite (the save/reload path differs little by head).
@pytest.mark.parametrize(
    "head", [h if h == "linear" else pytest.param(h, marks=pytest.mark.large) for h in HEAD_NAMES]
)
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # 32 px -> a 1x1 map: one key
def test_keras_application_backbone(head, tmp_path):
    x = images(2, size=32)
    model = build_model("mobilenetv3_small", head, 3, 32, head_options=HEAD_OPTIONS[head])
    assert model.get_layer("backbone").get_layer("preprocess").mode == "pixels"
    logits = keras.ops.convert_to_numpy(model(x))
    assert logits.shape == (2, 3) and np.isfinite(logits).all()
    assert_save_reload_equal(model, x, tmp_path)


@pytest.mark.large
@pytest.mark.parametrize("backbone", ["resnet50", "efficientnetv2_b0", "convnext_tiny"])
def test_more_keras_application_backbones(backbone, tmp_path):
    x = images(2, size=32)
    model = build_model(backbone, "transformer", 3, 32, head_options=TINY)
    assert model.get_layer(FEATURES_LAYER).output.shape[1:3] == (1, 1)
    assert_save_reload_equal(model, x, tmp_path)


# === Label embeddings ===


def write_glove(path, vectors, names):
    """GloVe-style text; every other multi-word name written with underscores ("fire_hydrant")."""
    lines = []
    for i, (name, vector) in enumerate(zip(names, vectors)):
        name = name.replace(" ", "_") if i % 2 else name
        lines.append(name + " " + " ".join(f"{v:.6f}" for v in vector))
    path.write_text("the 0.1 0.2\n" + "\n".join(lines) + "\n")  # an unrelated first line, of another width


def class_table(model, name):
    return keras.ops.convert_to_numpy(model.get_layer(name).tokens)


@pytest.mark.parametrize("head,table", [("transformer", "class_tokens"), ("query2label", "class_queries")])
def test_npy_label_embedding_initialises_class_tokens(head, table, tmp_path):
    vectors = np.random.default_rng(0).normal(size=(7, 16)).astype(np.float32)
    path = tmp_path / "glove.npy"
    np.save(path, vectors)
    model = tiny(head, 7, head_options={"label_embedding": str(path)}, class_names=CLASSES)
    np.testing.assert_allclose(class_table(model, table), vectors, rtol=1e-6)  # d == hidden: no projection
    assert "label_projection" not in [layer.name for layer in model.layers]
    # A teacher over classes (4, 1, 6) takes those rows.
    teacher = tiny(head, 3, head_options={"label_embedding": str(path)}, class_indices=[4, 1, 6])
    np.testing.assert_allclose(class_table(teacher, table), vectors[[4, 1, 6]], rtol=1e-6)


def test_text_label_embedding_matches_names_and_projects(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    path = tmp_path / "glove.txt"
    write_glove(path, vectors[::-1], CLASSES[::-1])  # file order differs from class order
    teacher_names = ["fire_hydrant", "traffic light", "person"]
    model = tiny("transformer", 3, head_options={"label_embedding": str(path)}, class_names=teacher_names)
    expected = vectors[[CLASSES.index(n) for n in teacher_names]]
    np.testing.assert_allclose(class_table(model, "class_tokens"), expected, atol=1e-6)  # raw vectors, d = 5
    assert model.get_layer("label_projection").output.shape == (None, 3, TINY["hidden"])  # 5 -> hidden
    # load_label_embeddings alone gives the same table.
    np.testing.assert_allclose(load_label_embeddings(path, 3, teacher_names), expected, atol=1e-6)


def test_bad_label_embedding_files_name_the_file_and_class(tmp_path):
    text = tmp_path / "glove.txt"
    write_glove(text, np.ones((2, 4)), ["person", "dog"])
    opts = {"label_embedding": str(text)}
    with pytest.raises(UserError, match=r"glove\.txt: no label-embedding line for class 'cat'"):
        tiny("transformer", 2, head_options=opts, class_names=["person", "cat"])
    text.write_text("person 1 2 3\ndog 1 2\n")
    with pytest.raises(UserError, match=r"glove\.txt: class 'dog' has a 2-d vector but class 'person' has 3"):
        tiny("transformer", 2, head_options=opts, class_names=["person", "dog"])
    with pytest.raises(UserError, match=r"glove\.txt: a text label-embedding file needs the class names"):
        tiny("transformer", 2, head_options=opts)
    npy = tmp_path / "glove.npy"
    np.save(npy, np.ones((5, 16), np.float32))
    with pytest.raises(UserError, match=r"glove\.npy: has 5 rows but the model has 3 classes"):
        tiny("query2label", 3, head_options={"label_embedding": str(npy)})
    with pytest.raises(UserError, match=r"glove\.npy: no row 9 for class 'dog'"):
        load_label_embeddings(npy, 2, ["person", "dog"], class_indices=[0, 9])
    np.save(npy, np.ones((2, 3, 4), np.float32))
    with pytest.raises(UserError, match=r"glove\.npy: label embeddings must be a numeric \[classes, d\] array"):
        load_label_embeddings(npy, 2)
    np.save(npy, np.array([[1.0, np.nan], [0.0, 1.0]], np.float32))
    with pytest.raises(UserError, match=r"glove\.npy: the vector of class 'person' has NaN"):
        load_label_embeddings(npy, 2, ["person", "dog"])
    with pytest.raises(UserError, match=r"missing\.npy: no such label-embedding file"):
        load_label_embeddings(tmp_path / "missing.npy", 2)


def test_label_embedding_model_reloads(tmp_path):
    path = tmp_path / "glove.npy"
    np.save(path, np.random.default_rng(3).normal(size=(3, 8)).astype(np.float32))
    model = tiny("query2label", 3, head_options={"label_embedding": str(path)})
    path.unlink()  # the saved model must not need the embedding file any more
    assert_save_reload_equal(model, images(2), tmp_path)
