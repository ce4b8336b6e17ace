"""The bundled scenes benchmark (`cpsd-tf data scenes`): a small multi-label data set with strong,
partly misleading label co-occurrence, built from scikit-learn's handwritten digits.

Classes are digit x colour (30 names like "red-3"). The 30 classes are grouped into 6 fixed *scenes* of 5
classes (`SCENES`, like "kitchen" or "street" in COCO). An image holds 2-5 coloured handwritten digits at
random positions and sizes on a textured background; flat grey patches (by default at most one per
image) can hide part of a digit. In `train`, `val` and `test` an image draws its objects from one scene
with probability `p_ctx`, otherwise from all classes independently; in `test_ood` every image draws its
objects independently of the scenes. A model that leans on co-occurrence ("an occluded 7 beside red-1 and
green-9 is blue-7") is rewarded in `test` and punished in `test_ood`.

The 8x8 glyphs are split by sample: `train`/`val` render glyphs of one pool, `test`/`test_ood` of a
disjoint pool, so test handwriting is never seen in training (`glyph_pools`). Generation is deterministic:
the same seed and config give byte-identical records. Labels and pixels use separate random streams, so
`sample_objects` reproduces the labels of a split without rendering it.

Pretraining splits (`ScenesConfig.single` > 0, issue "faithful CPSD"): `single` and the held-out
`single_val` hold ONE glyph per image (label = its class, classes drawn uniformly) on the same textured
backgrounds, with no scene and no occluder, rendered from the train glyph pool (so test handwriting stays
unseen) with random streams of their own: they never repeat a train image, and writing them (or not)
leaves the four scene splits byte-identical. They stand in for ImageNet: a backbone pretrained on them
(`cpsd_tf.pretrain`) knows what a glyph looks like but has never seen a scene.

This module does not import TensorFlow at top level (recipes import `ScenesConfig`).

The images (classes, scenes, objects, glyphs, rendering) are made in `cpsd_tf.data.scene_images`;
this module holds `ScenesConfig` and writes the splits (`generate`).
"""

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cpsd_tf import io
from cpsd_tf.data.scene_images import (  # noqa: F401 (re-exported: callers and tests use cpsd_tf.data.scenes.<name>)
    CLASSES,
    COLOURS,
    SCENE_SIZE,
    SCENES,
    SINGLE_SPLITS,
    SPLITS,
    TRAIN_GLYPH_FRACTION,
    _STREAM_IDS,
    _encode_png,
    _pool_by_digit,
    glyph_pools,
    multi_hot,
    render_split,
    render_with_boxes,
    sample_objects,
    scene_class_indices,
    split_pixels,
)

# Bump when the same config and seed would render different records (recorded in dataset.json).
GENERATOR_VERSION = 1


