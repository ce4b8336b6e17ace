"""The `data` stage of a recipe: use `data.dir` as it is, or build it with the recipe's generator.

A generated data set records its generator settings in `<data.dir>/generator.json`; a recipe asking for
other settings is refused (never silently served the old images). A folder that holds files cpsd-tf did
not write is never written into.
"""

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

import click

from cpsd_tf import io
from cpsd_tf.data import records, scenes
from cpsd_tf.errors import UserError

GENERATOR_FILE = "generator.json"


def required_splits(recipe):
    """Every split the recipe reads: train, val and the evaluation splits, in that order, once each."""
    data = recipe.data
    return list(dict.fromkeys([data.train_split, data.val_split, *data.eval_splits]))


def generator_settings(recipe):
    """What a generated data set is made from: the generator, its seed and its settings."""
    data = recipe.data
    return {"generator": data.generator, "seed": data.seed, "scenes": data.scenes.model_dump(mode="json")}


def fingerprint(data_dir):
    """A short hash of what a data folder holds (`dataset.json` and, if generated, its settings)."""
    h = hashlib.sha1()
    for name in (records.DATASET_JSON, GENERATOR_FILE):
        path = Path(data_dir) / name
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def is_done(recipe) -> bool:
    return (Path(recipe.data.dir) / records.DATASET_JSON).is_file()


def _check_generator(recipe, data_dir):
    path = Path(data_dir) / GENERATOR_FILE
    if recipe.data.generator is None or not path.is_file():
        return  # the user's own data set: used as it is
    # a key added to the generator after this data set was made was at its default then
    recorded = {**records_flat({"scenes": scenes.ScenesConfig().model_dump(mode="json")}),
                **records_flat(json.loads(path.read_text()))}
    wanted = records_flat(generator_settings(recipe))
    for key in sorted(set(recorded) | set(wanted)):
        if recorded.get(key) != wanted.get(key):
            raise UserError(
                f"data.dir '{data_dir}' was generated with data.{key}={json.dumps(recorded.get(key))}, this recipe "
                f"asks data.{key}={json.dumps(wanted.get(key))}; point data.dir at a new folder, or rerun with "
                f"--force to regenerate it"
            )


def records_flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(records_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def require(recipe, splits=None) -> Path:
    """The recipe's data folder, which must hold a data set matching the recipe (never builds it)."""
    data_dir = Path(recipe.data.dir)
    if not is_done(recipe):
        hint = ("build it with 'cpsd-tf data build --recipe R' (or 'cpsd-tf run --recipe R')"
                if recipe.data.generator else "convert your images first, e.g. 'cpsd-tf data csv ... --out "
                f"{data_dir}'")
        raise UserError(f"data.dir '{data_dir}' holds no {records.DATASET_JSON}; {hint}")
    _check_generator(recipe, data_dir)
    info = records.load_info(data_dir)
    missing = [s for s in (splits or required_splits(recipe)) if s not in info.splits]
    if missing:
        raise UserError(
            f"data.dir '{data_dir}': the recipe needs split(s) {missing}, the data set has {sorted(info.splits)}"
        )
    return data_dir


def run(recipe, run_dir=None, force=False) -> Path:
    """Make sure `data.dir` holds the recipe's data set, generating it when the recipe names a generator.

    The data set is built in a temporary folder beside `data.dir` and renamed into place when complete,
    so an interrupted generation leaves nothing that looks finished. An existing folder is replaced only
    with `force` and only when cpsd-tf generated it (its `generator.json`). Processes that start together
    generate it once (`_generating`).
    """
    data_dir = Path(recipe.data.dir)
    ours = (data_dir / GENERATOR_FILE).is_file()
    if is_done(recipe) and not (force and ours and recipe.data.generator):
        return require(recipe)
    if recipe.data.generator is None:
        return require(recipe)
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"data.dir '{data_dir}' is a file, not a folder")
    if data_dir.is_dir() and any(data_dir.iterdir()) and not ours:
        raise UserError(
            f"data.dir '{data_dir}' holds files that are not a cpsd-tf data set (no {records.DATASET_JSON}); "
            f"cpsd-tf will not write into it: point data.dir at a new or empty folder"
        )
    with _generating(data_dir):
        if is_done(recipe) and not force:
            return require(recipe)  # another process generated it while this one waited
        ours = (data_dir / GENERATOR_FILE).is_file()
        click.echo(f"[data] generating {data_dir} ({recipe.data.generator}, seed {recipe.data.seed})")
        with io.atomic_path(data_dir, replace_ours=ours) as tmp:
            scenes.generate(tmp, recipe.data.scenes, seed=recipe.data.seed)
            io.write_json(tmp / GENERATOR_FILE, generator_settings(recipe))
    return require(recipe)


@contextlib.contextmanager
def _generating(data_dir):
    """Hold the OS lock of the folder that holds `data.dir` while generating it: two runs started together
    on a new data set (e.g. seeds side by side) generate it once, and the second never replaces the folder
    under the first. The lock is taken on the folder itself, so nothing is written there; it dies with its
    process. Where folders cannot be locked (some network file systems), generation goes on unlocked."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            click.echo(f"[data] waiting for another process generating data in {data_dir.parent}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no folder locks here
        yield
    finally:
        os.close(fd)  # releases the lock
