"""The images of the scenes benchmark: its classes, scenes and splits (random streams, glyph pools), the
objects each image holds (`sample_objects`) and their pixels (glyphs, textured backgrounds, occluders).

`cpsd_tf.data.scenes` holds the knobs (`ScenesConfig`) and writes the splits (`generate`); its docstring
describes the benchmark, and it re-exports these names. No TensorFlow import at top level.
"""

import io as _io
from functools import lru_cache

import numpy as np


COLOURS = {
    # Saturated, well separated hues: colour is meant to be easy, the digit (often occluded) hard.
    "red": (0.90, 0.12, 0.10),
    "green": (0.10, 0.72, 0.18),
    "blue": (0.15, 0.30, 0.95),
}
CLASSES = [f"{colour}-{digit}" for colour in COLOURS for digit in range(10)]

# Fixed so the benchmark does not change with the seed or the NumPy version. Chosen (a seeded permutation,
# kept when every scene had 5 distinct digits and all 3 colours) so that look-alike classes (same colour,
# similar digit) mostly sit in different scenes: context can then decide what pixels cannot.
SCENES = [
    ["green-0", "blue-4", "green-5", "red-7", "blue-8"],
    ["blue-0", "blue-1", "green-2", "blue-3", "red-9"],
    ["green-1", "red-2", "blue-6", "green-7", "red-8"],
    ["red-1", "red-3", "green-6", "blue-7", "green-9"],
    ["blue-2", "green-4", "red-5", "red-6", "green-8"],
    ["red-0", "green-3", "red-4", "blue-5", "blue-9"],
]
SCENE_SIZE = 5

# split name -> (random-stream id, glyph pool, drawn in context?)
SPLITS = {
    "train": (0, "train", True),
    "val": (1, "train", True),
    "test": (2, "test", True),
    "test_ood": (3, "test", False),
}
# single-object split name -> (random-stream id, glyph pool); written only when `ScenesConfig.single` > 0.
SINGLE_SPLITS = {
    "single": (4, "train"),
    "single_val": (5, "train"),
}
_STREAM_IDS = {**{s: v[0] for s, v in SPLITS.items()}, **{s: v[0] for s, v in SINGLE_SPLITS.items()}}
_GLYPH_POOLS = {**{s: v[1] for s, v in SPLITS.items()}, **{s: v[1] for s, v in SINGLE_SPLITS.items()}}
# The first 70% of load_digits' rows (in file order) form the train glyph pool, the rest the test pool.
# The file is written writer after writer, so a contiguous cut also keeps most writers apart; every digit
# keeps >= 52 test glyphs.
TRAIN_GLYPH_FRACTION = 0.7
_CHUNK = 256  # images whose backgrounds are drawn in one vectorised step


# === Glyphs ===


@lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def glyph_pools() -> dict:
    """Return {"train": row indices, "test": row indices} into `load_digits()`: disjoint, all rows used."""
    n = len(_digits()[1])
    cut = int(round(TRAIN_GLYPH_FRACTION * n))
    return {"train": np.arange(cut), "test": np.arange(cut, n)}


def _pool_by_digit(pool: str) -> list:
    _, target = _digits()
    rows = glyph_pools()[pool]
    return [rows[target[rows] == d] for d in range(10)]


@lru_cache(maxsize=64)
def _resize_matrix(size: int, src: int = 8) -> np.ndarray:
    """[size, src] bilinear interpolation matrix (pixel centres aligned, edges clamped)."""
    x = (np.arange(size) + 0.5) * src / size - 0.5
    x = np.clip(x, 0, src - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = (x - lo).astype(np.float32)
    m = np.zeros((size, src), np.float32)
    m[np.arange(size), lo] += 1 - w
    m[np.arange(size), hi] += w
    return m


# === Labels ===


def scene_class_indices() -> np.ndarray:
    """[6, 5] class indices of `SCENES`."""
    index = {c: i for i, c in enumerate(CLASSES)}
    return np.array([[index[c] for c in scene] for scene in SCENES], np.int64)


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM_IDS[split], stream])


def _check_split(split: str):
    if split not in _STREAM_IDS:
        raise ValueError(f"unknown split '{split}'; splits are {list(_STREAM_IDS)}")


