"""The one owner of the run directory: every path of its layout, model-folder I/O, locks and provenance.

Stages ask this module where things are and whether they are finished; they never ask each other.

    <run_dir>/recipe.yaml, partition.json, partition.png, partition_random.json
    <run_dir>/baseline/, baseline_equal_compute/, teachers/<set>-<i>/, student/, ablations/<name>/
    <run_dir>/logits/<set>.npy, logits/eval/<set>-<split>.npy, results.json, results.md

A model folder holds `model.keras`, `metrics.json` and `provenance.json` when finished, and `.lock` (an
OS file lock, released by the kernel when its process ends, however it ends).
"""

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path

from cpsd_tf.errors import UserError

RECIPE_FILE = "recipe.yaml"
PARTITION_FILE = "partition.json"
PARTITION_PLOT = "partition.png"
RANDOM_PARTITION_FILE = "partition_random.json"
BASELINE_DIR = "baseline"
EQUAL_COMPUTE_DIR = "baseline_equal_compute"
TEACHERS_DIR = "teachers"
STUDENT_DIR = "student"
ABLATIONS_DIR = "ablations"
LOGITS_DIR = "logits"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
PROVENANCE_FILE = "provenance.json"
LOCK_FILE = ".lock"
PRETRAIN_DIR = "pretrain"
PRETRAIN_WEIGHTS = "backbone.weights.h5"
PRETRAIN_KEYWORD = "pretrain"  # `model.weights: pretrain`


# --- model folders -------------------------------------------------------------------------------------


def model_is_done(model_dir) -> bool:
    """A model folder is finished when its model and its metrics are both there (written last)."""
    return (Path(model_dir) / MODEL_FILE).is_file() and (Path(model_dir) / METRICS_FILE).is_file()


def _model_folder(path):
    path = Path(path)
    return path if path.is_dir() else path.parent


def load_model(path):
    """Load a `.keras` model written by cpsd-tf (a file or its folder); a bad path is a `UserError`."""
    import keras

    import cpsd_tf.losses  # noqa: F401  (registers the losses a compiled model may name)
    import cpsd_tf.models  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a loadable Keras model ({str(e).splitlines()[0]})") from None


def model_metrics(path):
    """The `metrics.json` dict of a model folder (or of the folder of a model file), or {}."""
    meta = _model_folder(path) / METRICS_FILE
    if meta.is_file():
        try:
            return json.loads(meta.read_text())
        except ValueError:
            return {}
    return {}


def model_subset(path):
    """The class columns a model predicts (a teacher's cluster), or None for all classes."""
    return model_metrics(path).get("subset")


def model_classes(path, num_outputs):
    """Output names of a trained model: its `metrics.json`, else class-0 … class-(m-1)."""
    classes = model_metrics(path).get("classes")
    if classes and len(classes) == num_outputs:
        return list(classes)
    return [f"class-{i}" for i in range(num_outputs)]


# --- locks ---------------------------------------------------------------------------------------------


class Busy(UserError):
    """Another process holds the lock of an artefact."""


@contextlib.contextmanager
def lock(folder, what):
    """Hold the OS lock of `folder` (created if needed) while the block runs; busy -> `Busy`.

    `flock` locks die with their process (kill -9 included), so a crashed run never leaves a stale lock.
    The lock file names its holder (pid@host) for the message a second process prints.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise Busy(f"{what} is being written by {holder} (lock {path}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- the run folder itself -----------------------------------------------------------------------------


def is_run_dir(run_dir) -> bool:
    """A folder cpsd-tf made: it holds the resolved recipe."""
    return (Path(run_dir) / RECIPE_FILE).is_file()


def claim(run_dir):
    """Create the run directory, or accept an existing one that is empty or a cpsd-tf run; refuse others.

    Writing into a folder that holds a user's files could overwrite or delete them, so a non-empty folder
    without `recipe.yaml` is refused.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory '{run_dir}' is a file; choose a folder with --run-dir")
    if run_dir.is_dir() and not is_run_dir(run_dir) and any(run_dir.iterdir()):
        raise UserError(
            f"run directory '{run_dir}' holds files cpsd-tf did not write (no {RECIPE_FILE}); "
            f"choose a new or empty folder with --run-dir"
        )
    created = not run_dir.exists()
    if created or not any(run_dir.iterdir()):
        _claimed_new.append((run_dir, created))
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


_claimed_new = []  # (run directory, whether this process created the folder) claimed new or empty


def forget_claims():
    """Start of a command: run directories claimed by an earlier command of this process are not its own."""
    _claimed_new.clear()


def discard_unused_claims():
    """After a failed command: a run directory it claimed new or empty and left holding only the
    `recipe.yaml` it wrote is put back as it was (the file removed, a folder it created removed), so a
    refused stage leaves no run behind. Anything else in the folder keeps it all."""
    while _claimed_new:
        run_dir, created = _claimed_new.pop()
        try:
            if [p.name for p in run_dir.iterdir()] != [RECIPE_FILE]:
                continue
            (run_dir / RECIPE_FILE).unlink()
            if created:
                run_dir.rmdir()
        except OSError:
            continue


