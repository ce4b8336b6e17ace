"""Recipes: YAML files validated on load into frozen, typed config objects.

A recipe is plain data. Unknown keys, wrong types and values out of range are errors naming the file,
the key, what is allowed and what was received. `--set a.b=c` overrides any key; the value is read as
YAML (so `4` is an int, `true` a bool, `[cgp, dgp]` a list) and then validated like the file.

Example:
    recipe = load("recipes/demo.yaml", overrides=["partition.k=4"])
    recipe.partition.k  # 4
"""

import typing
from pathlib import Path
from typing import Literal, Optional, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from cpsd_tf import io
from cpsd_tf.data.augment_config import AugmentConfig, objects_moved
from cpsd_tf.data.scenes import ScenesConfig
from cpsd_tf.errors import UserError
from cpsd_tf.views import check_targets

RECIPE_FILE = "recipe.yaml"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Config):
    """Where the images are and how they are fed."""

    dir: str = Field(description="Data folder holding dataset.json and the shards (relative to the working directory).")
    generator: Optional[Literal["scenes"]] = Field(
        None, description="Build the data with this generator when `dir` holds no dataset yet."
    )
    scenes: ScenesConfig = ScenesConfig()
    seed: int = Field(0, ge=0, description="Seed of the data generator (kept apart from the training seed).")
    image_size: int = Field(224, ge=8, le=2048)
    train_split: str = "train"
    val_split: str = Field("val", description="Split used for model selection; never a reported split by default.")
    eval_splits: list[str] = Field(default_factory=lambda: ["test"], min_length=1)
    augment: AugmentConfig = AugmentConfig()


class PartitionConfig(_Config):
    """Label partition (paper §3.2)."""

    k: int = Field(5, ge=1, description="Clusters per strategy; 2k teachers in all.")
    tau: float = Field(2.0, gt=0, description="Smoothing exponent (paper: 3, official code: 2).")
    strategy: Literal["spectral", "random"] = "spectral"
    balanced: bool = False
    seed: int = 0


class ModelConfig(_Config):
    """Architecture shared by baseline, teachers and student."""

    backbone: str = "resnet101"
    head: str = "linear"
    weights: Optional[str] = Field(
        "imagenet", description="imagenet, null (random init), a weights file, or pretrain (this run's "
        "pretrained backbone, with pretrain.enabled)."
    )
    head_options: dict = Field(default_factory=dict, description="Head options, e.g. {hidden: 1024, depth: 3}.")


class LossConfig(_Config):
    """Asymmetric Loss (paper §4.1: gamma- = 4, gamma+ = 0, clip = 0.05)."""

    gamma_neg: float = Field(4.0, ge=0)
    gamma_pos: float = Field(0.0, ge=0)
    clip: float = Field(0.05, ge=0, lt=1)
    normalize: bool = Field(False, description="Divide the per-image sum over classes by the number of classes.")


