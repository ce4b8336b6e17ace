"""Augmentation ops and their config: each op eagerly and inside `Dataset.map`, references from PIL/NumPy."""

import subprocess
import sys

import numpy as np
import pydantic
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from cpsd_tf.data import augment as A
from cpsd_tf.data.augment_config import RANDAUGMENT_OPS, AugmentConfig

H, W = 20, 24  # not square, to catch height/width mix-ups


def run_both(fn, *args):
    """`fn(*args)` eagerly and inside `Dataset.map`, as NumPy arrays."""
    eager = fn(*[tf.convert_to_tensor(a) for a in args])
    mapped = next(iter(tf.data.Dataset.from_tensors(tuple(args)).map(lambda *a: fn(*a))))
    return np.asarray(eager), np.asarray(mapped)


def run_seeds(fn, x, seeds):
    """`fn(x, seed)` for each seed, eagerly and inside one `Dataset.map`: two arrays [len(seeds), ...]."""
    seeds = np.asarray(seeds, np.int64)
    eager = np.stack([np.asarray(fn(tf.constant(x), tf.constant(s))) for s in seeds])
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: fn(tf.constant(x), s))
    return eager, np.stack([np.asarray(o) for o in ds])


def random_image(seed=0, h=H, w=W):
    """float32 [h, w, 3] on the 8-bit lattice (k / 255), like a decoded image."""
    return (np.random.default_rng(seed).integers(0, 256, (h, w, 3)) / 255.0).astype(np.float32)


def to_pil(x):
    return Image.fromarray(np.round(x * 255).astype(np.uint8))


def from_pil(im):
    return np.asarray(im, np.float32) / 255.0


# --- config ------------------------------------------------------------------------------------------


def test_importing_the_config_does_not_import_tensorflow():
    code = "import sys, cpsd_tf.data.augment_config; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_defaults_and_nested_dicts():
    cfg = AugmentConfig()
    assert cfg.flip and cfg.translate == 0 and cfg.randaugment is None and cfg.cutout is None
    cfg = AugmentConfig.model_validate({"flip": False, "randaugment": {}, "cutout": {"probability": 0.5}})
    assert cfg.randaugment.num_ops == 2 and cfg.randaugment.ops == RANDAUGMENT_OPS
    assert cfg.cutout.probability == 0.5 and cfg.cutout.size == 0.5
    assert AugmentConfig(flip=False).is_identity and not cfg.is_identity
    with pytest.raises(pydantic.ValidationError):
        cfg.flip = True  # frozen


@pytest.mark.parametrize(
    "tree, needle",
    [
        ({"flipp": True}, "flipp"),
        ({"randaugment": {"num_op": 2}}, "num_op"),
        ({"cutout": {"prob": 0.5}}, "prob"),
        ({"crop": {"scale": [0.5, 1.0], "area": 1}}, "area"),
        ({"randaugment": {"ops": ["rotate", "wobble"]}}, "wobble"),
        ({"randaugment": {"magnitude": 11}}, "magnitude"),
        ({"cutout": {"probability": 1.5}}, "probability"),
        ({"cutout": {"fill": "blue"}}, "fill"),
        ({"translate": 0.7}, "translate"),
        ({"crop": {"scale": [0.9, 0.5]}}, "scale"),
    ],
)
def test_config_rejects_unknown_keys_and_bad_values(tree, needle):
    with pytest.raises(pydantic.ValidationError, match=needle):
        AugmentConfig.model_validate(tree)


