"""`cpsd-tf partition`: split the label set two ways, CGP and DGP (paper §3.2).

From the label statistics (n_i images with class i, e_ij images with both i and j):

    S_ij = e_ij / n_i  (S_ii = 0; a row with n_i = 0 is all zero)
    P+   = (S^(1/τ) + (S^(1/τ))ᵀ) / 2      co-occurrence graph G+  (CGP)
    P-   = 1 − P+   off the diagonal      dis-occurrence graph G- (DGP)

Each graph is cut into k clusters by normalised-cut spectral clustering: the k eigenvectors of the
normalised Laplacian I − D^-½ P D^-½ with the smallest eigenvalues (dense `scipy.linalg.eigh`, exact and
deterministic), scaled by D^-½ as scikit-learn's `SpectralClustering` does (the official code used it;
with τ = 2 this reproduces the official COCO CGP clusters exactly), then seeded k-means with restarts.

Self-loops: the diagonal of both affinities is 0. The paper prints P- = I − P+ and the official code
computes 1 − P+, both of which leave 1 on the diagonal of P-; the normalised Laplacian of scipy (used by
scikit-learn and so by the official code) ignores the diagonal, so the clusters are the same either way,
and a zero diagonal keeps the plot and the within-cluster means free of self-pairs.

Classes with no positive example or that never co-occur are isolated vertices of G+ (the normalised cut
tends to give them a CGP cluster of their own) and are joined to every class with weight 1 in G-; they
are named on stderr but never produce NaN. Clusters are listed by their smallest class index, class
indices ascending within a cluster.

Example:
    stats = cpsd_tf.stats.load("coco2014_train_label_stats.json")
    result = partition_labels(stats, k=5, tau=2.0)
    result["cgp"][0]  # class indices of the first CGP cluster

The graph and clustering math is in `cpsd_tf.clustering` (its names are re-exported here); this
module checks the arguments, runs the stage and reads and writes partition.json.
"""

import json
import math
import operator
from pathlib import Path

import click
import numpy as np

from cpsd_tf import io
from cpsd_tf.clustering import (  # noqa: F401 (re-exported: callers, tests and tools use cpsd_tf.partition.<name>)
    BALANCE_ITERATIONS,
    KMEANS_RESTARTS,
    STRATEGIES,
    _random,
    affinities,
    check_stats,
    get_strategy,
    similarity,
    size_bounds,
    spectral_clusters,
    spectral_embedding,
    stats_affinities,
    within_cluster_mean,
)
from cpsd_tf.errors import UserError

PARTITION_FILE = "partition.json"
PLOT_FILE = "partition.png"
STATS_FILE = "stats.json"  # optional, in the data folder: used instead of reading the shards

DEFAULT_K = 5  # paper §4.3 (Fig. 3, Table 3): k = 5
DEFAULT_TAU = 2.0  # official code (partition/generate_with_adj.py); the paper's text says 3
DEFAULT_STRATEGY = "spectral"
DEFAULT_SEED = 0


# === The partition ===


def _warn(message):
    click.echo(f"warning: {message}", err=True)