def require_run_dir(run_dir):
    """An existing run directory, for commands that only read one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"'{run_dir}' is not a cpsd-tf run directory (no such folder); train one first, "
                        f"e.g. 'cpsd-tf run --recipe R --run-dir {run_dir}'")
    return run_dir


# --- paths of the layout -------------------------------------------------------------------------------


def partition_path(run_dir, teacher_set="cgp"):
    """The partition file a teacher set's clusters come from."""
    return Path(run_dir) / (RANDOM_PARTITION_FILE if teacher_set == "random" else PARTITION_FILE)


def baseline_dir(run_dir):
    return Path(run_dir) / BASELINE_DIR


def equal_compute_dir(run_dir):
    return Path(run_dir) / EQUAL_COMPUTE_DIR


def logits_path(run_dir, teacher_set, split=None):
    """Merged logits of a set: the train split at the contract path `logits/<set>.npy`, others under eval/."""
    base = Path(run_dir) / LOGITS_DIR
    return base / f"{teacher_set}.npy" if split is None else base / "eval" / f"{teacher_set}-{split}.npy"


def pretrain_dir(run_dir):
    """`<run_dir>/pretrain/`: the backbone pretrained on the single-object split (`cpsd-tf pretrain`)."""
    return Path(run_dir) / PRETRAIN_DIR


def pretrain_weights_path(run_dir):
    return pretrain_dir(run_dir) / PRETRAIN_WEIGHTS


def resolve_weights(recipe, run_dir):
    """The recipe with `model.weights: pretrain` replaced by this run's pretrained backbone file."""
    if recipe.model.weights != PRETRAIN_KEYWORD:
        return recipe
    model = recipe.model.model_copy(update={"weights": str(pretrain_weights_path(run_dir))})
    return recipe.model_copy(update={"model": model})


def pretrain_inputs(recipe, run_dir):
    """{"pretrain": id} for a model that starts from this run's pretrained backbone, else {}: a model made
    from an earlier pretraining is refused once the pretraining is redone."""
    if recipe.model.weights not in (PRETRAIN_KEYWORD, str(pretrain_weights_path(run_dir))):
        return {}
    return {"pretrain": artefact_id(pretrain_dir(run_dir))}


def views_path(run_dir, teacher_set, mixed=False):
    """Teacher logits of every (data pass, record) augmented view: `logits/views/<set>.npy`; with `mixed`,
    of every (batch, row) of the mixed training stream (`distill.views`): `logits/views/<set>.mixed.npy`."""
    return Path(run_dir) / LOGITS_DIR / "views" / f"{teacher_set}{'.mixed' if mixed else ''}.npy"


# --- teachers and students: one registry ---------------------------------------------------------------

# ablation name -> teacher sets (paper Table 3)
VARIANTS = {
    "cpsd": ("cgp", "dgp"),
    "cgpd": ("cgp",),
    "dgpd": ("dgp",),
    "sd": ("baseline",),
    "random": ("random",),
}
# teacher set -> where its members come from: a partition's clusters, or the baseline alone (SD)
TEACHER_SETS = {
    "cgp": ("partition", PARTITION_FILE, "cgp"),
    "dgp": ("partition", PARTITION_FILE, "dgp"),
    "random": ("partition", RANDOM_PARTITION_FILE, "cgp"),
    "baseline": ("model", BASELINE_DIR, None),
}


def variant_name(teacher_sets):
    """The ablation name of a list of teacher sets (cpsd, cgpd, …), else 'student'."""
    for name, sets in VARIANTS.items():
        if sorted(teacher_sets) == sorted(sets):
            return name
    return "student"


def _read_partition(path, teacher_set):
    if not path.is_file():
        raise UserError(f"{path}: no partition yet; run 'cpsd-tf partition --recipe R' first")
    try:
        return json.loads(path.read_text())[teacher_set]
    except (ValueError, KeyError):
        raise UserError(f"{path}: not a partition file (no '{teacher_set}' clusters); redo it with "
                        f"'cpsd-tf partition --recipe R --force'") from None


def teachers_of(run_dir, teacher_set):
    """[(name, model folder, class indices or None for all)] of a teacher set, read from the run directory."""
    if teacher_set not in TEACHER_SETS:
        raise UserError(f"unknown teacher set '{teacher_set}'; choose one of {', '.join(TEACHER_SETS)}")
    kind, source, key = TEACHER_SETS[teacher_set]
    run_dir = Path(run_dir)
    if kind == "model":
        return [(teacher_set, run_dir / source, None)]
    clusters = _read_partition(run_dir / source, key)
    return [(f"{teacher_set}-{i}", run_dir / TEACHERS_DIR / f"{teacher_set}-{i}", list(c))
            for i, c in enumerate(clusters)]


def needed_sets(recipe):
    """Teacher sets the recipe's student and ablations distil from, in a stable order."""
    sets = list(recipe.distill.teachers)
    for variant in recipe.ablation:
        sets += VARIANTS[variant]
    return list(dict.fromkeys(sets))