# --- every RandAugment op ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", RANDAUGMENT_OPS)
def test_op_keeps_shape_dtype_range_eager_and_in_map(name):
    x = random_image(1)
    both_signs = lambda im: tf.stack([A.apply_op(im, name, 9.0, 1.0), A.apply_op(im, name, 9.0, -1.0)])  # noqa: E731
    eager, mapped = run_both(both_signs, x)
    for out in (eager, mapped):
        assert out.shape == (2, H, W, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(eager, mapped, atol=1e-6)


def test_apply_op_unknown_name():
    with pytest.raises(ValueError, match="wobble"):
        A.apply_op(tf.zeros([4, 4, 3]), "wobble", 5)


@pytest.mark.parametrize("name", ["identity", "rotate", "solarize", "color", "contrast", "brightness",
                                  "sharpness", "shear_x", "shear_y", "translate_x", "translate_y", "posterize"])
def test_magnitude_zero_is_identity(name):
    x = random_image(2)
    np.testing.assert_allclose(A.apply_op(tf.constant(x), name, 0.0), x, atol=1e-5)


# --- references --------------------------------------------------------------------------------------


def test_equalize_matches_pil():
    x = random_image(3)
    x[..., 2] = np.floor(x[..., 2] * 255 * 0.3) / 255  # a channel with a narrow histogram
    x[..., 1] = 0.5  # a constant channel: PIL leaves it unchanged
    eager, mapped = run_both(A.equalize, x)
    ref = from_pil(ImageOps.equalize(to_pil(x)))
    np.testing.assert_allclose(eager, ref, atol=1e-6)
    np.testing.assert_allclose(mapped, ref, atol=1e-6)


def test_autocontrast_matches_pil():
    x = 0.2 + 0.5 * random_image(4)
    x[..., 1] = 0.25  # constant channel stays as is
    x = np.round(x * 255) / 255
    eager, mapped = run_both(A.autocontrast, x.astype(np.float32))
    ref = from_pil(ImageOps.autocontrast(to_pil(x)))
    np.testing.assert_allclose(eager, ref, atol=1.01 / 255)
    np.testing.assert_allclose(mapped, ref, atol=1.01 / 255)


@pytest.mark.parametrize(
    "fn, enhancer, tol",
    [
        (A.adjust_color, ImageEnhance.Color, 2.01),
        (A.adjust_contrast, ImageEnhance.Contrast, 2.01),
        (A.adjust_brightness, ImageEnhance.Brightness, 1.01),
        (A.sharpness, ImageEnhance.Sharpness, 2.01),  # PIL rounds its smoothed image
    ],
)
@pytest.mark.parametrize("factor", [0.3, 1.7])
def test_enhance_ops_match_pil(fn, enhancer, tol, factor):
    x = random_image(5)
    eager, mapped = run_both(lambda im: fn(im, factor), x)
    ref = from_pil(enhancer(to_pil(x)).enhance(factor))
    np.testing.assert_allclose(eager, ref, atol=tol / 255)
    np.testing.assert_allclose(mapped, ref, atol=tol / 255)


def test_solarize_and_posterize_match_numpy():
    x = random_image(6)
    q = np.round(x * 255).astype(np.uint8)
    np.testing.assert_allclose(A.solarize(tf.constant(x), 128 / 255), np.where(q >= 128, 255 - q, q) / 255, atol=1e-6)
    np.testing.assert_allclose(A.posterize(tf.constant(x), 3), (q & 0b11100000) / 255, atol=1e-6)
    ref = from_pil(ImageOps.posterize(to_pil(x), 5))
    np.testing.assert_allclose(A.posterize(tf.constant(x), 5), ref, atol=1e-6)


def test_rotate_90_is_rot90_and_shift_is_exact():
    x = random_image(7, 16, 16)
    # +90 degrees counter-clockwise, about the centre, on a square image: a pure permutation of pixels.
    np.testing.assert_allclose(A.rotate(tf.constant(x), 90.0), np.rot90(x, 1), atol=1e-5)
    out = A.translate_xy(tf.constant(x), 3, -2).numpy()
    np.testing.assert_allclose(out[:-2, 3:], x[2:, :-3])
    assert np.all(out[-2:] == A.GEOMETRIC_FILL) and np.all(out[:, :3] == A.GEOMETRIC_FILL)
    np.testing.assert_allclose(A.shear_x(tf.constant(x), 0.0), x, atol=1e-6)


def test_shift_clamps_large_shifts():
    x = random_image(8)
    assert np.all(A.shift(tf.constant(x), 100, -100).numpy() == A.GEOMETRIC_FILL)
    out = A.shift(tf.constant(x), 100, 0, mode="SYMMETRIC").numpy()  # clamped to half the height
    assert out.shape == x.shape
    np.testing.assert_allclose(out[H // 2:], x[: H - H // 2])


# --- random ops --------------------------------------------------------------------------------------


def test_randaugment_is_stateless_and_same_in_map():
    x = random_image(9)
    seed = np.array([3, 4], np.int64)
    eager, mapped = run_both(lambda im, s: A.randaugment(im, s, num_ops=2, magnitude=9), x, seed)
    np.testing.assert_allclose(eager, mapped, atol=1e-6)
    again = A.randaugment(tf.constant(x), tf.constant(seed), num_ops=2, magnitude=9)
    np.testing.assert_array_equal(eager, again)
    outs = [A.randaugment(tf.constant(x), tf.constant([s, 0]), num_ops=2, magnitude=9).numpy() for s in range(8)]
    assert len({o.tobytes() for o in outs}) > 3  # different seeds, different ops


def test_randaugment_restricted_ops():
    x = random_image(10)
    out = A.randaugment(tf.constant(x), tf.constant([1, 2]), num_ops=3, magnitude=9, ops=("identity",))
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("fill, value", [("zero", 0.0), ("gray", 0.5)])
def test_cutout_always_erases_with_probability_one(fill, value):
    x = np.ones((16, 16, 3), np.float32) * 0.9
    fn = lambda im, sd: A.cutout(im, sd, probability=1.0, size=0.5, fill=fill)  # noqa: E731
    eager, mapped = run_seeds(fn, x, [[s, 1] for s in range(10)])
    np.testing.assert_array_equal(eager, mapped)
    assert eager.shape == (10, 16, 16, 3) and eager.dtype == np.float32
    for out in eager:
        erased = np.all(out == value, axis=-1)
        assert 16 <= erased.sum() <= 64  # an 8x8 square, clipped at the border to at least 4x4
        rows, cols = np.nonzero(erased)
        assert erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
        assert np.all(out[~erased] == x[~erased])


def test_cutout_never_erases_with_probability_zero_and_random_fill():
    x = random_image(11, 16, 16)
    eager, mapped = run_seeds(lambda im, sd: A.cutout(im, sd, probability=0.0), x, [[s, 2] for s in range(10)])
    np.testing.assert_array_equal(eager, np.broadcast_to(x, eager.shape))
    np.testing.assert_array_equal(mapped, eager)
    out = A.cutout(tf.constant(x), tf.constant([0, 3]), probability=1.0, size=0.25, fill="random").numpy()
    changed = np.any(out != x, axis=-1)
    assert changed.any() and out.min() >= 0 and out.max() <= 1
    colors = np.unique(out[changed], axis=0)
    assert len(colors) == 1  # one colour per image


def test_flip_and_translate():
    x = random_image(12)
    flips = [A.random_flip(tf.constant(x), tf.constant([s, 0])).numpy() for s in range(12)]
    assert any(np.array_equal(f, x) for f in flips) and any(np.array_equal(f, x[:, ::-1]) for f in flips)
    eager, mapped = run_both(lambda im, s: A.random_translate(im, s, 0.25), x, np.array([5, 6]))
    np.testing.assert_array_equal(eager, mapped)
    assert eager.shape == x.shape
    assert set(np.unique(eager)) <= set(np.unique(x))  # mirror padding only repeats image pixels
    np.testing.assert_array_equal(A.random_translate(tf.constant(x), tf.constant([1, 1]), 0.0), x)


def test_crop_window_within_image_and_area_range():
    crop = A.CropConfig(scale=(0.25, 0.5), ratio=(0.75, 1.33))
    for s in range(5):
        begin, size = A.crop_window(tf.constant([64, 80, 3]), tf.constant([s, 9]), crop)
        begin, size = begin.numpy(), size.numpy()
        assert np.all(begin >= 0) and begin[0] + size[0] <= 64 and begin[1] + size[1] <= 80 and size[2] in (3, -1)
        assert 0.2 <= size[0] * size[1] / (64 * 80) <= 0.55


def test_augment_image_full_config_eager_and_in_map():
    cfg = AugmentConfig(flip=True, translate=0.1, randaugment={"num_ops": 2, "magnitude": 9}, cutout={})
    x = random_image(13)
    eager, mapped = run_both(lambda im, s: A.augment_image(im, s, cfg), x, np.array([7, 8], np.int64))
    np.testing.assert_allclose(eager, mapped, atol=1e-6)
    assert eager.shape == x.shape and eager.dtype == np.float32 and 0 <= eager.min() and eager.max() <= 1
    np.testing.assert_array_equal(A.augment_image(tf.constant(x), tf.constant([1, 2]), AugmentConfig(flip=False)), x)


# --- the fast implementations against straightforward references ------------------------------------
# (row-broadcast channel maths, one histogram + gather for equalize, crop_and_resize shears, the folded
# sharpness kernel; see the speed notes in augment.py)


def np_equalize(x):
    """PIL's `ImageOps.equalize` algorithm, written out per channel on the 8-bit levels of `x`."""
    q = np.floor(x.astype(np.float64) * 255 + 0.5).astype(int)
    out = np.empty_like(x)
    for c in range(3):
        hist = np.bincount(q[..., c].ravel(), minlength=256)
        used = hist[hist > 0]
        step = (used.sum() - used[-1]) // 255
        if step == 0:
            lut = np.arange(256)
        else:
            lut = np.minimum((step // 2 + np.concatenate([[0], np.cumsum(hist)[:-1]])) // step, 255)
        out[..., c] = lut[q[..., c]] / 255.0
    return out


def off_lattice_image(seed, h=H, w=W):
    """float32 in [0, 1] NOT on the 8-bit lattice (what an op sees after rotate, color, ...)."""
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("shape", [(H, W), (1, 1), (3, 40)])
def test_equalize_lut_matches_numpy_reference(shape):
    x = off_lattice_image(20, *shape)
    x[..., 1] = 0.4  # one level: unchanged
    if shape[0] * shape[1] > 1:
        x[0, 0, 2] = 1.0  # the top level present, and the rest narrow
        x[1:, :, 2] = x[1:, :, 2] * 0.2 if shape[0] > 1 else x[1:, :, 2]
    eager, mapped = run_both(A.equalize, x)
    ref = np_equalize(x)
    for out in (eager, mapped):
        assert np.abs(out - ref).max() <= 1 / 255 + 1e-6  # float32 vs float64 rounding at a .5 boundary
        assert np.mean(np.abs(out - ref) > 1e-6) < 0.01
    np.testing.assert_array_equal(eager, mapped)


def test_autocontrast_matches_exact_float_stretch():
    x = 0.1 + 0.6 * off_lattice_image(21)
    x[..., 1] = 0.3  # constant channel: unchanged
    lo, hi = x.reshape(-1, 3).min(0), x.reshape(-1, 3).max(0)
    ref = np.where(hi > lo, (x - lo) / np.where(hi > lo, hi - lo, 1), x)
    eager, mapped = run_both(A.autocontrast, x)
    np.testing.assert_allclose(eager, ref, atol=1e-6)
    np.testing.assert_allclose(mapped, ref, atol=1e-6)


@pytest.mark.parametrize("rank", [3, 4])
def test_channel_affine_and_reduce_match_numpy(rank):
    x = off_lattice_image(22) if rank == 3 else np.stack([off_lattice_image(s) for s in (23, 24)])
    scale, offset = np.array([0.5, -1.0, 2.0], np.float32), np.array([0.1, 1.0, -0.5], np.float32)
    eager, mapped = run_both(lambda im: A.channel_affine(im, scale, offset), x)
    np.testing.assert_allclose(eager, x * scale + offset, atol=1e-6)
    np.testing.assert_allclose(mapped, x * scale + offset, atol=1e-6)
    if rank == 3:
        refs = ((tf.reduce_min, x.min((0, 1))), (tf.reduce_max, x.max((0, 1))), (tf.reduce_mean, x.mean((0, 1))))
        for fn, ref in refs:
            eager, mapped = run_both(lambda im: A.channel_reduce(im, fn), x)
            np.testing.assert_allclose(eager, ref, atol=1e-6)
            np.testing.assert_allclose(mapped, ref, atol=1e-6)


@pytest.mark.parametrize("factor", [0.2, 1.9])
def test_contrast_and_sharpness_match_numpy(factor):
    x = off_lattice_image(25)
    mean = (x @ np.array(A.GRAY_WEIGHTS, np.float32)).mean()
    eager, mapped = run_both(lambda im: A.adjust_contrast(im, factor), x)
    ref = np.clip(mean + factor * (x - mean), 0, 1)
    np.testing.assert_allclose(eager, ref, atol=1e-6)
    np.testing.assert_allclose(mapped, ref, atol=1e-6)
    smooth = x.copy()
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            window = x[i - 1 : i + 2, j - 1 : j + 2]
            smooth[i, j] = (window.sum((0, 1)) + 4 * x[i, j]) / 13.0
    ref = np.clip(smooth + factor * (x - smooth), 0, 1)  # borders: smooth = x, unchanged
    eager, mapped = run_both(lambda im: A.sharpness(im, factor), x)
    np.testing.assert_allclose(eager, ref, atol=1e-6)
    np.testing.assert_allclose(mapped, ref, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 7), (7, 2)])  # (a side of 1 is an error of the convolution, as before)
def test_sharpness_of_images_without_interior_is_identity(shape):
    x = off_lattice_image(26, *shape)
    np.testing.assert_array_equal(A.sharpness(tf.constant(x), 1.9), x)


@pytest.mark.parametrize("level", [0.27, -0.27, 0.05, 1.5, -40.0])
@pytest.mark.parametrize("shape", [(H, W), (W, H), (1, 9), (9, 1)])
def test_shears_match_the_projective_transform(level, shape):
    x = off_lattice_image(27, *shape)
    for fn, matrix in ((A.shear_x, [1.0, level, 0, 0, 1, 0, 0, 0]), (A.shear_y, [1.0, 0, 0, level, 1, 0, 0, 0])):
        ref = A.transform(tf.constant(x), matrix).numpy()  # the implementation before crop_and_resize
        eager, mapped = run_both(lambda im: fn(im, level), x)
        np.testing.assert_allclose(eager, ref, atol=0.05 / 255)
        np.testing.assert_allclose(mapped, ref, atol=0.05 / 255)


def test_views_are_a_pure_function_of_the_seed_for_every_op():
    """(seed) -> identical view, eagerly, in `Dataset.map` and again: the cached view targets rely on it."""
    cfg = AugmentConfig(flip=True, randaugment={"num_ops": 2, "magnitude": 9}, cutout={})
    x = random_image(28, 24, 24)
    seeds = [[s, 11] for s in range(40)]  # 80 draws from 14 ops: every op several times
    fn = lambda im, sd: A.augment_image(im, sd, cfg)  # noqa: E731
    eager, mapped = run_seeds(fn, x, seeds)
    again, _ = run_seeds(fn, x, seeds)
    np.testing.assert_array_equal(eager, again)
    np.testing.assert_allclose(eager, mapped, atol=1e-6)
