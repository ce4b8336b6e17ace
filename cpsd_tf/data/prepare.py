"""The `data` stage of a recipe: use `data.dir` as it is, or build it with the named generator."""

from pathlib import Path

from cpsd_tf import io
from cpsd_tf.data import records
from cpsd_tf.errors import UserError


def required_splits(recipe):
    """Every split the recipe reads: train, val and the evaluation splits, in that order, once each."""
    data = recipe.data
    return list(dict.fromkeys([data.train_split, data.val_split, *data.eval_splits]))


def is_done(recipe) -> bool:
    return (Path(recipe.data.dir) / records.DATASET_JSON).is_file()


def run(recipe, run_dir=None, splits=None) -> Path:
    """Make sure `data.dir` holds a dataset with `splits` (default: every split the recipe reads).

    A generated data set is built in a temporary folder and renamed into place when complete, so an
    interrupted generation leaves nothing that looks finished.
    """
    data_dir = Path(recipe.data.dir)
    if not is_done(recipe):
        if recipe.data.generator is None:
            raise UserError(
                f"data.dir '{data_dir}' holds no {records.DATASET_JSON} and the recipe names no data.generator; "
                f"convert your images first, e.g. 'cpsd-tf data csv ... --out {data_dir}'"
            )
        from cpsd_tf.data import scenes

        with io.atomic_path(data_dir) as tmp:
            scenes.generate(tmp, recipe.data.scenes, seed=recipe.data.seed)
    info = records.load_info(data_dir)
    missing = [s for s in (splits or required_splits(recipe)) if s not in info.splits]
    if missing:
        raise UserError(
            f"data.dir '{data_dir}': the recipe needs split(s) {missing}, the data set has {sorted(info.splits)}"
        )
    return data_dir
