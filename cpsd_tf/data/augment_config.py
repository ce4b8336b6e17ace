"""Which training augmentations run: the `data.augment` section of a recipe.

Plain pydantic models (no TensorFlow import), so recipes validate without loading TensorFlow. The ops
themselves live in `cpsd_tf.data.augment`. Order of application, per image, on float32 RGB in [0, 1]
after decode (and before normalisation):

    crop (random resized crop, at decode time) -> resize -> flip -> translate -> randaugment -> cutout

Example (YAML, the ASL/CPSD official training augmentation: RandAugment + Cutout 0.5, plus flip):

    augment:
      flip: true
      randaugment: {num_ops: 2, magnitude: 9}
      cutout: {probability: 1.0, size: 0.5}
"""

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

# RandAugment op names, in the order of `augment.RANDAUGMENT_OPS` (Cubuk et al. 2020, Table: the 14 ops).
RANDAUGMENT_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CropConfig(_Config):
    """Random resized crop (Inception style) taken from the decoded image before resizing."""

    scale: tuple[float, float] = Field(
        (0.5, 1.0), description="Range of the crop area as a fraction of the image area."
    )
    ratio: tuple[float, float] = Field(
        (3 / 4, 4 / 3), description="Range of the crop aspect ratio (width / height)."
    )

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v):
        lo, hi = v
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"expected 0 < min <= max <= 1, received {list(v)}")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratio_range(cls, v):
        lo, hi = v
        if not 0 < lo <= hi:
            raise ValueError(f"expected 0 < min <= max, received {list(v)}")
        return v


class RandAugmentConfig(_Config):
    """RandAugment: `num_ops` ops drawn uniformly (with replacement) per image, at a fixed magnitude."""

    num_ops: int = Field(2, ge=1, le=10, description="Ops applied in sequence to each image.")
    magnitude: float = Field(
        9.0, ge=0, le=10, description="Strength on the 0..10 scale of the paper (10 = strongest)."
    )
    ops: tuple[str, ...] = Field(RANDAUGMENT_OPS, min_length=1, description="Op names to draw from.")

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, v):
        unknown = [name for name in v if name not in RANDAUGMENT_OPS]
        if unknown:
            raise ValueError(f"unknown op(s) {unknown}; expected names among {list(RANDAUGMENT_OPS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"op names must not repeat, received {list(v)}")
        return v


class CutoutConfig(_Config):
    """Cutout: erase one square (clipped at the borders) at a uniformly drawn centre."""

    probability: float = Field(1.0, ge=0, le=1, description="Chance that an image gets a cutout.")
    size: float = Field(0.5, gt=0, le=1, description="Side of the square as a fraction of the image side.")
    fill: Literal["random", "gray", "zero"] = Field(
        "random", description="random: one random RGB colour per image (ASL's CutoutPIL); gray: 0.5; zero: 0."
    )


class AugmentConfig(_Config):
    """Training augmentations; the defaults only flip (set `flip: false` for digits, text, ...)."""

    flip: bool = Field(True, description="Random horizontal flip (p = 0.5).")
    translate: float = Field(
        0.0, ge=0, le=0.5, description="Max random shift as a fraction of the side (reflect padding); 0 = off."
    )
    crop: Optional[CropConfig] = Field(None, description="Random resized crop; null = resize the whole image.")
    randaugment: Optional[RandAugmentConfig] = None
    cutout: Optional[CutoutConfig] = None

    @property
    def is_identity(self) -> bool:
        """True when no op would change an image (the pipeline then skips the augment step)."""
        return not (self.flip or self.translate > 0 or self.crop or self.randaugment or self.cutout)


def objects_moved(config: AugmentConfig):
    """What in `config` moves objects in a way `boxes.view_boxes` does not follow (it follows flip,
    translate and RandAugment's ops), as the recipe key, or None."""
    if config.crop is not None:
        return "data.augment.crop"
    return None