class ScenesConfig(BaseModel):
    """Knobs of the scenes benchmark; the defaults are the regime measured in `tools/scenes_regime.py`.

    Sizes given as a fraction of the canvas side scale with `image_size` (at 64 px, glyphs of 0.22-0.38
    are 14-24 px and occluders of 0.125-0.19 are 8-12 px).

    Why these defaults (small residual CNN, 0.28 M parameters, trained to its best val mAP; numbers are
    test / test_ood mAP): with no occluder (p_ctx 0.9) it is 98.1 / 78.5; 2-4 occluders of 8-14 px
    make test_ood near hopeless (p_ctx 0.85-0.95: 75-85 / 35-42); 0-1 occluder of 8-12 px at p_ctx 0.9
    sits between (94.6-95.8 / 65.5-71.0, gap 25-29 over 2 data and 2 training seeds, best epoch 40-63),
    so context helps in test, misleads in test_ood, and both leave room to improve. 2,000 train images
    keep one model to ~10 minutes on 2 CPU cores (the team's prototype: 6,000 shrank the gap to 3).

    Example:
        >>> ScenesConfig(train=500, image_size=48).test
        2000
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: int = Field(2000, ge=1, le=1_000_000, description="Number of training images.")
    val: int = Field(1000, ge=1, le=1_000_000, description="Number of validation images (in context, train glyphs).")
    test: int = Field(2000, ge=1, le=1_000_000, description="Number of images in test and in test_ood each.")
    image_size: int = Field(64, ge=16, le=512, description="Side of the square RGB canvas in pixels.")
    objects_min: int = Field(2, ge=1, le=SCENE_SIZE, description="Fewest objects (digits) per image.")
    objects_max: int = Field(5, ge=1, le=SCENE_SIZE, description="Most objects per image (at most a scene's 5 classes).")
    p_ctx: float = Field(0.9, ge=0.0, le=1.0, description="Probability that a train/val/test image draws its objects from one scene.")
    glyph_scale_min: float = Field(0.22, gt=0.0, le=1.0, description="Smallest glyph side, as a fraction of the canvas.")
    glyph_scale_max: float = Field(0.38, gt=0.0, le=1.0, description="Largest glyph side, as a fraction of the canvas.")
    occluders_min: int = Field(0, ge=0, le=20, description="Fewest grey occluding patches per image.")
    occluders_max: int = Field(1, ge=0, le=20, description="Most grey occluding patches per image.")
    occluder_scale_min: float = Field(0.125, gt=0.0, le=1.0, description="Smallest occluder side, as a fraction of the canvas.")
    occluder_scale_max: float = Field(0.19, gt=0.0, le=1.0, description="Largest occluder side, as a fraction of the canvas.")
    single: int = Field(
        0, ge=0, le=1_000_000,
        description="Single-object images for pretraining (split 'single': one glyph, no scene, no occluder); 0 = none.",
    )
    single_val: int = Field(
        500, ge=1, le=1_000_000, description="Held-out single-object images (split 'single_val'), written when single > 0."
    )

    @model_validator(mode="after")
    def _ranges(self):
        for low, high in (
            ("objects_min", "objects_max"),
            ("glyph_scale_min", "glyph_scale_max"),
            ("occluders_min", "occluders_max"),
            ("occluder_scale_min", "occluder_scale_max"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{low} ({getattr(self, low)}) must be <= {high} ({getattr(self, high)})"
                )
        if round(self.glyph_scale_min * self.image_size) < 4:
            raise ValueError(
                f"glyph_scale_min ({self.glyph_scale_min}) x image_size ({self.image_size}) is under 4 px"
            )
        return self

    def split_size(self, split: str) -> int:
        return {
            "train": self.train, "val": self.val, "test": self.test, "test_ood": self.test,
            "single": self.single, "single_val": self.single_val,
        }[split]

    def splits(self) -> list:
        """The splits `generate` writes: the four scene splits, plus single and single_val when single > 0."""
        return [*SPLITS, *(SINGLE_SPLITS if self.single > 0 else ())]


# === Entry point ===


def generate(out_dir, config: ScenesConfig, seed: int = 0, splits=None) -> dict:
    """Write the splits as TFRecord shards, each with `<split>.objects.npz` (where each object is:
    `cpsd_tf.data.objects`), plus `stats.json` of train.

    Args:
        out_dir: str or Path, the data folder (created if missing; an existing scenes data set there is
            replaced split by split).
        config: ScenesConfig, the knobs.
        seed: int >= 0, the data seed (same seed and config, byte-identical records). Defaults to 0.
        splits: list of str or None, the splits to write (e.g. ["single", "single_val"] to add the
            pretraining splits to a data set generated with the same seed and config; that rewrites its
            dataset.json, so runs made on it see changed data). Defaults to None:
            `config.splits()`, i.e. train, val, test, test_ood, plus single and single_val when
            `config.single` > 0. Every split's images depend only on (seed, config, split), never on
            which other splits are written.

    Returns:
        {"splits": {split: size}, "seconds": {split: time}, "total_seconds": t, "classes": m}.

    Example:
        >>> generate("data/scenes", ScenesConfig(train=200, val=50, test=50), seed=0)["splits"]["test_ood"]
        50
    """
    from cpsd_tf.data import objects as objects_file
    from cpsd_tf.data import records
    from cpsd_tf.errors import UserError
    from cpsd_tf.stats import label_stats

    if int(seed) < 0:
        raise UserError(f"seed must be >= 0, received {seed}")
    splits = config.splits() if splits is None else list(splits)
    unknown = [s for s in splits if s not in _STREAM_IDS]
    if unknown:
        raise UserError(f"scenes: unknown split(s) {unknown}; splits are {list(_STREAM_IDS)}")
    empty = [s for s in splits if config.split_size(s) < 1]
    if empty:
        raise UserError(f"scenes: split(s) {empty} would be empty; set data.scenes.single (--single) > 0")
    out_dir = Path(out_dir)
    meta = {
        "source": "scenes",
        "scenes": {
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "config": config.model_dump(),
            "scenes": SCENES,
            "glyph_pools": {"train_val": int(len(glyph_pools()["train"])), "test_test_ood": int(len(glyph_pools()["test"]))},
        },
    }
    t_all = time.perf_counter()
    seconds, sizes = {}, {}
    train_objects = None
    for split in splits:
        t0 = time.perf_counter()
        objects, _ = sample_objects(config, split, seed)
        if split == "train":
            train_objects = objects
        where = []
        recs = (
            records.Record(image=png, image_id=image_id, labels=labels)
            for png, image_id, labels in render_split(config, split, seed, objects, where)
        )
        sizes[split] = records.write_split(
            out_dir, split, CLASSES, recs, total=len(objects), label=f"Generating {split:<8}", extra_meta=meta
        )
        objects_file.write(out_dir, split, where)  # each object's box, for mixed views labelled by object
        seconds[split] = round(time.perf_counter() - t0, 2)
    if train_objects is not None:
        stats = label_stats(multi_hot(train_objects), CLASSES)
        stats["dataset"] = f"scenes seed {seed} (train)"
        stats["split"] = "train"
        io.write_json(out_dir / "stats.json", stats, indent=None)
    return {
        "splits": sizes,
        "seconds": seconds,
        "total_seconds": round(time.perf_counter() - t_all, 2),
        "classes": len(CLASSES),
    }