def trained_sets(recipe):
    """Sub-task teacher sets the run trains: cgp and dgp always (CPSD's teachers), random when needed."""
    return [s for s in dict.fromkeys(["cgp", "dgp", *needed_sets(recipe)]) if TEACHER_SETS[s][0] == "partition"]


def teacher_list(recipe, run_dir):
    """Every sub-task teacher the run trains (not the baseline), in order cgp-*, dgp-*, random-*."""
    return [t for s in trained_sets(recipe) for t in teachers_of(run_dir, s)]


def students(recipe, run_dir):
    """[(name, teacher sets, model folder)]: the recipe's student first, then the ablation variants."""
    main = variant_name(recipe.distill.teachers)
    out = [(main, tuple(recipe.distill.teachers), Path(run_dir) / STUDENT_DIR)]
    for variant in recipe.ablation:
        if variant != main:
            out.append((variant, VARIANTS[variant], Path(run_dir) / ABLATIONS_DIR / variant))
    return out


def full_label_models(run_dir):
    """[(results name, model folder)] of the finished full-label models in a run, named by their records.

    A student's name comes from its own provenance (the teacher sets it was trained with), never from the
    recipe of the command that reads it, so a changed recipe cannot relabel a finished model.
    """
    run_dir = Path(run_dir)
    found = [("baseline", baseline_dir(run_dir)), ("baseline_equal_compute", equal_compute_dir(run_dir))]
    folders = [run_dir / STUDENT_DIR]
    if (run_dir / ABLATIONS_DIR).is_dir():
        folders += sorted(p for p in (run_dir / ABLATIONS_DIR).iterdir() if p.is_dir())
    for folder in folders:
        sets = read_provenance(folder).get("values", {}).get("distill.teachers")
        found.append((variant_name(sets) if sets else folder.name, folder))
    return [(name, d) for name, d in found if model_is_done(d)]


# --- provenance: the recipe values an artefact was made from -------------------------------------------


def flatten(tree, prefix=""):
    """{'a': {'b': 1}} -> {'a.b': 1} (lists stay values)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_values(recipe, prefixes):
    """The resolved recipe's values under the given dotted prefixes, flat: {'train.lr': 0.01, …}."""
    flat = flatten(recipe.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def _provenance_file(artefact):
    artefact = Path(artefact)
    if artefact.suffix:  # a file: partition.json -> partition.provenance.json
        return artefact.with_name(artefact.stem + ".provenance.json")
    return artefact / PROVENANCE_FILE


def read_provenance(artefact):
    path = _provenance_file(artefact)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def write_provenance(artefact, values, inputs=None):
    """Record what `artefact` is made from (atomically, beside or inside it). Returns its id."""
    from cpsd_tf import io

    import uuid

    record = {"id": uuid.uuid4().hex[:12], "values": values, "inputs": inputs or {}}
    io.write_json(_provenance_file(artefact), record)
    return record["id"]


def check_provenance(artefact, values, inputs=None, *, what, command):
    """Refuse when `artefact` was made from other values than the ones requested now.

    Args:
        artefact: path of the file or folder.
        values: {dotted key: value} the artefact depends on, from the current recipe.
        inputs: {name: id} of the upstream artefacts it depends on. Defaults to None.
        what: str, the artefact in messages ("teacher cgp-0").
        command: str, the verb that redoes it ("teachers").
    Returns:
        True when a record exists and agrees, False when there is no record yet.
    """
    record = read_provenance(artefact)
    if not record:
        return False
    old = dict(record.get("values", {}))
    for key in sorted(set(old) | set(values)):
        if key in old and key in values and old[key] != values[key]:
            raise UserError(
                f"{what} in {artefact} was made with {key}={json.dumps(old[key])}, this recipe asks "
                f"{key}={json.dumps(values[key])}; use a new --run-dir, or 'cpsd-tf {command} --force' to redo it"
            )
    for name, ident in (inputs or {}).items():
        recorded = record.get("inputs", {}).get(name)
        if recorded is not None and recorded != ident:
            raise UserError(
                f"{what} in {artefact} was made from another {name} (since redone); "
                f"use 'cpsd-tf {command} --force' to redo it, or a new --run-dir"
            )
    return True


def artefact_id(artefact):
    """The id recorded for an artefact (changes whenever it is redone), or None."""
    return read_provenance(artefact).get("id")


def remove_artefact(artefact):
    """Delete a finished artefact cpsd-tf made (`--force`): only folders/files carrying our provenance."""
    import shutil

    artefact = Path(artefact)
    record = _provenance_file(artefact)
    if not record.is_file():
        return
    if artefact.is_dir():
        for name in (MODEL_FILE, METRICS_FILE, PROVENANCE_FILE, "selection.json", "best.weights.h5",
                     "thresholds.json"):
            (artefact / name).unlink(missing_ok=True)
        for name in ("backup", "tensorboard"):
            shutil.rmtree(artefact / name, ignore_errors=True)
    else:
        artefact.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
