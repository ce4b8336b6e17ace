"""`cpsd-tf data scenes`: the bundled benchmark.

One option per `ScenesConfig` field (`--p-ctx` for `p_ctx`, ...), generated from the model so the CLI and
the recipe's `data.scenes` section cannot drift apart. Unset options keep the config's defaults.
"""

import re

import click

from cpsd_tf.errors import UserError


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _knob_options(func):
    # Includes --train and --test (the CLI contract of DESIGN.md) and --val, --image-size, --p-ctx, ...
    from cpsd_tf.data.scenes import ScenesConfig

    for name, field in reversed(list(ScenesConfig.model_fields.items())):
        kind = int if field.annotation is int else float
        func = click.option(
            _option_name(name),
            name,
            default=None,
            type=kind,
            help=f"{field.description} [default: {field.default}]",
        )(func)
    return func


def config_from_options(overrides: dict):
    """Build a `ScenesConfig` from CLI values; a rejected value is a `UserError` naming the option."""
    from pydantic import ValidationError

    from cpsd_tf.data.scenes import ScenesConfig

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ScenesConfig(**given)
    except ValidationError as e:
        err = e.errors()[0]
        if err["loc"]:
            field = str(err["loc"][0])
            raise UserError(f"{_option_name(field)}: {err['msg']}, received {given.get(field)!r}") from None
        # A cross-field check (e.g. min > max): its message names fields; show them as options.
        msg = re.sub(r"^Value error, ", "", err["msg"])
        for field in ScenesConfig.model_fields:
            msg = re.sub(rf"\b{field}\b", _option_name(field), msg)
        raise UserError(msg) from None


@click.command("scenes")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same data).")
@_knob_options
def scenes(out, seed, **knobs):
    """Generate the scenes benchmark from scikit-learn's digits.

    \b
    30 classes (digit x colour, e.g. "red-3") in 6 scenes of 5; splits train, val, test (objects drawn
    from one scene with probability --p-ctx) and test_ood (objects drawn independently of scenes);
    test handwriting is never seen in training. Writes TFRecord shards, dataset.json and stats.json.
    With --single N, also the pretraining splits single (N images) and single_val (--single-val):
    one glyph per image, no scene, no occluder, never a train image (see `cpsd-tf pretrain`).
    """
    from cpsd_tf.data import scenes as scenes_mod

    config = config_from_options(knobs)
    if seed < 0:
        raise UserError(f"--seed: must be >= 0, received {seed}")
    result = scenes_mod.generate(out, config, seed=seed)
    sizes = ", ".join(f"{split} {n}" for split, n in result["splits"].items())
    click.echo(
        f"Wrote {out}: {result['classes']} classes, {sizes} images ({config.image_size} px, "
        f"p_ctx {config.p_ctx}, seed {seed}) in {result['total_seconds']:.1f} s"
    )
