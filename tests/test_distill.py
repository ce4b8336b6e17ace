"""Distillation: the rho merge, the loss against NumPy, the index join, online targets, a tiny full run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cpsd_tf import distill, logits, rundir
from cpsd_tf.cli import cli
from cpsd_tf.data import pipeline, records
from cpsd_tf.losses import AsymmetricLoss, DistillationLoss, distill_weights

from helpers_recipes import copy_run
from helpers_events import event_tags


def test_merge_puts_columns_on_their_classes():
    rng = np.random.default_rng(0)
    n, m = 5, 6
    truth = rng.normal(size=(n, m)).astype(np.float32)
    clusters = [[4, 0], [5, 2, 1], [3]]  # scrambled order inside and across clusters
    parts = [(c, truth[:, c]) for c in clusters]
    np.testing.assert_array_equal(logits.merge(parts, n, m), truth)
    with pytest.raises(ValueError, match=r"exactly once.*\{3: 0\}"):
        logits.merge(parts[:2], n, m)
    with pytest.raises(ValueError, match=r"exactly once.*\{0: 2\}"):
        logits.merge(parts + [([0], truth[:, [0]])], n, m)
    with pytest.raises(ValueError, match="shape"):
        logits.merge([(clusters[0], truth[:, :3])], n, m)


def _asl_numpy(y, x, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8):
    p = 1 / (1 + np.exp(-x))
    p_neg = np.minimum(1 - p + clip, 1)
    pt = p * y + p_neg * (1 - y)
    w = (1 - pt) ** (gamma_pos * y + gamma_neg * (1 - y))
    return -np.sum((y * np.log(np.maximum(p, eps)) + (1 - y) * np.log(np.maximum(p_neg, eps))) * w, axis=-1)


@pytest.mark.parametrize("mse", ["sum", "mean"])
def test_distillation_loss_matches_numpy(mse):
    rng = np.random.default_rng(1)
    b, m = 7, 5
    y = (rng.random((b, m)) < 0.4).astype(np.float32)
    s = rng.normal(size=(b, m)).astype(np.float32) * 3
    t1, t2 = (rng.normal(size=(b, m)).astype(np.float32) * 3 for _ in range(2))
    loss = DistillationLoss(m, [0.3, 0.2], w_cls=0.5, mse=mse)
    got = float(loss(np.concatenate([y, t1, t2], -1), s))
    div = m if mse == "mean" else 1
    want = np.mean(0.5 * _asl_numpy(y, s) + 0.3 * ((s - t1) ** 2).sum(-1) / div + 0.2 * ((s - t2) ** 2).sum(-1) / div)
    assert got == pytest.approx(want, rel=1e-5)
    # No teacher: the loss is the weighted ASL alone.
    assert float(DistillationLoss(m, [], w_cls=1.0)(y, s)) == pytest.approx(float(AsymmetricLoss()(y, s)), rel=1e-6)
    again = DistillationLoss.from_config(loss.get_config())
    assert float(again(np.concatenate([y, t1, t2], -1), s)) == pytest.approx(got, rel=1e-6)


def test_distill_weights_keep_the_official_total():
    # Official CPSD: 0.5·ASL + (α/2)·SSE_cgp + (0.5 − α/2)·SSE_dgp; a single set takes the whole 0.5.
    assert distill_weights(["cgp", "dgp"]) == [0.25, 0.25]
    assert distill_weights(["dgp", "cgp"], alpha=0.8) == pytest.approx([0.1, 0.4])
    for sets in (["cgp"], ["dgp"], ["baseline"], ["random"]):
        assert distill_weights(sets) == [0.5]
    assert sum(distill_weights(["cgp", "dgp"], 0.7, 0.3)) == pytest.approx(0.7)


def _png(value):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_index_join_in_the_shuffled_training_pipeline(tmp_path):
    n, m = 40, 3
    recs = [records.Record(_png(i), f"{i}", [i % m]) for i in range(n)]
    records.write_split(tmp_path, "train", ["a", "b", "c"], recs, examples_per_shard=16)
    table = np.repeat(np.arange(n, dtype=np.float32)[:, None], m, axis=1) + np.array([0, 0.25, 0.5], np.float32)
    join = distill.cached_targets_fn([table])
    ds = pipeline.build(tmp_path, "train", image_size=8, batch_size=8, training=True, with_index=True, seed=3)
    ds = ds.map(lambda f, y: (f["image"], join(y, f["index"]), f["index"]))
    seen = []
    for images, targets, index in ds.as_numpy_iterator():
        np.testing.assert_array_equal(targets[:, m:], table[index])
        np.testing.assert_array_equal(targets[:, :m], np.eye(m)[index % m])  # labels of the same records
        np.testing.assert_allclose(images[:, 0, 0, 0], (index % 256) / 255.0, atol=1e-6)
        seen += index.tolist()
    assert sorted(seen) == list(range(n)) and seen != list(range(n))  # all rows, shuffled


def test_online_targets_equal_cached_targets():
    """The online wrapper merges the teachers' outputs exactly as rho merges cached logits."""
    import keras

    m = 4
    x = np.random.default_rng(2).random((3, 8, 8, 3)).astype(np.float32)
    clusters = [[3, 1], [0, 2]]
    teachers = []
    for c in clusters:
        inputs = keras.Input((8, 8, 3))
        teachers.append(keras.Model(inputs, keras.layers.Dense(len(c))(keras.layers.Flatten()(inputs))))
    cached = logits.merge([(c, t.predict(x, verbose=0)) for c, t in zip(clusters, teachers)], 3, m)

    captured = {}

    class Capture(DistillationLoss):
        def call(self, y_true, y_pred):
            captured["y"] = y_true
            return super().call(y_true, y_pred)

    inputs = keras.Input((8, 8, 3))
    student = keras.Model(inputs, keras.layers.Dense(m)(keras.layers.Flatten()(inputs)))
    wrapper = distill.online_wrapper([(teachers, clusters)], m)(student)
    wrapper.compile(optimizer="sgd", loss=Capture(m, [0.5]), run_eagerly=True)
    y = np.zeros((3, m), np.float32)
    wrapper.train_on_batch(x, y)
    np.testing.assert_allclose(np.asarray(captured["y"])[:, m:], cached, rtol=1e-5, atol=1e-5)


