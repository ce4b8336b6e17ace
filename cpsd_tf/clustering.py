"""The graph math of `cpsd-tf partition`: label statistics to the co-occurrence and dis-occurrence
affinities (P+, P-), their normalised-cut spectral clustering (optionally size-balanced), the partition
strategies and the within-cluster co-occurrence.

The formulas and conventions (self-loops, isolated classes, cluster order) are in the docstring of
`cpsd_tf.partition`, which runs the stage and writes partition.json; its callers may keep importing
these names from there.
"""

import math
import warnings

import numpy as np

from cpsd_tf.errors import UserError

KMEANS_RESTARTS = 20  # as the official code (SpectralClustering(n_init=20))
BALANCE_ITERATIONS = 100


# === Label statistics → affinities ===


def check_stats(stats, source="label statistics"):
    """Check a label-statistics dict; return (classes, n [m], e [m, m]) as float arrays.

    Every problem is a `UserError` naming `source`, the key and the offending value.
    """
    classes = stats.get("classes") if isinstance(stats, dict) else None
    if not isinstance(classes, list) or not classes:
        raise UserError(f"{source}: 'classes' must be a non-empty list of class names")
    m = len(classes)
    try:
        counts = np.asarray(stats["class_counts"], dtype=np.float64)
        cooc = np.asarray(stats["cooccurrence"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{source}: 'class_counts' and 'cooccurrence' must be numbers ({e})") from None
    if counts.shape != (m,):
        raise UserError(f"{source}: 'class_counts' has shape {list(counts.shape)} but there are {m} classes")
    if cooc.shape != (m, m):
        raise UserError(f"{source}: 'cooccurrence' must be a square {m}x{m} matrix ({m} classes), got shape {list(cooc.shape)}")
    for key, a in (("class_counts", counts), ("cooccurrence", cooc)):
        bad = np.argwhere(~np.isfinite(a) | (a < 0))
        if len(bad):
            at = "".join(f"[{i}]" for i in bad[0])
            raise UserError(f"{source}: '{key}' must hold non-negative numbers, {key}{at} = {a[tuple(bad[0])]}")
    asym = np.argwhere(cooc != cooc.T)
    if len(asym):
        i, j = asym[0]
        raise UserError(
            f"{source}: 'cooccurrence' must be symmetric, cooccurrence[{i}][{j}] = {cooc[i, j]:g} "
            f"but cooccurrence[{j}][{i}] = {cooc[j, i]:g}"
        )
    off = cooc.copy()
    np.fill_diagonal(off, 0)  # the diagonal is ignored (S_ii = 0)
    over = np.argwhere(off > counts[:, None])
    if len(over):
        i, j = over[0]
        raise UserError(
            f"{source}: cooccurrence[{i}][{j}] = {off[i, j]:g} exceeds class_counts[{i}] = {counts[i]:g} "
            f"(class '{classes[i]}')"
        )
    return classes, counts, off


def similarity(counts, cooc):
    """S_ij = e_ij / n_i with S_ii = 0; rows of classes without positives are 0 (no NaN)."""
    counts = np.asarray(counts, dtype=np.float64)
    s = np.divide(cooc, counts[:, None], out=np.zeros_like(cooc, dtype=np.float64), where=counts[:, None] > 0)
    np.fill_diagonal(s, 0)
    return s


def affinities(counts, cooc, tau):
    """The CGP and DGP affinities (P+, P-), both symmetric with a zero diagonal (see the doc of `cpsd_tf.partition`)."""
    r = similarity(counts, cooc) ** (1.0 / tau)
    p_plus = (r + r.T) / 2
    p_minus = 1.0 - p_plus
    np.fill_diagonal(p_minus, 0)
    return p_plus, p_minus


def stats_affinities(stats, tau, source="label statistics"):
    """(P+, P-) of a label-statistics dict."""
    _, counts, cooc = check_stats(stats, source)
    return affinities(counts, cooc, tau)


# === Normalised cut ===


def spectral_embedding(affinity, k, info=None):
    """Rows: the m vertices embedded by the k smallest eigenvectors of the normalised Laplacian, × D^-½.

    With a dict `info`, also stores there "eigen_gap": λ_{k+1} − λ_k of the Laplacian (None when k = m),
    how clearly the graph holds k groups: near 0, the k-th cluster is an arbitrary cut.
    """
    import scipy.linalg
    from scipy.sparse import csgraph

    a = np.array(affinity, dtype=np.float64)
    np.fill_diagonal(a, 0)
    # normed=True: I − D^-½ A D^-½; an isolated vertex gets a zero row and dd = 1 (no division by 0).
    lap, dd = csgraph.laplacian(a, normed=True, return_diag=True)
    lap = (lap + lap.T) / 2  # exact symmetry (scipy divides by d_i and d_j in a different order)
    last = min(k, len(a) - 1)  # one eigenvalue more than needed, for the gap
    vals, vecs = scipy.linalg.eigh(lap, subset_by_index=[0, last])
    if info is not None:
        info["eigen_gap"] = float(vals[k] - vals[k - 1]) if last == k else None
    emb = vecs[:, :k] / dd[:, None]
    # Deterministic signs (k-means does not care, but the embedding is then reproducible to inspect).
    flip = np.sign(emb[np.argmax(np.abs(emb), axis=0), np.arange(k)])
    return emb * np.where(flip == 0, 1, flip)


def _fill_empty(x, labels, k):
    """Give every empty cluster the point farthest from the centre of the largest cluster.

    k-means leaves clusters empty when the embedding has fewer than k distinct rows (e.g. many classes
    that never co-occur); a sub-task with no class would be meaningless.
    """
    labels = labels.copy()
    for c in range(k):
        if np.any(labels == c):
            continue
        sizes = np.bincount(labels, minlength=k)
        big = int(np.argmax(sizes))
        members = np.flatnonzero(labels == big)
        d = ((x[members] - x[members].mean(axis=0)) ** 2).sum(axis=1)
        labels[members[int(np.argmax(d))]] = c
    return labels


def size_bounds(m, k):
    """Cluster-size bounds of `balanced=True`: from half to 1.5 times the mean size m/k, rounded up.

    Always feasible for 1 ≤ k ≤ m. COCO, k = 5: [8, 24]. Loose enough to keep the natural CGP groups
    (COCO within-cluster P+ 0.236 vs 0.237 unbalanced; exactly equal sizes give 0.213), tight enough to
    rule out one-class clusters.
    """
    return math.ceil(m / (2 * k)), math.ceil(1.5 * m / k)


def _constrained_assign(x, centres, min_size, max_size):
    """Min-cost assignment of the rows of x to centres with min_size ≤ cluster size ≤ max_size.

    `linear_sum_assignment` on a cost matrix with max_size columns (slots) per centre; the first min_size
    slots of each centre carry a bonus larger than any possible saving in distance, so an optimal
    assignment fills all of them.
    """
    from scipy.optimize import linear_sum_assignment

    m, k = len(x), len(centres)
    d2 = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
    bonus = m * d2.max() + 1.0
    slot_owner = np.repeat(np.arange(k), max_size)
    mandatory = np.tile(np.arange(max_size) < min_size, k)
    cost = d2[:, slot_owner] - bonus * mandatory
    rows, cols = linear_sum_assignment(cost)
    labels = np.empty(m, dtype=np.int64)
    labels[rows] = slot_owner[cols]
    return labels


def _balanced_kmeans(x, centres, min_size, max_size):
    """Size-constrained k-means (Bradley et al. 2000) started from the unconstrained centres."""
    labels = None
    for _ in range(BALANCE_ITERATIONS):
        new = _constrained_assign(x, centres, min_size, max_size)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centres = np.stack([x[labels == c].mean(axis=0) for c in range(len(centres))])
    return labels


def _to_clusters(labels, k):
    clusters = [sorted(int(i) for i in np.flatnonzero(labels == c)) for c in range(k)]
    return sorted(clusters, key=lambda c: c[0])


def spectral_clusters(affinity, k, seed=0, balanced=False, info=None):
    """Normalised-cut clusters of a graph: a list of k non-empty, sorted lists of vertex indices.

    With a dict `info`, the eigen-gap of the cut is stored there (see `spectral_embedding`).
    """
    m = len(affinity)
    if k == 1 or k == m:
        return [list(range(m))] if k == 1 else [[i] for i in range(m)]
    from sklearn.cluster import KMeans

    from sklearn.exceptions import ConvergenceWarning

    x = spectral_embedding(affinity, k, info)
    with warnings.catch_warnings():
        # "fewer distinct clusters than n_clusters": handled by _fill_empty below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed).fit(x)
    labels = _fill_empty(x, km.labels_, k)
    if balanced:
        labels = _balanced_kmeans(x, km.cluster_centers_, *size_bounds(m, k))
    return _to_clusters(labels, k)


# === Strategies ===


def _spectral(p_plus, p_minus, k, seed, balanced, info):
    gaps = {"cgp": {}, "dgp": {}}
    cgp = spectral_clusters(p_plus, k, seed, balanced, gaps["cgp"])
    dgp = spectral_clusters(p_minus, k, seed, balanced, gaps["dgp"])
    info["eigen_gap"] = {name: g.get("eigen_gap") for name, g in gaps.items()}
    return cgp, dgp


def _random(p_plus, p_minus, k, seed, balanced, info):
    """Two independent random partitions (CGP first, then DGP, from one generator) with sizes ⌊m/k⌋ or ⌈m/k⌉.

    The random baseline of the paper's Fig. 3; two of them so a random-CPSD run has 2k teachers like the
    real one. Always balanced (the official script cut at random points; equal sizes remove that noise).
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(len(p_plus)) % k  # sizes ⌊m/k⌋ or ⌈m/k⌉, then shuffled
    return _to_clusters(rng.permutation(labels), k), _to_clusters(rng.permutation(labels), k)


STRATEGIES = {"spectral": _spectral, "random": _random}


def get_strategy(name):
    """The partition strategy called `name`; an unknown name is a `UserError` listing the choices."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise UserError(
            f"unknown partition strategy {name!r}; choose one of: {', '.join(STRATEGIES)}"
        ) from None


# === Within-cluster co-occurrence ===


def within_cluster_mean(p_plus, clusters):
    """Mean P+ over the unordered pairs of classes sharing a cluster (None when no cluster has a pair)."""
    values = [p_plus[i, j] for c in clusters for a, i in enumerate(c) for j in c[a + 1 :]]
    return float(np.mean(values)) if values else None