def sample_objects(config, split: str, seed: int = 0, n: int | None = None):
    """Draw the object classes of every image of a split, without rendering.

    Args:
        config.
        split: str, one of "train", "val", "test", "test_ood", "single", "single_val".
        seed: int, the data seed. Defaults to 0.
        n: int or None, number of images. Defaults to the split's size in `config`.

    Returns:
        (objects, scene): a list of int arrays (class index of each object, no repeats within an image)
        and an int array [n] with the scene an image was drawn from, -1 for an independent draw. The
        first k images of a split are the same for any n >= k. A single-object split has one object
        per image, its class drawn uniformly from all classes, and scene -1.

    Example:
        >>> objects, scene = sample_objects(ScenesConfig(), "test_ood", n=3)
        >>> bool((scene == -1).all())
        True
    """
    _check_split(split)
    n = config.split_size(split) if n is None else int(n)
    rng = _rng(seed, split, 0)
    m = len(CLASSES)
    if split in SINGLE_SPLITS:
        cls = np.minimum((rng.random(n) * m).astype(np.int64), m - 1)
        return [cls[i : i + 1] for i in range(n)], np.full(n, -1, np.int64)
    scenes = scene_class_indices()
    # One row of uniforms per image, so an image's labels do not depend on how many images follow it.
    u = rng.random((n, 3 + SCENE_SIZE + m))
    span = config.objects_max - config.objects_min + 1
    count = config.objects_min + np.minimum((u[:, 0] * span).astype(np.int64), span - 1)
    in_ctx = u[:, 1] < (config.p_ctx if SPLITS[split][2] else -1.0)
    scene = np.minimum((u[:, 2] * len(scenes)).astype(np.int64), len(scenes) - 1)
    ctx_order = np.argsort(u[:, 3 : 3 + SCENE_SIZE], axis=1)
    free_order = np.argsort(u[:, 3 + SCENE_SIZE :], axis=1)
    objects = []
    for i in range(n):
        if in_ctx[i]:
            objects.append(scenes[scene[i], ctx_order[i, : count[i]]])
        else:
            objects.append(free_order[i, : count[i]].astype(np.int64))
    return objects, np.where(in_ctx, scene, -1)


def multi_hot(objects, num_classes: int = len(CLASSES)) -> np.ndarray:
    """[n, m] uint8 label matrix of per-image object class lists."""
    y = np.zeros((len(objects), num_classes), np.uint8)
    for i, obj in enumerate(objects):
        y[i, obj] = 1
    return y


# === Rendering ===


def _backgrounds(rng, n: int, size: int) -> np.ndarray:
    """[n, size, size, 3] float32 textured backgrounds: a smooth colour field, a faint grating, grain."""
    grid = 5
    base = rng.uniform(0.35, 0.65, size=(n, 1, 1, 1))
    field = rng.uniform(-0.12, 0.12, size=(n, grid, grid, 3))
    r = _resize_matrix(size, grid)
    smooth = np.einsum("ya,nabc,xb->nyxc", r, field, r, optimize=True)
    theta = rng.uniform(0, np.pi, size=(n, 1, 1))
    freq = rng.uniform(2.0, 6.0, size=(n, 1, 1)) / size
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    amp = rng.uniform(0.02, 0.07, size=(n, 1, 1, 1))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    grating = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)[..., None]
    grain = rng.normal(0.0, 0.025, size=(n, size, size, 3))
    return (base + smooth + amp * grating + grain).astype(np.float32)


def _place(rng, size: int, side: int, boxes: list, tries: int = 12):
    """Pick a top-left corner for a `side` square, avoiding heavy overlap with `boxes` when possible."""
    best, best_overlap = None, None
    for _ in range(tries):
        y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        overlap = 0.0
        for by, bx, bs in boxes:
            iy = max(0, min(y + side, by + bs) - max(y, by))
            ix = max(0, min(x + side, bx + bs) - max(x, bx))
            overlap = max(overlap, iy * ix / min(side, bs) ** 2)
        if best is None or overlap < best_overlap:
            best, best_overlap = (y, x), overlap
        if overlap <= 0.15:
            break
    return best


def _render_one(rng, canvas: np.ndarray, objects, pool_by_digit, config) -> list:
    """Draw the objects, then the occluders, onto `canvas` [S, S, 3] in place; return the objects' boxes."""
    size = config.image_size
    glyphs, _ = _digits()
    g_lo = max(4, round(config.glyph_scale_min * size))
    g_hi = max(g_lo, round(config.glyph_scale_max * size))
    boxes = []
    for cls in objects:
        colour_name, digit = CLASSES[cls].split("-")
        rows = pool_by_digit[int(digit)]
        glyph = glyphs[rows[rng.integers(len(rows))]]
        side = int(rng.integers(g_lo, g_hi + 1))
        r = _resize_matrix(side)
        alpha = np.clip(1.25 * (r @ glyph @ r.T), 0.0, 1.0)[..., None]
        colour = np.clip(np.array(COLOURS[colour_name], np.float32) + rng.uniform(-0.08, 0.08, 3), 0, 1)
        y, x = _place(rng, size, side, boxes)
        region = canvas[y : y + side, x : x + side]
        region *= 1.0 - alpha
        region += alpha * colour.astype(np.float32)
        boxes.append((y, x, side))
    o_lo = max(1, round(config.occluder_scale_min * size))
    o_hi = max(o_lo, round(config.occluder_scale_max * size))
    n_occ = int(rng.integers(config.occluders_min, config.occluders_max + 1))
    for _ in range(n_occ):
        # Centred inside a random object's box, so the patch hides part of a digit rather than background.
        by, bx, bs = boxes[int(rng.integers(len(boxes)))]
        h, w = (int(v) for v in rng.integers(o_lo, o_hi + 1, size=2))
        # Never wider or taller than 3/4 of the digit: one patch hides part of it, not all of it.
        cap = max(1, int(0.75 * bs))
        h, w = min(h, cap), min(w, cap)
        cy = by + bs * rng.uniform(0.2, 0.8)
        cx = bx + bs * rng.uniform(0.2, 0.8)
        y0, x0 = max(0, int(round(cy - h / 2))), max(0, int(round(cx - w / 2)))
        canvas[y0 : y0 + h, x0 : x0 + w] = np.float32(rng.uniform(0.3, 0.7))
    return boxes


