"""Several machines for one model: MultiWorkerMirroredStrategy with worker processes on 127.0.0.1.

Each worker is a separate Python process (the strategy must exist before TensorFlow's first operation, and
only once per process) with its own TF_CONFIG on free local ports.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from cpsd_tf import multiworker
from cpsd_tf.errors import UserError

# A worker: trains the tiny model with cpsd_tf.train.fit; saves its weights at the start, after the first step
# and at the end of training to OUT-init.npz, OUT-step1.npz, OUT-last.npz.
# KILL_EPOCH (0-based, or -1): SIGKILL itself in the middle of that epoch (after its second step).
WORKER = textwrap.dedent("""
    import os, signal, sys
    import keras, numpy as np
    from cpsd_tf import multiworker, recipe, train
    from cpsd_tf.data import pipeline

    recipe_path, model_dir, out, kill_epoch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    # without TF_CONFIG: the same strategy over one worker (the single-process run, same global batch)
    r = recipe.load(recipe_path, ["train.strategy=multi_worker"])
    multiworker.init(r)

    def save(path, model):
        np.savez(path, *[np.asarray(w) for w in model.get_weights()])

    class LastWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            save(out + "-init.npz", self.model)
            self.steps = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 1:
                save(out + "-step1.npz", self.model)
            if self.epoch == kill_epoch and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, logs=None):
            save(out + "-last.npz", self.model)

    names = [f"c{i}" for i in range(30)]
    train.fit(r, model_dir, num_classes=30, class_names=names, epochs=r.train.epochs, extra_callbacks=[LastWeights()])
    print("finished", multiworker.cluster().task_index, flush=True)