def _check_k_tau(k, tau, m):
    try:
        k = operator.index(k)
    except TypeError:
        raise UserError(f"k must be an integer, received {k!r}") from None
    if not 1 <= k <= m:
        raise UserError(f"k must be between 1 and the number of classes m = {m}, received {k}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise UserError(f"tau must be a number > 0, received {tau!r}")
    return k, float(tau)


def check_partition(clusters, m, k, name="partition"):
    """Check that `clusters` holds k non-empty lists covering 0..m-1 exactly once."""
    flat = [i for c in clusters for i in c]
    if len(clusters) != k or any(not c for c in clusters) or sorted(flat) != list(range(m)):
        raise UserError(f"{name}: expected {k} non-empty clusters covering classes 0..{m - 1} exactly once")


def partition_labels(stats, k=DEFAULT_K, tau=DEFAULT_TAU, strategy=DEFAULT_STRATEGY, seed=DEFAULT_SEED,
                     balanced=False, source="label statistics") -> dict:
    """CGP and DGP partitions of the classes of a label-statistics dict (the partition.json contract).

    Args:
        stats: dict with `classes`, `class_counts` n_i and `cooccurrence` e_ij (symmetric; diagonal ignored).
        k: int, clusters per strategy, 1 ≤ k ≤ m. Defaults to 5.
        tau: float > 0, smoothing exponent of S^(1/τ). Defaults to 2.0 (official code; the paper says 3).
        strategy: "spectral" (normalised cut, paper §3.2) or "random" (Fig. 3 baseline). Defaults to "spectral".
        seed: int, seed of k-means (or of the random partition). Defaults to 0.
        balanced: bool, keep every spectral cluster within `size_bounds(m, k)`. Defaults to False (paper).
        source: str, names the statistics in error messages.

    Returns:
        `{"classes", "k", "tau", "strategy", "seed", "balanced", "cgp", "dgp", "cluster_sizes",
        "within_cluster_cooccurrence"}`; the last is the mean P+ over within-cluster pairs of each strategy
        (and over all pairs, for reference).

    Example:
        >>> s = {"classes": ["a", "b", "c", "d"], "class_counts": [2, 2, 2, 2],
        ...      "cooccurrence": [[0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 2], [0, 0, 2, 0]]}
        >>> partition_labels(s, k=2)["cgp"]
        [[0, 1], [2, 3]]
    """
    classes, counts, cooc = check_stats(stats, source)
    m = len(classes)
    k, tau = _check_k_tau(k, tau, m)
    solve = get_strategy(strategy)
    _warn_isolated(classes, counts, cooc)
    p_plus, p_minus = affinities(counts, cooc, tau)
    info = {}
    # One BLAS/OpenMP thread: on a shared machine the threads' spin-waits made m = 1,000 take 24-42 s
    # instead of about 1 s, for identical clusters (eigh and k-means on m x k are small problems).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        cgp, dgp = solve(p_plus, p_minus, k, int(seed), bool(balanced), info)
    for name, clusters in (("cgp", cgp), ("dgp", dgp)):
        check_partition(clusters, m, k, f"internal error: {strategy} {name}")
    upper = np.triu_indices(m, 1)
    result = {
        "classes": list(classes),
        "k": k,
        "tau": tau,
        "strategy": strategy,
        "seed": int(seed),
        "balanced": bool(balanced),
        "cgp": cgp,
        "dgp": dgp,
        "cluster_sizes": {"cgp": [len(c) for c in cgp], "dgp": [len(c) for c in dgp]},
        "within_cluster_cooccurrence": {
            "cgp": within_cluster_mean(p_plus, cgp),
            "dgp": within_cluster_mean(p_plus, dgp),
            "all_pairs": float(p_plus[upper].mean()) if m > 1 else None,
        },
    }
    if balanced and strategy == "spectral":
        result["size_bounds"] = list(size_bounds(m, k))
    if "eigen_gap" in info:
        result["eigen_gap"] = info["eigen_gap"]
    if strategy == "spectral" and not balanced:
        _warn_single_class_clusters(result)
    return result


def _warn_single_class_clusters(result):
    """A teacher of one class is no sub-task: say so, with the eigen-gap that explains it."""
    for name in ("cgp", "dgp"):
        singles = [result["classes"][c[0]] for c in result[name] if len(c) == 1]
        if singles and result["k"] < len(result["classes"]):
            gap = result.get("eigen_gap", {}).get(name)
            gap_text = f"; eigen-gap {gap:.3g}" if gap is not None else ""
            _warn(f"{name.upper()} has {len(singles)} cluster(s) of one class ({', '.join(map(repr, singles))}"
                  f"{gap_text}): set partition.balanced=true (or --balanced) to keep every cluster within "
                  f"{list(size_bounds(len(result['classes']), result['k']))} classes")


def _warn_isolated(classes, counts, cooc):
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    lonely = [classes[i] for i in np.flatnonzero((counts > 0) & (cooc.sum(axis=1) == 0))]
    if empty:
        _warn(f"{len(empty)} class(es) without any positive example: {', '.join(map(repr, empty))} "
              f"(isolated in the co-occurrence graph; each still gets a cluster)")
    if lonely and len(classes) > 1:
        _warn(f"{len(lonely)} class(es) that never co-occur with another class: {', '.join(map(repr, lonely))} "
              f"(isolated in the co-occurrence graph)")


def load(path) -> dict:
    """Read and check a partition.json (the contract of DESIGN.md)."""
    result = io.read_json(path, "partition file (run `cpsd-tf partition` first)", ("classes", "k", "cgp", "dgp"))
    for name in ("cgp", "dgp"):
        check_partition(result[name], len(result["classes"]), result["k"], f"{path}: '{name}'")
    return result


# === Output ===


def describe(result) -> list:
    """Human-readable lines: the clusters of each strategy with class names and sizes."""
    classes = result["classes"]
    means = result["within_cluster_cooccurrence"]

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = []
    if result.get("strategy") == "random":
        # the random variant's teachers (random-0, …) take the first draw; the file keeps the cgp/dgp format
        shown = (("cgp", "random", "Random clusters"),)
    else:
        shown = (("cgp", "cgp", "CGP (co-occurrence)"), ("dgp", "dgp", "DGP (dis-occurrence)"))
    for key, name, title in shown:
        sizes = result["cluster_sizes"][key]
        lines.append(
            f"{title}: sizes {sizes}, mean within-cluster P+ {fmt(means[key])} (all pairs {fmt(means['all_pairs'])})"
        )
        for t, cluster in enumerate(result[key]):
            lines.append(f"  {name}-{t} ({len(cluster)}): {', '.join(classes[i] for i in cluster)}")
    return lines


def write(result, out, stats=None, plot=None):
    """Write partition.json atomically and, with `plot`, the PNG first (the JSON marks the stage done)."""
    if plot is not None:
        from cpsd_tf import partition_plot

        p_plus, p_minus = stats_affinities(stats, result["tau"])
        partition_plot.plot(plot, result, p_plus, p_minus)
    # One key per line, each value on one line: clusters stay readable (indent=2 puts every index on a line).
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in result.items()]
    io.write_text(out, "{\n" + ",\n".join(lines) + "\n}\n")


