"""The run directory as the single owner: user files survive, artefacts remember their recipe, locks."""

import ast
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cpsd_tf
from cpsd_tf import evaluate, io, rundir
from cpsd_tf.cli import cli

from helpers_recipes import write_tiny_recipe


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.fixture
def built(tmp_path):
    """A tiny recipe whose data set exists (built with `data build`)."""
    path = write_tiny_recipe(tmp_path)
    result = _invoke("data", "build", "--recipe", path)
    assert result.exit_code == 0, result.output
    return path


def test_a_user_folder_survives_every_verb(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    path = write_tiny_recipe(tmp_path)
    verbs = [["data", "build"], ["partition"], ["baseline"], ["teachers"], ["logits"], ["distill"], ["run"]]
    for verb in verbs:  # as the data folder
        result = _invoke(*verb, "--recipe", path, "--run-dir", tmp_path / "run", "--set", f"data.dir={mine}")
        message = _one_line_error(result)
        assert str(mine) in message
        assert sorted(os.listdir(mine)) == ["keep.txt"] and (mine / "keep.txt").read_text() == "mine"
    monkeypatch.chdir(mine)  # `--set data.dir=.`: the current folder
    message = _one_line_error(_invoke("run", "--recipe", path, "--run-dir", tmp_path / "run2", "--set", "data.dir=."))
    assert "not a cpsd-tf data set" in message and sorted(os.listdir(mine)) == ["keep.txt"]
    for verb in verbs[1:]:  # as the run directory
        message = _one_line_error(_invoke(*verb, "--recipe", path, "--run-dir", mine))
        assert "did not write" in message or "holds no dataset.json" in message
        assert sorted(os.listdir(mine)) == ["keep.txt"]


def test_atomic_writes_never_replace_a_foreign_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "x").write_text("x")
    with pytest.raises(cpsd_tf.errors.UserError, match="non-empty folder"):
        with io.atomic_path(target) as tmp:
            tmp.mkdir()
    assert (target / "x").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_generated_data_records_its_settings_and_refuses_others(tmp_path, built):
    data = tmp_path / "data"
    assert json.loads((data / "generator.json").read_text())["scenes"]["train"] == 48
    message = _one_line_error(_invoke("partition", "--recipe", built, "--set", "data.scenes.train=40"))
    assert "data.scenes.train=48" in message and "data.scenes.train=40" in message
    assert json.loads((data / "dataset.json").read_text())["splits"]["train"] == 48

    assert _invoke("partition", "--recipe", built).exit_code == 0
    regenerated = _invoke("data", "build", "--recipe", built, "--set", "data.scenes.train=40", "--force")
    assert regenerated.exit_code == 0, regenerated.output
    assert json.loads((data / "dataset.json").read_text())["splits"]["train"] == 40
    # The partition was made from the old train split: it is not silently reused.
    message = _one_line_error(_invoke("partition", "--recipe", built, "--set", "data.scenes.train=40"))
    assert "another data" in message and "--force" in message
    redone = _invoke("partition", "--recipe", built, "--set", "data.scenes.train=40", "--force")
    assert redone.exit_code == 0, redone.output


def test_partition_refuses_other_values_and_keeps_recipe_yaml(tmp_path, built):
    assert _invoke("partition", "--recipe", built).exit_code == 0
    recipe_yaml = (tmp_path / "run" / "recipe.yaml").read_text()
    message = _one_line_error(_invoke("partition", "--recipe", built, "--k", "3"))
    assert "partition.k=2" in message and "partition.k=3" in message and "--run-dir" in message
    assert (tmp_path / "run" / "recipe.yaml").read_text() == recipe_yaml
    # A stage whose input is missing names the command that makes it.
    message = _one_line_error(_invoke("teachers", "--recipe", built, "--run-dir", tmp_path / "fresh"))
    assert "cpsd-tf partition" in message


def test_a_model_being_trained_elsewhere_is_left_alone(tmp_path, built):
    run = tmp_path / "run"
    assert _invoke("partition", "--recipe", built).exit_code == 0
    with rundir.lock(run / "baseline", "baseline"):
        message = _one_line_error(_invoke("baseline", "--recipe", built))
        assert f"pid {os.getpid()}" in message
    with rundir.lock(run / "teachers" / "cgp-0", "teacher cgp-0"):
        result = _invoke("teachers", "--recipe", built, "--only", "cgp-0")
        assert result.exit_code == 0, result.output
        assert "skipped here" in result.output and not rundir.model_is_done(run / "teachers" / "cgp-0")
    assert not (run / "baseline" / "model.keras").exists()