""")


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mw")
    recipe_path = root / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "run_dir": str(root / "run"),
        "data": {"dir": str(root / "data"), "generator": "scenes", "image_size": 16,
                 "scenes": {"train": 64, "val": 32, "test": 16, "image_size": 16},
                 "augment": {"flip": False, "translate": 0.1}},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None},
        # 4 steps of a global batch of 16 per epoch; weight EMA on (its swap runs under the strategy too)
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.01},
    }))
    script = root / "worker.py"
    script.write_text(WORKER)
    from cpsd_tf import recipe
    from cpsd_tf.data import prepare

    prepare.run(recipe.load(recipe_path))
    return root, recipe_path, script


def _env(tf_config=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CPSD_TF_QUIET="1", CUDA_VISIBLE_DEVICES="",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    if tf_config:
        env["TF_CONFIG"] = tf_config
    return env


def _start(script, recipe_path, model_dir, out, kill_epoch=-1, tf_config=None):
    return subprocess.Popen([sys.executable, str(script), str(recipe_path), str(model_dir), str(out), str(kill_epoch)],
                            env=_env(tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_workers(setup, model_dir, tag, kill_epoch=-1):
    root, recipe_path, script = setup
    configs = multiworker.local_cluster(2)
    procs = [_start(script, recipe_path, model_dir, root / f"{tag}-{i}", kill_epoch if i == 1 else -1,
                    configs[i]) for i in range(2)]
    return procs


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_two_workers_train_the_single_process_model_then_resume_after_a_kill(setup):
    root, recipe_path, script = setup
    single = _start(script, recipe_path, root / "single", root / "single")
    assert single.wait(timeout=600) == 0, single.stderr.read()

    # Two workers, each half of every global batch: identical weights, equal to the single process.
    model_dir = root / "model"
    procs = _two_workers(setup, model_dir, "mw")
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    for point in ("init", "step1", "last"):
        for a, b in zip(_weights(root / f"mw-0-{point}.npz"), _weights(root / f"mw-1-{point}.npz")):
            np.testing.assert_array_equal(a, b)
    # The same model as the single process, up to float32 rounding: the workers sum two half-batch
    # gradients where one process sums one batch, a reordering that AdamW amplifies step by step
    # (measured: 1.2e-6 after one step, 2.8e-6 after four, ~3e-4 at most after twelve).
    init, single = _weights(root / "single-init.npz"), _weights(root / "single-last.npz")
    for a, c in zip(_weights(root / "mw-0-init.npz"), init):
        np.testing.assert_array_equal(a, c)
    for a, c in zip(_weights(root / "mw-0-step1.npz"), _weights(root / "single-step1.npz")):
        np.testing.assert_allclose(a, c, atol=1e-5, rtol=0)
    chief = _weights(root / "mw-0-last.npz")
    moved = np.sqrt(sum(np.sum((c - i) ** 2) for c, i in zip(single, init)))
    apart = np.sqrt(sum(np.sum((a - c) ** 2) for a, c in zip(chief, single)))
    assert moved > 0.1 and apart < 1e-2 * moved, (apart, moved)
    # Only the chief wrote the model folder; the worker's scratch folder is gone.
    assert sorted(p.name for p in model_dir.iterdir()) == ["metrics.json", "model.keras", "tensorboard"]
    assert [h["epoch"] for h in json.loads((model_dir / "metrics.json").read_text())["history"]] == [1, 2, 3]

    # The worker is killed in the middle of epoch 2; its cluster restarts (the chief, stuck or failed
    # without its peer, is stopped as a scheduler would) and both resume from the chief's backup.
    model_dir = root / "killed"
    procs = _two_workers(setup, model_dir, "kill", kill_epoch=1)
    assert procs[1].wait(timeout=600) == -signal.SIGKILL
    try:
        procs[0].wait(timeout=30)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].wait()
    assert (model_dir / "backup").is_dir() and not (model_dir / "model.keras").exists()
    procs = _two_workers(setup, model_dir, "resumed")
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(out)
    for out in outs:
        assert "resuming model at epoch 2" in out and "finished" in out
    for a, b in zip(_weights(root / "resumed-0-last.npz"), _weights(root / "resumed-1-last.npz")):
        np.testing.assert_array_equal(a, b)
    assert [h["epoch"] for h in json.loads((model_dir / "metrics.json").read_text())["history"]] == [1, 2, 3]


def test_cluster_from_tf_config(monkeypatch):
    for i, config in enumerate(multiworker.local_cluster(3)):
        monkeypatch.setenv("TF_CONFIG", config)
        assert multiworker.cluster() == multiworker.Cluster(3, "worker", i)
    assert len({json.loads(c)["cluster"]["worker"][0] for c in multiworker.local_cluster(2)}) == 1
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert multiworker.cluster() == multiworker.Cluster(1, "worker", 0) and multiworker.cluster().is_chief
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2, 3], 2))
    c = multiworker.cluster()
    assert (c.workers, c.task_index, c.is_chief) == (3, 2, False)
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 0))
    assert multiworker.cluster().is_chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not multiworker.cluster().is_chief and multiworker.cluster().workers == 2
    assert multiworker.wanted("auto") and multiworker.wanted("multi_worker") and not multiworker.wanted("default")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match=r"^TF_CONFIG: not a cluster description"):
        multiworker.cluster()
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 5))
    with pytest.raises(UserError, match=r"^TF_CONFIG: task index 5 is outside the 2 worker address\(es\)$"):
        multiworker.cluster()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(UserError, match=r"^TF_CONFIG: task type 'ps' is not supported"):
        multiworker.cluster()


# Batches of ({"image", "objects"}, targets) build and train under the strategy too; each worker mixes its
# own rows (partners come from its share of the global batch).
VIEWS = ["--set", "baseline.views.kind=cutmix", "--set", "baseline.views.labels=objects"]


def test_cli_stage_on_two_workers_only_the_chief_writes(setup):
    root, recipe_path, _ = setup
    run_dir = root / "cli-run"
    configs = multiworker.local_cluster(2)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "cpsd_tf", "baseline", "--recipe", str(recipe_path), "--run-dir", str(run_dir),
         "--set", "train.strategy=multi_worker", "--set", "baseline.epochs=1", *VIEWS],
        env=_env(configs[i]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 0)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "unhealthy" not in err  # the workers left together (no peer looked crashed to the chief)
    model_dir = run_dir / "baseline"
    worker_out, chief_out = outs[0][0], outs[1][0]  # only the chief reports the model it wrote
    assert "best val mAP" in chief_out and f"-> {model_dir}" in chief_out and "cutmix views" in chief_out
    assert "best val mAP" not in worker_out and "trained with the chief (worker 0), which writes" in worker_out
    assert sorted(p.name for p in model_dir.iterdir()) == [
        ".lock", "metrics.json", "model.keras", "provenance.json", "tensorboard", "thresholds.json"]
    assert "pid" in (model_dir / ".lock").read_text() and str(procs[1].pid) in (model_dir / ".lock").read_text()
    assert (run_dir / "recipe.yaml").is_file()
    # A rerun on both workers: both see the finished model and skip it.
    configs = multiworker.local_cluster(2)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "cpsd_tf", "baseline", "--recipe", str(recipe_path), "--run-dir", str(run_dir),
         "--set", "train.strategy=multi_worker", "--set", "baseline.epochs=1", *VIEWS],
        env=_env(configs[i]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "[baseline] baseline finished already, skipped" in out
    # One process without TF_CONFIG or the strategy key takes the model as its own (the strategy is not
    # part of a model's provenance).
    from click.testing import CliRunner

    from cpsd_tf.cli import cli

    result = CliRunner().invoke(cli, ["baseline", "--recipe", str(recipe_path), "--run-dir", str(run_dir),
                                      "--set", "baseline.epochs=1", *VIEWS])
    assert result.exit_code == 0, result.output
    assert "[baseline] baseline finished already, skipped" in result.output