def recipe_stats(recipe):
    """The training-label statistics of a recipe's data: `<data.dir>/stats.json` if it describes the
    current train split, else computed from the split's records (a stale file is never used)."""
    from cpsd_tf import stats as stats_mod
    from cpsd_tf.data import prepare, records

    split = recipe.data.train_split
    data_dir = prepare.require(recipe, splits=[split])
    info = records.load_info(data_dir)
    path = data_dir / STATS_FILE
    if path.is_file():
        stats = stats_mod.load(path)
        if list(stats["classes"]) != list(info.classes):
            raise UserError(f"{path}: its classes differ from {data_dir / records.DATASET_JSON}; delete or recompute it")
        stale = (stats.get("split", split) != split
                 or stats.get("num_images", info.splits[split]) != info.splits[split])
        if not stale:
            return stats, str(path)
        click.echo(f"note: {path} describes another train split ({stats.get('split')}, {stats.get('num_images')} "
                   f"images); using the labels of '{split}' ({info.splits[split]} images) instead", err=True)
    return stats_mod.from_records(data_dir, split), f"{data_dir} ({split})"


def provenance_values(recipe):
    """The recipe values a run's partitions are made from."""
    from cpsd_tf import rundir

    return rundir.recipe_values(recipe, ["partition", "data.train_split"])


def is_done(recipe, run_dir) -> bool:
    from cpsd_tf import rundir

    needed = [rundir.partition_path(run_dir)]
    if "random" in rundir.trained_sets(recipe):
        needed.append(rundir.partition_path(run_dir, "random"))
    return all(p.is_file() for p in needed)


def run(recipe, run_dir, force=False) -> dict:
    """The partition stage: `<run_dir>/partition.json` and `partition.png` (plus `partition_random.json`
    when the recipe distils from a random partition), from the train split's labels."""
    from cpsd_tf import rundir
    from cpsd_tf.data import prepare

    run_dir = Path(run_dir)
    values = provenance_values(recipe)
    inputs = {"data": prepare.fingerprint(recipe.data.dir)}
    p = recipe.partition
    jobs = [("partition", rundir.partition_path(run_dir), p.strategy, run_dir / PLOT_FILE)]
    if "random" in rundir.trained_sets(recipe):
        jobs.append(("random partition", rundir.partition_path(run_dir, "random"), "random", None))
    result = None
    for what, path, strategy, plot in jobs:
        if path.is_file():
            agrees = rundir.check_provenance(path, values, inputs, what=f"the {what}", command="partition") \
                if not force else False
            if agrees or (not force and not rundir.read_provenance(path)):
                click.echo(f"[partition] {path} done already, skipped")
                result = result or load(path)
                continue
        stats, source = recipe_stats(recipe)
        out = partition_labels(stats, p.k, p.tau, strategy, p.seed, p.balanced, source=source)
        write(out, path, stats=stats, plot=plot)
        if plot is not None:  # the heat map in TensorBoard too: <run_dir>/tensorboard/, tag "partition"
            from cpsd_tf import tensorboard

            tensorboard.log_image(run_dir / tensorboard.LOG_DIR, tensorboard.PARTITION_TAG, plot)
        rundir.write_provenance(path, values, inputs)
        click.echo(f"{what.capitalize()} of {len(out['classes'])} classes from {source}: k={p.k}, tau={p.tau:g}, "
                   f"strategy={strategy}, seed={p.seed}, balanced={p.balanced}")
        for line in describe(out):
            click.echo(line)
        click.echo(f"Wrote {path}" + (f" and {plot}" if plot else ""))
        result = result or out
    return result