def _encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _render_chunks(config, split: str, seed: int, objects):
    """Yield (start, pixels uint8 [c, S, S, 3], boxes) for consecutive chunks of a split's images."""
    _check_split(split)
    if split in SINGLE_SPLITS:  # one glyph, nothing hiding it
        config = config.model_copy(update={"occluders_min": 0, "occluders_max": 0})
    rng = _rng(seed, split, 1)
    pool_by_digit = _pool_by_digit(_GLYPH_POOLS[split])
    size = config.image_size
    for start in range(0, len(objects), _CHUNK):
        chunk = objects[start : start + _CHUNK]
        canvases = _backgrounds(rng, len(chunk), size)
        boxes = [_render_one(rng, canvases[j], obj, pool_by_digit, config) for j, obj in enumerate(chunk)]
        yield start, (np.clip(canvases, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), boxes


def render_split(config, split: str, seed: int = 0, objects=None, where=None):
    """Yield (png_bytes, image_id, labels) for every image of a split, in order.

    `where`, a list, receives per image its objects' rows (class, top, left, bottom, right), coordinates
    as fractions of the side (the objects file, `cpsd_tf.data.objects`).
    """
    if objects is None:
        objects, _ = sample_objects(config, split, seed)
    size = float(config.image_size)
    for start, pixels, boxes in _render_chunks(config, split, seed, objects):
        for j in range(len(pixels)):
            obj = objects[start + j]
            if where is not None:
                where.append([(int(c), y / size, x / size, (y + side) / size, (x + side) / size)
                              for c, (y, x, side) in zip(obj, boxes[j])])
            yield _encode_png(pixels[j]), f"scenes-{split}-{start + j:06d}", sorted(int(c) for c in obj)


def split_pixels(config, split: str, seed: int = 0):
    """The images of a whole split as `generate` writes them, with where each object is.

    Args:
        config.
        split: str, a split name (see `sample_objects`).
        seed: int, the data seed. Defaults to 0.

    Returns:
        (pixels uint8 [n, S, S, 3], objects, boxes): objects[i] the class indices of image i in drawing
        order, boxes[i][j] = (top, left, side) of objects[i][j]. The PNG records of the split decode to
        exactly these pixels.

    Example:
        pixels, objects, boxes = split_pixels(ScenesConfig(single=64, image_size=32), "single")
    """
    objects, _ = sample_objects(config, split, seed)
    size = config.image_size
    pixels, boxes = np.zeros((len(objects), size, size, 3), np.uint8), []
    for start, chunk, chunk_boxes in _render_chunks(config, split, seed, objects):
        pixels[start : start + len(chunk)] = chunk
        boxes.extend(chunk_boxes)
    return pixels, objects, boxes


def render_with_boxes(config, objects, split: str = "test", seed: int = 0):
    """Render images of given objects and return where each object is (for explanation checks).

    Args:
        config: a `ScenesConfig` (image size, glyph sizes, occluders).
        objects: list of lists of class indices, one list per image.
        split: str, whose glyph pool is drawn from. Defaults to "test".
        seed: int. Defaults to 0.

    Returns:
        (pixels uint8 [n, S, S, 3], boxes): boxes[i][j] = (top, left, side) of objects[i][j].

    Example:
        pixels, boxes = render_with_boxes(ScenesConfig(image_size=32), [[0, 17]])
    """
    _check_split(split)
    rng = np.random.default_rng([int(seed), _STREAM_IDS[split], 7])
    pool_by_digit = _pool_by_digit(_GLYPH_POOLS[split])
    canvases = _backgrounds(rng, len(objects), config.image_size)
    boxes = [_render_one(rng, canvases[j], obj, pool_by_digit, config) for j, obj in enumerate(objects)]
    return (np.clip(canvases, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), boxes
