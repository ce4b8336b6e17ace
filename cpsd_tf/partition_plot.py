"""`partition.png`: the CGP affinity P+ and the DGP affinity P- as heat maps, rows and columns ordered by
cluster, cluster borders drawn, class names on the axes (m ≤ 100) and cluster sizes in the titles.

Uses matplotlib's object API with the Agg canvas, so no global backend is switched.
"""

import numpy as np

from cpsd_tf import io

MAX_NAMED_CLASSES = 100


def _panel(fig, ax, affinity, clusters, classes, title):
    order = [i for c in clusters for i in c]
    image = ax.imshow(affinity[np.ix_(order, order)], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    m = len(order)
    for edge in np.cumsum([len(c) for c in clusters])[:-1]:
        ax.axhline(edge - 0.5, color="red", linewidth=0.8)
        ax.axvline(edge - 0.5, color="red", linewidth=0.8)
    if m <= MAX_NAMED_CLASSES:
        size = max(3.0, min(8.0, 420.0 / m))
        names = [classes[i] for i in order]
        ax.set_xticks(range(m), names, rotation=90, fontsize=size)
        ax.set_yticks(range(m), names, fontsize=size)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def plot(path, result, p_plus, p_minus, dpi=150):
    """Write the PNG of a partition result (see `partition.partition_labels`) atomically to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    sizes = result["cluster_sizes"]
    means = result["within_cluster_cooccurrence"]
    for ax, name, affinity, label in (
        (axes[0], "cgp", p_plus, "CGP: P+ (co-occurrence)"),
        (axes[1], "dgp", p_minus, "DGP: P- = 1 - P+ (dis-occurrence)"),
    ):
        mean = "n/a" if means[name] is None else f"{means[name]:.3f}"
        title = f"{label}, clusters of sizes {sizes[name]}\nmean within-cluster P+ {mean}"
        _panel(fig, ax, affinity, result[name], result["classes"], title)
    balanced = ", balanced" if result.get("balanced") else ""
    fig.suptitle(
        f"{result['strategy']} partition of {len(result['classes'])} classes: k={result['k']}, "
        f"tau={result['tau']:g}, seed={result['seed']}{balanced}"
    )
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