def test_tiny_end_to_end_run_restart_and_provenance(tiny_cpsd_run, tmp_path):
    path = copy_run(tiny_cpsd_run, tmp_path)  # a full `cpsd-tf run`: 2 epochs, k = 2, online CPSD
    run = tmp_path / "run"
    assert (run / "recipe.yaml").read_text().count(str(tmp_path)) == 2  # run_dir and data.dir moved along
    report = json.loads((run / "results.json").read_text())
    assert set(report["models"]) == {"baseline", "cpsd", "teachers_cgp", "teachers_dgp", "teachers_ensemble"}
    for per_split in report["models"].values():
        assert set(per_split) == {"test", "test_ood"}
        assert set(per_split["test"]) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}
    assert "cpsd" in (run / "results.md").read_text()
    # how far each model got: epochs, best epoch and val mAP, for the models and each teacher
    training = report["training"]  # a teacher none of whose classes has a positive in val has no val mAP
    assert {"baseline", "cpsd"} <= set(training) <= {"baseline", "cpsd", "teacher cgp-0", "teacher cgp-1",
                                                     "teacher dgp-0", "teacher dgp-1"}
    for name, summary in training.items():
        metrics = rundir.model_metrics(run / ("baseline" if name == "baseline" else "student" if name == "cpsd"
                                              else "teachers/" + name.split()[1]))
        assert summary["epochs"] == metrics["epochs"] and summary["best_epoch"] == metrics["best_epoch"]
        assert summary["best_val_mAP"] == pytest.approx(metrics["select_metrics"]["mAP"])
    assert "Training (val mAP on 'val'" in (run / "results.md").read_text()
    assert rundir.model_is_done(run / "student")
    assert "(online targets)" in (tmp_path / "output.txt").read_text() and not (run / "logits" / "cgp.npy").exists()
    # One TensorBoard log root: `tensorboard --logdir <run>` finds every model's loss, lr and val mAP.
    logged = {p.parent.relative_to(run).as_posix() for p in run.glob("**/tensorboard")} - {"."}  # .: partition image
    assert logged == {"baseline", "student", "teachers/cgp-0", "teachers/cgp-1", "teachers/dgp-0", "teachers/dgp-1"}
    for model_dir in logged:
        assert {"epoch_loss", "epoch_learning_rate", "val_mAP/raw"} <= event_tags(run / model_dir / "tensorboard")

    again = CliRunner().invoke(cli, ["run", "--recipe", str(path)])
    assert again.exit_code == 0, again.output
    for what in ("[baseline] baseline", "[teachers] cgp-0", "[teachers] dgp-1", "[distill] cpsd"):
        assert f"{what} finished already, skipped" in again.output
    assert "Epoch" not in again.output

    # A finished student is never reused for another recipe: the refusal names key, recorded and asked value.
    recorded_recipe = (run / "recipe.yaml").read_text()
    cached = ["--set", "distill.teacher_logits=cached_clean"]
    refused = CliRunner().invoke(cli, ["distill", "--recipe", str(path), *cached, "--force"])
    assert refused.exit_code == 2 and "cpsd-tf logits" in refused.output  # distill never exports logits itself
    refused = CliRunner().invoke(cli, ["distill", "--recipe", str(path), *cached])
    assert refused.exit_code == 2
    assert 'distill.teacher_logits="online"' in refused.output and 'distill.teacher_logits="cached_clean"' in refused.output
    assert "--force" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert (run / "recipe.yaml").read_text() == recorded_recipe

    exported = CliRunner().invoke(cli, ["logits", "--recipe", str(path), *cached])
    assert exported.exit_code == 0, exported.output
    for name in ("cgp", "dgp"):
        table = np.load(run / "logits" / f"{name}.npy")
        assert table.shape == (48, 30) and np.isfinite(table).all()
    redone = CliRunner().invoke(cli, ["distill", "--recipe", str(path), *cached, "--force"])
    assert redone.exit_code == 0, redone.output
    assert "(cached_clean targets)" in redone.output
    assert json.loads((run / "student" / "provenance.json").read_text())["values"]["distill.teacher_logits"] == "cached_clean"

    # Consistent cached targets: the teachers' logits of every (pass, record) view, then the student.
    views = ["--set", "distill.teacher_logits=cached_views"]
    exported = CliRunner().invoke(cli, ["logits", "--recipe", str(path), *views])
    assert exported.exit_code == 0, exported.output
    table = np.load(run / "logits" / "views" / "cgp.npy")
    assert table.shape == (2, 48, 30) and table.dtype == np.float16 and np.isfinite(table).all()
    redone = CliRunner().invoke(cli, ["distill", "--recipe", str(path), *views, "--force"])
    assert redone.exit_code == 0, redone.output
    assert "(cached_views targets)" in redone.output

    # A reading command with another teacher list neither relabels the student nor rewrites recipe.yaml.
    recorded_recipe = (run / "recipe.yaml").read_text()
    relabel = CliRunner().invoke(cli, ["evaluate", "--recipe", str(path), *views, "--set", "distill.teachers=[cgp]"])
    assert relabel.exit_code == 0, relabel.output
    assert set(json.loads((run / "results.json").read_text())["models"]) >= {"cpsd", "baseline"}
    assert "cgpd" not in relabel.output
    assert (run / "recipe.yaml").read_text() == recorded_recipe

    # Mixed views with cached targets: the teachers' logits of every mixed batch t, joined to batch t.
    mixed = [*views, "--set", "distill.views.kind=cutmix"]
    exported = CliRunner().invoke(cli, ["logits", "--recipe", str(path), *mixed])
    assert exported.exit_code == 0, exported.output
    student = json.loads((run / "student" / "metrics.json").read_text())
    table = np.load(run / "logits" / "views" / "dgp.mixed.npy")
    assert table.shape == (student["epochs"] * student["steps_per_epoch"], student["batch_size"], 30)
    assert table.dtype == np.float16 and np.isfinite(table).all()
    assert np.load(run / "logits" / "views" / "cgp.npy").shape == (2, 48, 30)  # the unmixed table is kept apart
    redone = CliRunner().invoke(cli, ["distill", "--recipe", str(path), *mixed, "--force"])
    assert redone.exit_code == 0, redone.output
    assert "(cached_views targets, cutmix views)" in redone.output


