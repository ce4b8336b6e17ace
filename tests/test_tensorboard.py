"""TensorBoard tells the story: every tag a run writes, read back with TensorBoard's own `EventAccumulator`.

One val mAP per weight kind at epoch steps 1, 2, …; the student's loss terms summing to its loss (and
leaving its training unchanged); the recipe as text; the HParams session and its metric; the partition
heat map and `log_image`.
"""

import json

import keras
import numpy as np
import pytest
import yaml

from cpsd_tf import distill
from cpsd_tf import recipe as recipe_mod
from cpsd_tf import tensorboard as tb
from cpsd_tf.losses import DistillationLoss


def _accumulator(log_dir):
    """TensorBoard's reader over the event files of one folder (one TensorBoard "run")."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return acc


def _by_plugin(acc):
    """{plugin name: sorted tags} of the tensor summaries of an accumulator."""
    out = {}
    for tag in acc.Tags()["tensors"]:
        out.setdefault(acc.SummaryMetadata(tag).plugin_data.plugin_name, []).append(tag)
    return {k: sorted(v) for k, v in out.items()}


def _scalars(log_dir):
    """{tag: {step: value}} of the scalar summaries of one folder."""
    from tensorboard.util import tensor_util

    acc = _accumulator(log_dir)
    return {tag: {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
            for tag in _by_plugin(acc).get("scalars", [])}


def _folders(log_dir):
    """Sub-folders of a log dir holding event files ('.' for the folder itself)."""
    return sorted({p.parent.relative_to(log_dir).as_posix() for p in log_dir.rglob("events.out.tfevents*")})


def _png(path, width, height):
    from PIL import Image

    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(path)
    return path.read_bytes()


def test_log_image_writes_a_png_tensorboard_reads(tmp_path):
    png = _png(tmp_path / "figure.png", width=5, height=3)
    tb.log_image(tmp_path / "tb", "results", tmp_path / "figure.png", step=2)
    acc = _accumulator(tmp_path / "tb")
    assert _by_plugin(acc) == {"images": ["results"]}
    [event] = acc.Tensors("results")
    assert event.step == 2 and list(event.tensor_proto.string_val) == [b"5", b"3", png]  # tf.summary.image's format
    assert tb.png_size(png) == (5, 3)
    with pytest.raises(ValueError, match="not a PNG"):
        tb.png_size(b"GIF89a" + bytes(30))


def test_train_tags():
    assert tb.train_tag("loss") == "epoch_loss" and tb.train_tag("learning_rate") == "epoch_learning_rate"
    assert tb.train_tag("loss_asl") == "loss/asl" and tb.train_tag("loss_distill_cgp") == "loss/distill_cgp"
    assert distill.term_names(["cgp", "dgp"]) == ["loss_asl", "loss_distill_cgp", "loss_distill_dgp"]


# --- the student's loss terms: logged, summing to the loss, changing nothing ----------------------------

M = 3
SETS = ["cgp", "dgp"]


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 6)).astype(np.float32)  # 10 images in batches of 4: the last batch is smaller
    labels = (rng.random((10, M)) < 0.4).astype(np.float32)
    return x, labels, rng.normal(size=(10, 2 * M)).astype(np.float32) * 2


def _student():
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(M)(keras.layers.Dense(8, activation="relu")(inputs)))


def _train(trainer, loss, x, y):
    trainer.compile(optimizer=keras.optimizers.AdamW(0.05, use_ema=True), loss=loss)
    return trainer.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0).history


def _check_terms(history, plain):
    assert history["loss"] == plain["loss"]  # the same optimisation, bit for bit
    names = distill.term_names(SETS)
    assert set(history) == {"loss", *names}
    total = np.sum([history[n] for n in names], axis=0)
    np.testing.assert_allclose(total, history["loss"], rtol=1e-5)
    assert all(v > 0 for n in names for v in history[n])


def test_cached_targets_terms_sum_to_the_loss_and_change_nothing():
    x, labels, teacher = _data()
    y = np.concatenate([labels, teacher], axis=-1)  # cached targets travel with the batch
    loss = DistillationLoss(M, [0.25, 0.25])
    keras.utils.set_random_seed(1)
    plain_model = _student()
    plain = _train(plain_model, loss, x, y)
    keras.utils.set_random_seed(1)
    model = _student()
    trainer = distill.term_logger(loss, SETS)(model)
    assert [v.path for v in trainer.weights] == [v.path for v in model.weights]  # same layers, same files
    logged = _train(trainer, loss, x, y)
    _check_terms(logged, plain)
    for a, b in zip(plain_model.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_online_terms_sum_to_the_loss_and_change_nothing():
    x, labels, _ = _data()
    loss = DistillationLoss(M, [0.3, 0.2])

    def run(terms):
        keras.utils.set_random_seed(2)
        sets = []
        for _ in SETS:  # two teacher sets of two teachers each (classes [0, 2] and [1])
            teachers = []
            for cols in ([0, 2], [1]):
                inputs = keras.Input((6,))
                teachers.append(keras.Model(inputs, keras.layers.Dense(len(cols))(inputs)))
            sets.append((teachers, [[0, 2], [1]]))
        student = _student()
        history = _train(distill.online_wrapper(sets, M, terms=terms)(student), loss, x, labels)
        return history, student.get_weights()

    plain, plain_weights = run(None)
    logged, weights = run((loss, SETS))
    _check_terms(logged, plain)
    for a, b in zip(plain_weights, weights):
        np.testing.assert_array_equal(a, b)


# --- a tiny run: baseline, teachers, student -----------------------------------------------------------

@pytest.fixture
def tiny_run(tiny_cpsd_run):
    """`cpsd-tf run` of a tiny recipe: 2 epochs, k = 2, the CPSD student with online targets (conftest)."""
    return tiny_cpsd_run


def _history(model_dir):
    return json.loads((model_dir / "metrics.json").read_text())


def _models(run):
    """{role: model folder} of the run: the baseline, a teacher with a finite val mAP (a tiny split may hold no
    positive of a teacher's classes), the student."""
    teacher = next(d for d in sorted((run / "teachers").iterdir()) if _history(d)["select_metrics"]["mAP"] >= 0)
    return {"baseline": "baseline", "teacher": f"teachers/{teacher.name}", "student": "student"}


def test_val_mAP_once_per_weight_kind_at_epoch_steps(tiny_run):
    for role, name in _models(tiny_run).items():
        log_dir = tiny_run / name / "tensorboard"
        assert _folders(log_dir) == [".", "selection", "train"], name  # no Keras `validation/`
        metrics = _history(tiny_run / name)
        history = metrics["history"]
        selection, train = _scalars(log_dir / "selection"), _scalars(log_dir / "train")
        # Every scalar at step = epoch number, from 1 (the `epoch` of metrics.json).
        for tag, values in {**selection, **train}.items():
            assert sorted(values) == [1, 2], (name, tag)
        classes = {f"val_AP/{c}" for c in metrics["classes"]}
        assert {"val_mAP/raw", "val_mAP/ema"} <= set(selection) and set(selection) - {"val_mAP/raw", "val_mAP/ema"} <= classes
        assert set(selection) & classes  # per-class AP (of the classes with a positive in the split)
        assert not any("mAP" in tag for tag in train)  # no second val mAP
        terms = {f"loss/{n[len('loss_'):]}" for n in distill.term_names(SETS)} if role == "student" else set()
        assert set(train) == {"epoch_loss", "epoch_learning_rate", *terms}, name
        for h in history:
            assert selection["val_mAP/raw"][h["epoch"]] == pytest.approx(h["val_mAP_raw"], rel=1e-6)
            assert selection["val_mAP/ema"][h["epoch"]] == pytest.approx(h["val_mAP_ema"], rel=1e-6)
            assert train["epoch_loss"][h["epoch"]] == pytest.approx(h["loss"], rel=1e-6)
            assert train["epoch_learning_rate"][h["epoch"]] == pytest.approx(h["learning_rate"], rel=1e-6)


def test_student_loss_terms_sum_to_its_loss(tiny_run):
    train = _scalars(tiny_run / "student" / "tensorboard" / "train")
    terms = [tag for tag in train if tag.startswith("loss/")]
    assert sorted(terms) == ["loss/asl", "loss/distill_cgp", "loss/distill_dgp"]
    for epoch, total in train["epoch_loss"].items():
        assert sum(train[t][epoch] for t in terms) == pytest.approx(total, rel=1e-5)
        assert all(train[t][epoch] > 0 for t in terms)
    # metrics.json keeps them too
    history = _history(tiny_run / "student")["history"]
    assert all(h["loss_asl"] + h["loss_distill_cgp"] + h["loss_distill_dgp"] == pytest.approx(h["loss"], rel=1e-5)
               for h in history)


def test_recipe_hparams_and_best_val_mAP_in_each_model_folder(tiny_run):
    from tensorboard.plugins.hparams import api_pb2, metadata

    recipe = recipe_mod.load(tiny_run / "recipe.yaml")
    for role, name in _models(tiny_run).items():
        log_dir = tiny_run / name / "tensorboard"
        acc = _accumulator(log_dir)
        plugins = _by_plugin(acc)
        assert plugins["text"] == ["recipe"] and plugins["scalars"] == ["val_mAP"]
        assert plugins["hparams"] == sorted([metadata.SESSION_START_INFO_TAG, metadata.EXPERIMENT_TAG])
        # the recipe the model trained with, as YAML
        [text] = acc.Tensors("recipe")
        assert text.step == 0
        markdown = text.tensor_proto.string_val[0].decode()
        logged = yaml.safe_load(markdown.split("```yaml\n", 1)[1].split("```", 1)[0])
        assert logged["seed"] == recipe.seed and logged["partition"]["k"] == 2
        assert logged["distill"]["teacher_logits"] == "online" and logged["data"]["dir"] == recipe.data.dir
        # the HParams session
        info = metadata.parse_session_start_info_plugin_data(
            acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
        hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
        lr = {"baseline": recipe.train.lr, "teacher": recipe.teachers.lr, "student": recipe.distill.lr}[role]
        model = {"baseline": "baseline", "teacher": "teacher-" + name.split("/")[-1], "student": "cpsd"}[role]
        expected = {"model": model,
                    "role": role, "seed": recipe.seed, "partition.k": 2, "epochs": 2, "lr": pytest.approx(lr)}
        if role == "student":
            expected.update({"distill.teacher_logits": "online", "distill.w_distill": 0.5, "distill.alpha": 0.5})
        assert hparams == expected
        experiment = metadata.parse_experiment_plugin_data(
            acc.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content)
        assert [(m.name.group, m.name.tag) for m in experiment.metric_infos] == [("", "val_mAP"), ("train", "epoch_loss")]
        assert {h.name for h in experiment.hparam_infos} == set(tb.MODEL_HPARAMS) | set(tb.DISTILL_HPARAMS)
        types = {h.name: api_pb2.DataType.Name(h.type) for h in experiment.hparam_infos}
        assert types["model"] == "DATA_TYPE_STRING" and types["seed"] == "DATA_TYPE_FLOAT64"
        # the HParams metric: the best selection mAP, at the best epoch
        metrics = _history(tiny_run / name)
        best = _scalars(log_dir)["val_mAP"]
        assert best == {metrics["best_epoch"]: pytest.approx(metrics["select_metrics"]["mAP"], rel=1e-6)}


def test_partition_heat_map_and_results_figure_in_the_run_tensorboard(tiny_run):
    acc = _accumulator(tiny_run / "tensorboard")
    assert _by_plugin(acc) == {"images": ["partition", "results"]}  # the heat map and results.png
    [event] = acc.Tensors("partition")
    assert event.step == 0 and event.tensor_proto.string_val[2] == (tiny_run / "partition.png").read_bytes()