def test_a_killed_holder_releases_its_lock(tmp_path):
    folder = tmp_path / "model"
    code = ("import sys, time; from cpsd_tf import rundir\n"
            "with rundir.lock(sys.argv[1], 'm'):\n    print('locked', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.Busy, match=f"pid {holder.pid}"):
            with rundir.lock(folder, "m"):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with rundir.lock(folder, "m"):  # the kernel released it
            pass
    finally:
        holder.kill()


def test_non_text_recipe_is_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    message = _one_line_error(_invoke("run", "--recipe", path))
    assert str(path) in message and "not a text recipe" in message


def test_unknown_backbone_is_refused_before_any_data(tmp_path):
    path = write_tiny_recipe(tmp_path)
    message = _one_line_error(_invoke("run", "--recipe", path, "--set", "model.backbone=resnet9000"))
    assert "model.backbone" in message and "resnet9000" in message and "tiny_cnn" in message
    message = _one_line_error(_invoke("run", "--recipe", path, "--set", "model.head_options={depth: 2}"))
    assert "model.head_options" in message and "depth" in message
    assert not (tmp_path / "data").exists()


def test_resolved_recipe_shows_the_real_values(tmp_path):
    from cpsd_tf import recipe

    r = recipe.load(write_tiny_recipe(tmp_path, epochs=3))
    assert (r.baseline.epochs, r.teachers.epochs, r.distill.epochs) == (3, 3, 3)
    assert r.teachers.lr == r.distill.lr == r.train.lr and r.train.select_split == r.data.val_split
    assert "normalize" not in r.model.model_dump()


def test_evaluate_prints_results_on_a_read_only_run(tmp_path, monkeypatch):
    write_tiny_recipe(tmp_path)
    run = tmp_path / "run"
    (run / "baseline").mkdir(parents=True)
    (run / "recipe.yaml").write_text("run_dir: run\n")
    model_dir = run / "baseline"
    monkeypatch.setattr(rundir, "full_label_models", lambda d: [("baseline", model_dir)])
    monkeypatch.setattr(rundir, "load_model", lambda d: None)
    monkeypatch.setattr(evaluate.prepare, "require", lambda *a, **k: None)
    monkeypatch.setattr(evaluate, "evaluate_model", lambda *a, **k: dict.fromkeys(evaluate.TABLE_KEYS, 50.0))
    monkeypatch.setattr(evaluate.thresholds, "for_model", lambda *a, **k: None)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(evaluate.io, "write_json", read_only)
    result = CliRunner().invoke(cli, ["evaluate", "--recipe", str(tmp_path / "r.yaml")])
    assert result.exit_code == 0, result.output
    assert "baseline" in result.stdout and "50.00" in result.stdout
    assert "could not write" in result.stderr and not (run / "results.json").exists()


def _import_graph():
    root = Path(cpsd_tf.__file__).parent
    modules = {}
    for f in root.rglob("*.py"):
        name = ".".join(("cpsd_tf", *f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        modules[name] = f
    edges = {}
    for name, f in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpsd_tf"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("cpsd_tf")}
        edges[name] = {t for t in targets if t in modules and t != name}
    return edges


def test_no_import_cycle_among_modules():
    edges = _import_graph()
    # Packages import their own submodules to re-export them; a package is not a stage.
    packages = {"cpsd_tf", "cpsd_tf.cli", "cpsd_tf.data", "cpsd_tf.models"}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen and nxt not in packages:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(m for m in edges if m not in packages and m in reach(m))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_converters_never_write_into_a_user_folder(tmp_path):
    from helpers_sources import images_in

    images = images_in(tmp_path / "imgs", ["a.jpg"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,labels\na.jpg,dog\n")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    message = _one_line_error(_invoke("data", "csv", "--labels", labels, "--images", images, "--split", "train",
                                      "--out", out))
    assert "not a cpsd-tf data set" in message and sorted(os.listdir(out)) == ["notes.txt"]
    from cpsd_tf.data import sources  # several splits at once (COCO/NUS-WIDE --holdout) take another path

    with pytest.raises(cpsd_tf.errors.UserError, match="not a cpsd-tf data set"):
        sources._write_together(out, ["dog"], {"train": []}, skip_invalid=True)
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_set_errors_name_the_override_not_the_file(tmp_path):
    path = write_tiny_recipe(tmp_path)
    message = _one_line_error(_invoke("baseline", "--recipe", path, "--set", "foo.bar=1"))
    assert message.startswith("Error: --set foo.bar:") and "unknown key 'foo'" in message
    message = _one_line_error(_invoke("distill", "--recipe", path, "--set", "distill.teachers=[nope]"))
    assert message.startswith("Error: --set distill.teachers:")


def test_a_recipe_verb_prints_one_stderr_line_in_a_real_process(tmp_path):
    """TensorFlow's start-up chatter must not precede the error (the stage modules import TF on load)."""
    path = write_tiny_recipe(tmp_path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    env.pop("CPSD_TF_VERBOSE_TF", None)
    done = subprocess.run([sys.executable, "-m", "cpsd_tf", "teachers", "--recipe", str(path), "--shard", "5/2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["Error: --shard '5/2': need 0 <= i < n"], done.stderr


def test_a_refused_stage_leaves_no_new_run_directory(tmp_path):
    """`distill` before any teacher: exit 2, and the run directory it opened is put back as it was."""
    from click.testing import CliRunner

    from cpsd_tf.cli import cli

    from helpers_recipes import write_tiny_recipe

    path = write_tiny_recipe(tmp_path)
    new = tmp_path / "new-run"
    result = CliRunner().invoke(cli, ["distill", "--recipe", str(path), "--run-dir", str(new)])
    assert result.exit_code == 2, result.output
    assert not new.exists()
    empty = tmp_path / "empty-run"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["distill", "--recipe", str(path), "--run-dir", str(empty)])
    assert result.exit_code == 2 and empty.is_dir() and not any(empty.iterdir())
    kept = tmp_path / "kept-run"  # a run with work in it keeps everything, the recipe too
    kept.mkdir()
    (kept / "recipe.yaml").write_text((tmp_path / "r.yaml").read_text())
    (kept / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["distill", "--recipe", str(path), "--run-dir", str(kept)])
    assert result.exit_code == 2 and sorted(p.name for p in kept.iterdir()) == ["notes.txt", "recipe.yaml"]