class TrainConfig(_Config):
    """Optimisation shared by baseline, teachers and student (paper §4.1 and the official code)."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of the warm-up + cosine schedule.")
    warmup: float = Field(0.2, ge=0, lt=1, description="Fraction of the steps spent warming up (one-cycle).")
    weight_decay: float = Field(1e-4, ge=0, description="Decoupled weight decay; none on biases and norms.")
    ema_momentum: Union[Literal["auto"], float, None] = Field(
        "auto",
        description="Weight EMA momentum; 'auto' = min(0.9997, 1 - 10/steps) so short runs get a usable "
        "average (Keras' EMA has no bias correction); null = no EMA.",
    )
    loss: LossConfig = LossConfig()
    mixed_precision: bool = Field(False, description="mixed_float16 (GPU); off: it does not finish on CPU.")
    jit_compile: bool = Field(False, description="XLA; off: slower on this CPU.")
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = Field(
        "auto", description="auto = MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else "
        "MirroredStrategy when more than one GPU, else the default strategy; multi_worker: several machines "
        "(cpsd_tf.multiworker).",
    )
    cache: bool = Field(False, description="Keep decoded training images in memory (small data sets).")
    shuffle_buffer: int = Field(1024, ge=0)
    select_split: Optional[str] = Field(
        None, description="Split for best-epoch selection; default data.val_split (resolved on load)."
    )
    validate_every: int = Field(
        1, ge=1, strict=True,
        description="Score the selection split every N epochs and at the last one; only scored epochs can be "
        "selected. N > 1 cuts the epoch-end cost of large runs (see metrics.json's epoch_cost).",
    )

    @pydantic.field_validator("ema_momentum")
    @classmethod
    def _momentum_range(cls, v):
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError(f"ema_momentum must be 'auto', null or in (0, 1), received {v}")
        return v


class ViewsConfig(_Config):
    """Mixed views of each training batch that break context (issue 15; `cpsd_tf.views`)."""

    kind: Literal["none", "mixup", "cutmix", "mosaic"] = Field(
        "none", description="none (faithful CPSD), mixup (blend with the next image of the batch), cutmix "
        "(paste a box of it), mosaic (2x2 grid of four images)."
    )
    prob: float = Field(1.0, ge=0, le=1, description="Probability that an image of the batch is mixed.")
    alpha: float = Field(
        1.0, gt=0, description="Shares ~ Beta(alpha, alpha): mixup weight, cutmix box area, mosaic split point "
        "per axis (1 = uniform)."
    )
    min_share: float = Field(
        0.1, ge=0, le=0.5, description="labels: area. An image's labels count in the mixed view when its share "
        "(mixup weight, visible area) is at least this."
    )
    labels: Literal["area", "objects"] = Field(
        "area", description="ASL labels of a cutmix/mosaic view: area (every label of each image whose share is "
        ">= min_share) or objects (each object whose box stays >= min_visible in view; needs the data's "
        "<split>.objects.npz, which cpsd-tf data scenes writes)."
    )
    min_visible: float = Field(
        0.5, gt=0, le=1, description="labels: objects. An object is a positive of the mixed view when at least "
        "this fraction of its box is shown."
    )


class BaselineConfig(_Config):
    """The full-label model trained without distillation."""

    epochs: Optional[int] = Field(None, ge=1, description="Default: train.epochs (resolved on load).")
    views: ViewsConfig = Field(ViewsConfig(), description="Mixed training views (as distill.views, for comparison).")
    validate_every: Optional[int] = Field(
        None, ge=1, strict=True, description="Default: train.validate_every (resolved on load)."
    )


class TeachersConfig(_Config):
    """The 2k sub-task models."""

    epochs: Optional[int] = Field(None, ge=1, description="Default: train.epochs (resolved on load).")
    lr: Optional[float] = Field(None, gt=0, description="Peak learning rate; default train.lr (resolved on load).")
    validate_every: Optional[int] = Field(
        None, ge=1, strict=True, description="Default: train.validate_every (resolved on load)."
    )
    images: Literal["all", "positive"] = Field(
        "all", description="all: every training image (official code); positive: images with a cluster label."
    )
    views: ViewsConfig = Field(
        ViewsConfig(), description="Mixed training views for the teachers too (not in the paper; default none)."
    )


class DistillConfig(_Config):
    """The student (paper §3.3): L = w_cls·ASL(y, s) + Σ_t w_t·SSE(s, teacher_t), Σ_t w_t = w_distill."""

    teachers: list[Literal["cgp", "dgp", "baseline", "random"]] = Field(
        default_factory=lambda: ["cgp", "dgp"], min_length=1,
        description="Teacher sets: [cgp, dgp] = CPSD, [cgp] = CGPD, [dgp] = DGPD, [baseline] = SD, [random].",
    )
    epochs: Optional[int] = Field(None, ge=1, description="Default: train.epochs (resolved on load).")
    lr: Optional[float] = Field(None, gt=0, description="Peak learning rate; default train.lr (resolved on load).")
    validate_every: Optional[int] = Field(
        None, ge=1, strict=True, description="Default: train.validate_every (resolved on load)."
    )
    teacher_logits: Literal["online", "cached_views", "cached_clean"] = Field(
        "online",
        description="online: teachers run on the student's own augmented batch (official code, consistent "
        "targets); cached_views: the same targets, computed once per (data pass, record) by 'cpsd-tf logits' "
        "(logits/views/*.npy) and shared by every student; cached_clean: logits of the un-augmented train "
        "images (logits/*.npy) joined by index (inconsistent with the student's view).",
    )
    w_cls: float = Field(0.5, ge=0, description="Weight of the ASL term (official code: 0.5).")
    w_distill: float = Field(
        0.5, ge=0, description="Total weight of the distillation terms, shared by the teacher sets (official: 0.5)."
    )
    alpha: float = Field(
        0.5, ge=0, le=1, description="CGP's share of w_distill when distilling from CGP and DGP (official: 0.5)."
    )
    mse: Literal["sum", "mean"] = Field(
        "sum", description="sum over classes (official) or mean over classes (scale-free, like a normalised ASL)."
    )
    init: Literal["scratch", "baseline"] = Field("scratch", description="Student starts from scratch or the baseline.")
    views: ViewsConfig = Field(
        ViewsConfig(), description="Mixed views of each batch, seen by the student and its online teachers alike."
    )

    @property
    def variant(self):
        """The ablation name of this teacher list (cpsd, cgpd, dgpd, sd, random), else 'student'."""
        from cpsd_tf.rundir import variant_name

        return variant_name(self.teachers)


class PretrainConfig(_Config):
    """Backbone pretraining on the single-object split (the scenes benchmark's ImageNet).

    The defaults are measured on the scenes benchmark at 32 px (recipes/scenes_ablation.yaml's data with
    `single: 10000, single_val: 1000`), tiny_cnn: 10 epochs at lr 0.01 reach 98.9 % top-1 accuracy
    (mAP 99.8) on single_val, with the plateau from epoch ~8; 185 s of CPU time (about 2 minutes on
    2 idle cores). 5,000 images for 6 epochs stopped at 57 % (still climbing).
    """

    enabled: bool = Field(False, description="Run the pretrain stage before the baseline.")
    split: str = Field("single", description="Training split: one object per image (data.scenes.single).")
    val_split: str = Field("single_val", description="Held-out split for best-epoch selection and the reported accuracy.")
    epochs: int = Field(10, ge=1, description="Epochs over the split.")
    lr: float = Field(0.01, gt=0, description="Peak learning rate (warm-up + cosine, as train.lr).")
    batch_size: int = Field(64, ge=1)
    warmup: float = Field(0.1, ge=0, lt=1, description="Fraction of the steps spent warming up.")


class ReferenceConfig(_Config):
    """Fair baselines evaluated beside the student (issue #5)."""

    equal_compute: bool = Field(
        False, description="Also train a baseline for as many epochs as the teachers and the student together."
    )
    teacher_ensembles: bool = Field(True, description="Evaluate the merged teachers (teachers_cgp/dgp/ensemble).")


class Recipe(_Config):
    """A whole run: data, partition, model (later issues add training and distillation keys)."""

    run_dir: str = Field(description="Run directory (relative to the working directory).")
    seed: int = 0
    data: DataConfig
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    baseline: BaselineConfig = BaselineConfig()
    teachers: TeachersConfig = TeachersConfig()
    distill: DistillConfig = DistillConfig()
    ablation: list[Literal["cpsd", "cgpd", "dgpd", "sd", "random"]] = Field(
        default_factory=list, description="Extra students to train and report, e.g. [sd, cgpd, dgpd, random]."
    )
    reference: ReferenceConfig = ReferenceConfig()
    pretrain: PretrainConfig = PretrainConfig()


def _config_class(annotation):
    """The config class inside an annotation (`X`, `Optional[X]`), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _allowed_keys(model_cls, loc):
    """Field names of the config class found at `loc` (for 'unknown key' messages)."""
    cls = model_cls
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        cls = _config_class(getattr(field, "annotation", None))
        if cls is None:
            return []
    return list(cls.model_fields)


def _format_error(err, source, override_keys):
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc)
    # `--set a.b=1` may fail at `a` (unknown section) or at `a.b.0` (a list item): still the override's fault
    given = [k for k in override_keys if k == key or k.startswith(key + ".") or key.startswith(k + ".")]
    where = f"--set {given[0]}" if given else source
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(Recipe, loc[:-1])
        return f"{where}: unknown key '{key}' (allowed keys here: {', '.join(allowed)})"
    if err["type"] == "missing":
        return f"{where}: missing required key '{key}'"
    return f"{where}: key '{key}': {err['msg']}; received {err.get('input')!r}"


def _set_key(tree, key, value):
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: '{part}' is not a section (it holds {child!r})")
        node = child
    node[parts[-1]] = value


def parse_override(text):
    """Split `a.b=c` into ('a.b', value read as YAML)."""
    if "=" not in text:
        raise UserError(f"--set '{text}': expected KEY=VALUE, e.g. --set partition.k=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise UserError(f"--set '{text}': the key '{key}' is empty or has an empty part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def from_dict(tree, source="<recipe>", overrides=()):
    """Validate a plain dict (plus `--set` overrides) into a `Recipe`."""
    tree = dict(tree)
    keys = set()
    for text in overrides:
        key, value = parse_override(text)
        _set_key(tree, key, value)
        keys.add(key)
    try:
        recipe = Recipe.model_validate(tree)
    except pydantic.ValidationError as e:
        raise UserError(_format_error(e.errors()[0], source, keys)) from None
    _check_model(recipe.model, source, keys)
    if recipe.model.weights == "pretrain" and not recipe.pretrain.enabled:
        where = "--set model.weights" if "model.weights" in keys else source
        raise UserError(f"{where}: key 'model.weights' is 'pretrain' but pretrain.enabled is false; "
                        f"set pretrain.enabled: true")
    for where, views in (("distill.views", recipe.distill.views), ("baseline.views", recipe.baseline.views),
                         ("teachers.views", recipe.teachers.views)):
        moved = views.labels == "objects" and views.kind in ("cutmix", "mosaic") and objects_moved(recipe.data.augment)
        if moved:
            given = [k for k in (f"{where}.labels", moved.split(" ")[0]) if k in keys]
            raise UserError(f"{f'--set {given[0]}' if given else source}: key '{where}.labels' is 'objects' but "
                            f"{moved} moves objects where their boxes do not follow; labels by object follow flips, "
                            f"translations and RandAugment, not the random crop (set {moved}: null, or "
                            f"{where}.labels: area)")
    d = recipe.distill
    if check_targets(d.views.kind, d.teacher_logits):
        given = [k for k in ("distill.views.kind", "distill.teacher_logits") if k in keys]
        raise UserError(f"{f'--set {given[0]}' if given else source}: {check_targets(d.views.kind, d.teacher_logits)}")
    return resolve_defaults(recipe)


def _check_model(model, source, override_keys):
    """Backbone, head and head options exist, checked before any data is generated or model built."""
    from cpsd_tf.quiet import import_tensorflow

    import_tensorflow()  # the model registries import Keras: quietly
    from cpsd_tf.models import backbones, heads

    for key, check in (("backbone", lambda: backbones.get_backbone_spec(model.backbone)),
                       ("head", lambda: heads.get_head_spec(model.head)),
                       ("head_options", lambda: heads.resolve_head_options(model.head, model.head_options))):
        where = f"--set model.{key}" if f"model.{key}" in override_keys else source
        try:
            check()
        except (UserError, ValueError, KeyError) as e:
            message = e.format_message() if isinstance(e, UserError) else str(e)
            raise UserError(f"{where}: key 'model.{key}': {message}") from None


def resolve_defaults(recipe):
    """Fill the fallbacks once (stage epochs, lr and validate_every from `train`, `select_split` from
    `data.val_split`), so the written recipe and every provenance record show the values really used."""

    def fill(cfg, **defaults):
        return cfg.model_copy(update={k: v for k, v in defaults.items() if getattr(cfg, k) is None})

    t = recipe.train
    return recipe.model_copy(update={
        "train": fill(t, select_split=recipe.data.val_split),
        "baseline": fill(recipe.baseline, epochs=t.epochs, validate_every=t.validate_every),
        "teachers": fill(recipe.teachers, epochs=t.epochs, lr=t.lr, validate_every=t.validate_every),
        "distill": fill(recipe.distill, epochs=t.epochs, lr=t.lr, validate_every=t.validate_every),
    })


def with_lr(recipe, lr):
    """The recipe with `train.lr` set to a stage's own learning rate (the trainer reads `train.lr`)."""
    return recipe.model_copy(update={"train": recipe.train.model_copy(update={"lr": float(lr)})})


def load(path, overrides=()):
    """Read, override and validate a recipe file; every problem is a `UserError` naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text recipe file (byte {e.start} is not UTF-8); a recipe is YAML text") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the recipe ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{line}: {getattr(e, 'problem', e)}") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys, got {type(tree).__name__}")
    return from_dict(tree, source=str(path), overrides=overrides)


def resolve_run_dir(recipe, run_dir=None):
    """The run directory: the `--run-dir` option if given, else the recipe's `run_dir`."""
    return Path(run_dir) if run_dir else Path(recipe.run_dir)


def dump(recipe) -> str:
    """The resolved recipe as YAML text."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def write_resolved(recipe, run_dir):
    """Write the resolved recipe (after overrides) to `<run_dir>/recipe.yaml`, atomically."""
    path = Path(run_dir) / RECIPE_FILE
    io.write_text(path, "# Resolved recipe (after --set overrides), written by cpsd-tf.\n" + dump(recipe))
    return path
