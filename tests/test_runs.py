"""`cpsd-tf run`: stages in order, finished ones skipped; stages never run each other."""

import json

from click.testing import CliRunner

from cpsd_tf import rundir, runs
from cpsd_tf.cli import cli

from helpers_recipes import write_tiny_recipe


def test_partition_needs_the_data_and_names_the_command(tmp_path):
    path = write_tiny_recipe(tmp_path)
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(path)])
    assert result.exit_code == 2
    assert "cpsd-tf data build --recipe R" in result.output
    assert not (tmp_path / "data").exists()  # the stage did not build it
    assert CliRunner().invoke(cli, ["data", "build", "--recipe", str(path)]).exit_code == 0
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "partition.json").is_file() and (tmp_path / "run" / "recipe.yaml").is_file()


def test_missing_data_without_generator(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"run_dir": str(tmp_path / "run"), "data": {"dir": str(tmp_path / "none")}}))
    result = CliRunner().invoke(cli, ["run", "--recipe", str(path)])
    assert result.exit_code == 2
    assert "holds no dataset.json" in result.output and "cpsd-tf data csv" in result.output


def test_verdict_says_plainly_where_the_student_stands():
    report = {"models": {"baseline": {"test": {"mAP": 80.0}, "test_ood": {"mAP": 40.0}},
                         "cpsd": {"test": {"mAP": 80.5}, "test_ood": {"mAP": 39.0}}}}
    assert runs.verdict(report, "cpsd") == [
        "cpsd is above the baseline on test: 80.50 vs 80.00 mAP (+0.50)",
        "cpsd is below the baseline on test_ood: 39.00 vs 40.00 mAP (-1.00)",
    ]
    assert runs.verdict({"models": {"cpsd": {}}}, "cpsd") == []
    report["training"] = {"baseline": {"rising": True, "last_quarter_rise": 1.5},
                          "cpsd": {"rising": False, "last_quarter_rise": 0.1}}
    assert runs.verdict(report, "cpsd")[2] == ("not settled: baseline (val mAP +1.50 in its last quarter) still "
                                               "rising when training stopped; train longer before reading this")
    report["training"]["baseline"]["rising"] = False
    assert len(runs.verdict(report, "cpsd")) == 2


def test_the_run_names_the_paths_it_wrote(tmp_path):
    (tmp_path / "results.md").write_text("x")
    (tmp_path / "student").mkdir()
    lines = runs.written(tmp_path)
    assert lines[0] == f"Run directory: {tmp_path}"
    assert any(line.split() == ["results:", str(tmp_path / "results.md")] for line in lines)
    assert any(line.split() == ["student:", str(tmp_path / "student")] for line in lines)
    assert not any(line.strip().startswith(("figure:", "baseline:")) for line in lines)  # not written: not named
    assert lines[-1].endswith(f"tensorboard --logdir {tmp_path}")


def test_equal_compute_baseline_trains_alone_as_long_as_the_teachers_and_student(tmp_path):
    path = write_tiny_recipe(tmp_path, teachers={"epochs": 1}, distill={"epochs": 2})
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["baseline", "--recipe", str(path), "--equal-compute"])
    assert result.exit_code == 2 and "cpsd-tf data build --recipe R" in result.output
    assert CliRunner().invoke(cli, ["data", "build", "--recipe", str(path)]).exit_code == 0
    result = CliRunner().invoke(cli, ["baseline", "--recipe", str(path), "--equal-compute"])
    assert result.exit_code == 2 and "no partition yet" in result.output, result.output
    assert not rundir.equal_compute_dir(run).exists()
    assert CliRunner().invoke(cli, ["partition", "--recipe", str(path)]).exit_code == 0

    result = CliRunner().invoke(cli, ["baseline", "--recipe", str(path), "--equal-compute"])
    assert result.exit_code == 0, result.output
    assert "6 epochs (= 2k teachers + student)" in result.output  # 2k = 4 teachers x 1 epoch + 2 student epochs
    folder = rundir.equal_compute_dir(run)
    assert rundir.model_is_done(folder) and not rundir.baseline_dir(run).exists()
    assert rundir.model_metrics(folder)["epochs"] == 6
    assert rundir.read_provenance(folder)["values"]["baseline_equal_compute.epochs"] == 6
    again = CliRunner().invoke(cli, ["baseline", "--recipe", str(path), "--equal-compute"])
    assert again.exit_code == 0 and "finished already, skipped" in again.output


def test_equal_compute_counts_a_positive_images_teacher_at_its_share(tmp_path):
    from cpsd_tf import baseline, recipe as recipe_mod
    from cpsd_tf.data import records

    path = write_tiny_recipe(tmp_path, teachers={"epochs": 3, "images": "positive"}, distill={"epochs": 2})
    assert CliRunner().invoke(cli, ["data", "build", "--recipe", str(path)]).exit_code == 0
    assert CliRunner().invoke(cli, ["partition", "--recipe", str(path)]).exit_code == 0
    r = recipe_mod.load(path)
    run = tmp_path / "run"
    _, y = records.read_labels(r.data.dir, "train")
    shares = [y[:, subset].any(axis=1).mean() for s in ("cgp", "dgp") for _, _, subset in rundir.teachers_of(run, s)]
    assert len(shares) == 4 and min(shares) < 1  # a teacher skips the images without its labels
    assert baseline.equal_compute_epochs(r, run) == round(3 * sum(shares) + 2) < 3 * len(shares) + 2


def test_two_processes_starting_on_new_data_generate_it_once(tmp_path, monkeypatch):
    import threading
    import time

    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf.data import prepare, scenes

    calls = []
    real = scenes.generate

    def slow_generate(out, config, seed):
        calls.append(out)
        time.sleep(1.0)  # the other caller arrives while this one is still writing
        return real(out, config, seed=seed)

    monkeypatch.setattr(scenes, "generate", slow_generate)
    r = recipe_mod.load(write_tiny_recipe(tmp_path))
    errors = []

    def build():
        try:
            prepare.run(r)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert prepare.is_done(r) and sorted(p.name for p in tmp_path.iterdir()) == ["data", "r.yaml"]  # no lock file