def test_positive_only_targets_leave_other_images_alone():
    """teachers.images: positive (paper Eq. 5): a teacher's columns are distilled only on its images."""
    import keras

    m = 4
    x = np.random.default_rng(3).random((2, 8, 8, 3)).astype(np.float32)
    clusters = [[0, 1], [2, 3]]
    teachers = []
    for c in clusters:
        inputs = keras.Input((8, 8, 3))
        teachers.append(keras.Model(inputs, keras.layers.Dense(len(c))(keras.layers.Flatten()(inputs))))
    merged = logits.merge([(c, t.predict(x, verbose=0)) for c, t in zip(clusters, teachers)], 2, m)
    inputs = keras.Input((8, 8, 3))
    student = keras.Model(inputs, keras.layers.Dense(m)(keras.layers.Flatten()(inputs)))
    captured = {}

    class Capture(DistillationLoss):
        def call(self, y_true, y_pred):
            captured["y"], captured["s"] = y_true, y_pred
            return super().call(y_true, y_pred)

    wrapper = distill.online_wrapper([(teachers, clusters)], m, positive_only=True)(student)
    wrapper.compile(optimizer="sgd", loss=Capture(m, [0.5]), run_eagerly=True)
    y = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.float32)  # image 0 has a class of teacher 0 only
    wrapper.train_on_batch(x, y)
    target, s = np.asarray(captured["y"])[:, m:], np.asarray(captured["s"])
    np.testing.assert_allclose(target[0, :2], merged[0, :2], rtol=1e-5, atol=1e-5)  # teacher 0 on its image
    np.testing.assert_allclose(target[0, 2:], s[0, 2:], rtol=1e-5, atol=1e-5)  # teacher 1: not its image
    np.testing.assert_allclose(target[1], s[1], rtol=1e-5, atol=1e-5)  # no teacher owns image 1
