"""Label partition (`cpsd-tf partition`, paper §3.2): affinities, CGP/DGP clusters, edge cases, CLI."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cpsd_tf import partition
from cpsd_tf.cli import cli
from cpsd_tf.cli import partition as cli_partition
from cpsd_tf.errors import UserError

# CI runs in a fresh clone with a copy of shared/ beside it (<clone>/../shared).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = {"coco": "coco2014_train_label_stats.json", "nuswide": "nuswide_train_label_stats.json"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def real_stats(name):
    path = SHARED_DATA / REAL[name]
    if not path.is_file():
        pytest.skip(f"real label statistics not found at {path} (shared/ must sit beside the clone)")
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=None)
def _real_result(name, strategy="spectral", balanced=False, seed=0):
    return partition.partition_labels(real_stats(name), k=5, tau=2.0, strategy=strategy, seed=seed, balanced=balanced)


def names(result, strategy):
    return [{result["classes"][i] for i in cluster} for cluster in result[strategy]]


def toy_stats(m=6, blocks=((0, 1, 2), (3, 4, 5)), count=10, co=5):
    """m classes in co-occurring blocks: e_ij = co within a block, 0 across."""
    e = np.zeros((m, m), int)
    for block in blocks:
        for i in block:
            for j in block:
                if i != j:
                    e[i, j] = co
    return {"classes": [f"c{i}" for i in range(m)], "class_counts": [count] * m, "cooccurrence": e.tolist()}


def assert_valid(result, m, k):
    for strategy in ("cgp", "dgp"):
        clusters = result[strategy]
        assert len(clusters) == k and all(clusters), clusters
        assert sorted(i for c in clusters for i in c) == list(range(m))
        assert all(c == sorted(c) for c in clusters)
        assert [c[0] for c in clusters] == sorted(c[0] for c in clusters)
        assert result["cluster_sizes"][strategy] == [len(c) for c in clusters]
    json.dumps(result, allow_nan=False)  # no NaN/inf anywhere


# === Affinities ===


def test_affinities_match_the_formula():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.4).astype(int)
    n = y.sum(axis=0).astype(float)
    e = (y.T @ y).astype(float)
    np.fill_diagonal(e, 0)
    tau = 3.0
    p_plus, p_minus = partition.affinities(n, e, tau)
    s = e / n[:, None]
    expected = (s ** (1 / tau) + (s ** (1 / tau)).T) / 2
    np.testing.assert_allclose(p_plus, expected)
    off = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(p_minus[off], 1 - expected[off])
    assert np.all(np.diag(p_plus) == 0) and np.all(np.diag(p_minus) == 0)  # no self-loops (module doc)
    np.testing.assert_array_equal(p_plus, p_plus.T)


def test_diagonal_of_the_counts_is_ignored():
    s = toy_stats()
    e = np.array(s["cooccurrence"])
    np.fill_diagonal(e, s["class_counts"])  # e_ii = n_i, as a raw Yᵀ Y would give
    with_diag = dict(s, cooccurrence=e.tolist())
    assert partition.partition_labels(with_diag, k=2) == partition.partition_labels(s, k=2)


def test_toy_blocks():
    result = partition.partition_labels(toy_stats(), k=2, tau=2.0)
    assert result["cgp"] == [[0, 1, 2], [3, 4, 5]]
    assert result["within_cluster_cooccurrence"]["cgp"] > result["within_cluster_cooccurrence"]["dgp"]


# === Real statistics ===


@pytest.mark.parametrize("name", list(REAL))
@pytest.mark.parametrize("strategy", list(partition.STRATEGIES))
def test_real_partition_is_valid(name, strategy):
    result = _real_result(name, strategy)
    m = len(real_stats(name)["classes"])
    assert_valid(result, m, 5)
    assert {key: result[key] for key in ("k", "tau", "strategy", "seed")} == {
        "k": 5, "tau": 2.0, "strategy": strategy, "seed": 0
    }


@pytest.mark.parametrize("name", list(REAL))
def test_same_seed_same_clusters(name):
    again = partition.partition_labels(real_stats(name), k=5, tau=2.0, seed=0)
    assert again == _real_result(name)


@pytest.mark.parametrize("name", list(REAL))
def test_cgp_groups_co_occurring_classes_and_dgp_separates_them(name):
    means = _real_result(name)["within_cluster_cooccurrence"]
    assert means["cgp"] > means["all_pairs"] > means["dgp"]
    assert means["cgp"] > 1.5 * means["all_pairs"]


def test_coco_cgp_clusters():
    cgp = names(_real_result("coco"), "cgp")
    for group in ({"giraffe", "zebra", "elephant"}, {"keyboard", "mouse", "laptop"}, {"pizza", "fork", "knife"}):
        assert any(group <= cluster for cluster in cgp), group


def test_coco_cgp_reproduces_the_official_release():
    """k=5, tau=2 gives exactly the CGP clusters of the official code (data/idx_coocurrence5_0.json)."""
    official = [
        "bed book cat cell_phone chair clock couch dog hair_drier keyboard laptop mouse potted_plant remote "
        "scissors sink teddy_bear toilet toothbrush tv vase",
        "airplane backpack bench bicycle boat bus car fire_hydrant frisbee handbag horse kite motorcycle "
        "parking_meter person skateboard skis snowboard stop_sign suitcase surfboard tie traffic_light train "
        "truck umbrella",
        "bear bird cow elephant giraffe sheep zebra",
        "apple banana bottle bowl broccoli cake carrot cup dining_table donut fork hot_dog knife microwave "
        "orange oven pizza refrigerator sandwich spoon toaster wine_glass",
        "baseball_bat baseball_glove sports_ball tennis_racket",
    ]
    expected = sorted(sorted(c.replace("_", " ") for c in group.split()) for group in official)
    assert sorted(sorted(c) for c in names(_real_result("coco"), "cgp")) == expected


def test_nuswide_cgp_reproduces_the_official_release():
    """Same for NUS-WIDE (data/nus_coocurrence5_0.json of the official code, class indices)."""
    official = [
        [0, 8, 9, 12, 19, 21, 23, 37, 40, 43, 45, 46, 47, 50, 54, 60, 68, 69, 71, 74, 79],
        [1, 3, 4, 6, 11, 14, 16, 18, 20, 24, 25, 26, 32, 35, 67, 70, 80],
        [2, 5, 7, 10, 13, 27, 28, 29, 30, 31, 33, 34, 38, 39, 41, 44, 48, 49, 51, 53, 55, 56, 59, 61, 62, 66, 72,
         73, 75, 76, 77],
        [15, 22, 36, 78],
        [17, 42, 52, 57, 58, 63, 64, 65],
    ]
    assert _real_result("nuswide")["cgp"] == official


@pytest.mark.parametrize("name", list(REAL))
def test_balanced_bounds_sizes(name):
    result = _real_result(name, balanced=True)
    m = len(result["classes"])
    low, high = partition.size_bounds(m, 5)
    assert result["size_bounds"] == [low, high] and low > 1
    assert_valid(result, m, 5)
    for strategy in ("cgp", "dgp"):
        assert all(low <= size <= high for size in result["cluster_sizes"][strategy])
    means = result["within_cluster_cooccurrence"]
    assert means["cgp"] > means["dgp"]


def test_unbalanced_dgp_has_degenerate_clusters_on_coco():
    """Why `balanced` exists: the faithful DGP of COCO has one-class clusters (so had the official one)."""
    assert min(_real_result("coco")["cluster_sizes"]["dgp"]) == 1


def test_random_partitions():
    result = _real_result("coco", "random")
    assert sorted(result["cluster_sizes"]["cgp"]) == [16] * 5
    assert result["cgp"] != result["dgp"]  # two independent draws
    assert partition.partition_labels(real_stats("coco"), 5, 2.0, "random", seed=0) == result
    assert partition.partition_labels(real_stats("coco"), 5, 2.0, "random", seed=1)["cgp"] != result["cgp"]


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(UserError, match="unknown partition strategy 'kmeans'; choose one of: spectral, random"):
        partition.partition_labels(toy_stats(), k=2, strategy="kmeans")


def test_cli_choices_mirror_the_registry():
    assert cli_partition.STRATEGY_NAMES == list(partition.STRATEGIES)


# === Edge cases ===


@pytest.mark.parametrize("balanced", [False, True])
def test_class_without_positives(capsys, balanced):
    s = toy_stats(m=7)  # c6: no block, n = 0
    s["class_counts"][6] = 0
    result = partition.partition_labels(s, k=3, balanced=balanced)
    assert_valid(result, 7, 3)
    err = capsys.readouterr().err
    assert "without any positive example: 'c6'" in err
    p_plus, p_minus = partition.affinities(np.array(s["class_counts"]), np.array(s["cooccurrence"], float), 2.0)
    assert np.isfinite(p_plus).all() and np.isfinite(p_minus).all()


def test_class_that_never_co_occurs(capsys):
    s = toy_stats(m=7)  # c6 has positives but no block
    result = partition.partition_labels(s, k=3)
    assert_valid(result, 7, 3)
    assert "never co-occur with another class: 'c6'" in capsys.readouterr().err
    assert [6] in result["cgp"]  # an isolated vertex: its own CGP cluster


def test_many_isolated_classes_still_give_k_nonempty_clusters():
    s = toy_stats(m=6, blocks=())  # nothing co-occurs: the embedding has fewer distinct rows than k
    for k in range(1, 7):
        assert_valid(partition.partition_labels(s, k=k), 6, k)


def test_k_equals_one_and_m():
    s = toy_stats()
    one = partition.partition_labels(s, k=1)
    assert one["cgp"] == one["dgp"] == [list(range(6))]
    all_ = partition.partition_labels(s, k=6)
    assert all_["cgp"] == all_["dgp"] == [[i] for i in range(6)]
    assert all_["within_cluster_cooccurrence"]["cgp"] is None  # no within-cluster pair, no NaN
    assert_valid(all_, 6, 6)


def _with(s, **changes):
    return dict(s, **changes)


def _asymmetric(s):
    e = np.array(s["cooccurrence"])
    e[0, 1] += 1
    return _with(s, cooccurrence=e.tolist())


def _negative(s):
    e = np.array(s["cooccurrence"])
    e[2, 4] = e[4, 2] = -1
    return _with(s, cooccurrence=e.tolist())


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda s: s, {"k": 7}, "k must be between 1 and the number of classes m = 6, received 7"),
        (lambda s: s, {"k": 0}, "received 0"),
        (lambda s: s, {"k": 2.5}, "k must be an integer, received 2.5"),
        (lambda s: s, {"tau": 0}, "tau must be a number > 0, received 0"),
        (lambda s: s, {"tau": -1.0}, "received -1.0"),
        (lambda s: s, {"tau": float("nan")}, "received nan"),
        (lambda s: _with(s, cooccurrence=np.zeros((6, 5)).tolist()), {}, "square 6x6 matrix (6 classes), got shape [6, 5]"),
        (lambda s: _with(s, cooccurrence=[[0, 1], [1]]), {}, "'cooccurrence' must be numbers"),
        (_asymmetric, {}, "must be symmetric, cooccurrence[0][1] = 6 but cooccurrence[1][0] = 5"),
        (_negative, {}, "non-negative numbers, cooccurrence[2][4] = -1.0"),
        (lambda s: _with(s, class_counts=[10] * 5), {}, "'class_counts' has shape [5] but there are 6 classes"),
        (lambda s: _with(s, class_counts=[10, 10, 2, 10, 10, 10]), {}, "cooccurrence[2][0] = 5 exceeds class_counts[2] = 2 (class 'c2')"),
        (lambda s: _with(s, classes=[]), {}, "'classes' must be a non-empty list"),
    ],
)
def test_bad_input_is_a_user_error(make, kwargs, message):
    with pytest.raises(UserError) as info:
        partition.partition_labels(make(toy_stats()), **{"k": 2, **kwargs}, source="s.json")
    assert message in info.value.message
    assert info.value.exit_code == 2


# === Files ===


def test_write_load_and_plot(tmp_path):
    s = toy_stats()
    result = partition.partition_labels(s, k=2)
    partition.write(result, tmp_path / "p.json", stats=s, plot=tmp_path / "p.png")
    assert partition.load(tmp_path / "p.json") == result
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.png"]  # no temp files left


def test_load_rejects_a_broken_partition(tmp_path):
    result = partition.partition_labels(toy_stats(), k=2)
    result["dgp"] = [[0, 1, 2], [2, 3, 4, 5]]
    (tmp_path / "p.json").write_text(json.dumps(result))
    with pytest.raises(UserError, match="'dgp': expected 2 non-empty clusters covering classes 0..5 exactly once"):
        partition.load(tmp_path / "p.json")


# === CLI ===


def test_cli_stats_mode(tmp_path):
    stats_path = SHARED_DATA / REAL["coco"]
    real_stats("coco")
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    result = CliRunner().invoke(
        cli, ["partition", "--stats", str(stats_path), "--k", "5", "--tau", "2", "--out", str(out), "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert "k=5, tau=2, strategy=spectral, seed=0, balanced=False (defaults: strategy, seed, balanced)" in result.output
    assert "giraffe" in result.output and "cgp-4 (21)" in result.output
    written = json.loads(out.read_text())
    assert written["cgp"] == _real_result("coco")["cgp"]
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_cli_defaults_and_balanced(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(toy_stats(m=10, blocks=((0, 1, 2), (3, 4, 5), (6, 7, 8, 9)))))
    result = CliRunner().invoke(cli, ["partition", "--stats", str(path), "--balanced", "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert "k=5, tau=2, strategy=spectral, seed=0, balanced=True (defaults: k, tau, strategy, seed)" in result.output
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["balanced"] is True and written["k"] == 5 and not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give exactly one of --recipe or --stats"),
        (["--recipe", "r.yaml", "--stats", "s.json"], "give exactly one of --recipe or --stats"),
        (["--stats", "STATS"], "--stats needs --out FILE"),
        (["--stats", "STATS", "--k", "0", "--out", "p.json"], "k must be between 1 and the number of classes m = 6, received 0"),
        (["--stats", "STATS", "--tau", "-2", "--out", "p.json"], "tau must be a number > 0, received -2.0"),
        (["--stats", "STATS", "--strategy", "kmeans", "--out", "p.json"], "'kmeans' is not one of 'spectral', 'random'"),
        (["--stats", "BAD", "--out", "p.json"], "BAD.json: 'cooccurrence' must be symmetric"),
        (["--stats", "missing.json", "--out", "p.json"], "missing.json: no such label-statistics file"),
        (["--stats", "STATS", "--run-dir", "x", "--out", "p.json"], "--run-dir and --set go with --recipe"),
    ],
)
def test_cli_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    Path("STATS").write_text(json.dumps(toy_stats()))
    Path("BAD.json").write_text(json.dumps(_asymmetric(toy_stats())))
    args = ["BAD.json" if a == "BAD" else a for a in args]
    result = CliRunner().invoke(cli, ["partition", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and not Path("p.json").exists()


# === Recipe mode ===


def _recipe_setup(tmp_path, with_stats_json=True):
    s = toy_stats()
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"classes": s["classes"], "splits": {"train": 10}}))
    if with_stats_json:
        (data / "stats.json").write_text(json.dumps(s))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"run_dir: {tmp_path / 'run'}\ndata:\n  dir: {data}\npartition:\n  k: 3\n  tau: 2.0\n  balanced: false\n"
    )
    return s, recipe


def test_cli_recipe_mode(tmp_path):
    _, recipe = _recipe_setup(tmp_path)
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(recipe), "--k", "2", "--balanced"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    written = partition.load(run / "partition.json")
    assert written["k"] == 2 and written["balanced"] is True and written["cgp"] == [[0, 1, 2], [3, 4, 5]]
    assert (run / "partition.png").read_bytes()[:8] == PNG_MAGIC
    assert "partition:\n  k: 2" in (run / "recipe.yaml").read_text()  # resolved recipe, with the override
    assert "stats.json" in result.output


def test_cli_recipe_mode_run_dir_and_errors(tmp_path):
    _, recipe = _recipe_setup(tmp_path)
    other = tmp_path / "other"
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(recipe), "--run-dir", str(other), "--set", "partition.k=3"])
    assert result.exit_code == 0, result.output
    assert partition.load(other / "partition.json")["k"] == 3
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(recipe), "--out", "p.json"])
    assert result.exit_code == 2 and "--out and --plot go with --stats" in result.output
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(recipe), "--k", "7"])
    assert result.exit_code == 2 and "received 7" in result.output


def test_run_without_stats_json_reads_the_train_split(tmp_path, monkeypatch):
    s, recipe = _recipe_setup(tmp_path, with_stats_json=False)
    meta = tmp_path / "data" / "dataset.json"
    meta.write_text(json.dumps({"classes": s["classes"], "splits": {"train": 10, "trainval": 12}}))
    calls = []

    def from_records(data_dir, split="train"):
        calls.append((str(data_dir), split))
        return s

    monkeypatch.setattr("cpsd_tf.stats.from_records", from_records)
    from cpsd_tf import recipe as recipe_mod

    r = recipe_mod.load(recipe, overrides=["data.train_split=trainval"])
    result = partition.run(r, tmp_path / "run")
    assert calls == [(str(tmp_path / "data"), "trainval")]
    assert result["k"] == 3 and (tmp_path / "run" / "partition.json").is_file()


def test_stale_stats_json_is_rejected(tmp_path):
    s, recipe = _recipe_setup(tmp_path)
    (tmp_path / "data" / "stats.json").write_text(json.dumps(dict(s, classes=[f"x{i}" for i in range(6)])))
    result = CliRunner().invoke(cli, ["partition", "--recipe", str(recipe)])
    assert result.exit_code == 2 and "its classes differ from" in result.output


def test_describe_names_the_teachers_each_partition_feeds():
    spectral = partition.describe(partition.partition_labels(toy_stats(), k=2, strategy="spectral"))
    assert spectral[0].startswith("CGP (co-occurrence): sizes [3, 3]")
    assert any(line.startswith("  dgp-1 (") for line in spectral)
    random = partition.describe(partition.partition_labels(toy_stats(), k=2, strategy="random"))
    assert random[0].startswith("Random clusters: sizes [3, 3]")
    assert [line.split(" (")[0].strip() for line in random[1:]] == ["random-0", "random-1"]


def test_clustering_runs_in_one_blas_thread(monkeypatch):
    """Spin-waiting BLAS threads made partition 5-40x slower on a shared machine: the solver gets one."""
    from threadpoolctl import threadpool_info

    seen = {}

    def spy(p_plus, p_minus, k, seed, balanced, info):
        seen["threads"] = {pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()}
        return partition._random(p_plus, p_minus, k, seed, balanced, info)

    monkeypatch.setitem(partition.STRATEGIES, "random", spy)
    partition.partition_labels(toy_stats(), k=2, strategy="random")
    assert seen["threads"] and set(seen["threads"].values()) == {1}, seen


def test_eigen_gap_is_reported_and_one_class_clusters_warned(capsys):
    blocks = partition.partition_labels(toy_stats(), k=2)
    assert blocks["eigen_gap"]["cgp"] > 0.5  # two disconnected blocks: a clear 2-way cut
    coco = _real_result("coco")
    # COCO k = 5: CGP gap 0.0087, DGP 0.0011, an arbitrary 5-way cut (sizes [46, 29, 3, 1, 1])
    assert coco["eigen_gap"]["dgp"] < 0.005 and coco["eigen_gap"]["dgp"] < coco["eigen_gap"]["cgp"]
    partition.partition_labels(real_stats("coco"), k=5)
    err = capsys.readouterr().err
    assert "warning: DGP has 2 cluster(s) of one class" in err and "partition.balanced=true" in err
    partition.partition_labels(real_stats("coco"), k=5, balanced=True)
    assert "cluster(s) of one class" not in capsys.readouterr().err
