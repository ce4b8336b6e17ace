"""`cpsd-tf export`: a trained model as a TF Serving SavedModel, verified in a fresh process.

Layout (TF Serving's): `<out>/<version>/` with `saved_model.pb`, `variables/`, `assets/classes.txt`
(one class name per line, in output order) and `assets/thresholds.txt` (the model's calibrated
per-class thresholds, one per line in the same order; 0.5 each for a model without calibration);
version = 1 + the largest integer folder already in `<out>`.

Only verified models are published: the SavedModel is written into a hidden temporary folder
`<out>/.<version>.tmp-<random suffix>` (same file system, so publishing is one rename), checked there in a fresh
process, and renamed to `<out>/<version>/` only after the check passes. A failed check, an error or
Ctrl-C removes the temporary folder and publishes nothing. The rename never replaces a version that
appeared meanwhile (a concurrent export): it takes the next free number instead. Export writes only
under `<out>`, and deletes nothing there that it did not create.

Signatures (inputs and outputs are batched, so TF Serving's row format works):
    serving_default  images:  string [None], encoded JPEG/PNG bytes; decoded, resized and scaled to
                              [0, 1] in the graph exactly as evaluation does (`preprocess.preprocess_eval`).
                              The model carries its own further preprocessing (its backbone includes it).
    pixels           pixels:  float32 [None, S, S, 3], RGB already decoded and resized, in [0, 1].
    Both return      probabilities: float32 [None, m] (sigmoid of the logits),
                     labels:        bool    [None, m] (probability ≥ the class's calibrated threshold),
                     classes:       string  [None, m] (the class names, repeated per row).

The SavedModel holds plain TensorFlow ops and variables only: `tf.saved_model.load` works without
cpsd_tf (and without Keras custom objects), which `verify` checks in a child process that blocks the
import of cpsd_tf.
"""

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from cpsd_tf.errors import UserError

CLASSES_ASSET = "classes.txt"
THRESHOLDS_ASSET = "thresholds.txt"
SERVING_KEY = "serving_default"
PIXELS_KEY = "pixels"
TOLERANCE = 1e-5
_DECODE_ERROR = "image could not be decoded: expected JPEG or PNG bytes"
_PUBLISH_ATTEMPTS = 50


def _check_out_dir(out_dir):
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out must be a folder, found a file")


def next_version(out_dir):
    """1 + the largest integer-named folder in `out_dir` (1 when there is none); hidden temp folders don't count."""
    _check_out_dir(out_dir)
    out_dir = Path(out_dir)
    versions = [int(p.name) for p in out_dir.iterdir() if p.is_dir() and p.name.isdigit()] if out_dir.is_dir() else []
    return max(versions, default=0) + 1


def _serving_module(model, class_names, image_size, classes_file, thresholds, thresholds_file):
    """A `tf.Module` holding `model` with the two serving functions and the class-name/threshold assets."""
    import tensorflow as tf

    from cpsd_tf.data import preprocess

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="cpsd_tf_serving")
            self.model = model
            self.classes_asset = tf.saved_model.Asset(str(classes_file))
            self.class_names = tf.Variable(class_names, trainable=False, dtype=tf.string, name="class_names")
            self.thresholds_asset = tf.saved_model.Asset(str(thresholds_file))
            self.thresholds = tf.Variable(thresholds, trainable=False, dtype=tf.float32, name="thresholds")

        def _outputs(self, images):
            logits = tf.cast(self.model(images, training=False), tf.float32)
            rows = tf.shape(logits)[0]
            probabilities = tf.sigmoid(logits)
            return {
                "probabilities": probabilities,
                "labels": probabilities >= self.thresholds[tf.newaxis],
                "classes": tf.tile(self.class_names[tf.newaxis], tf.stack([rows, 1])),
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve_bytes(self, images):
            def one(encoded):
                # JPEG and PNG only, as the converters and `cpsd-tf predict` (`sources.jpeg_or_png`); other
                # bytes get a readable message for TF Serving clients (decode_image's own names no image).
                from cpsd_tf.data.sources import jpeg_or_png

                check = tf.debugging.Assert(jpeg_or_png(encoded), [_DECODE_ERROR], name="decodable")
                with tf.control_dependencies([check]):
                    return preprocess.preprocess_eval(tf.identity(encoded), image_size)

            spec = tf.TensorSpec([image_size, image_size, 3], tf.float32)
            images = tf.map_fn(one, images, fn_output_signature=spec)
            return self._outputs(images)

        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="pixels")])
        def serve_pixels(self, pixels):
            return self._outputs(pixels)

    return Serving()


def write_saved_model(model, class_names, path, thresholds=None):
    """Write `model` as a SavedModel into `path` (a new or empty folder) with the serving signatures and asset.

    Not atomic by itself: `run` points it at a hidden temporary folder and publishes that folder only
    after `verify` passes.

    Args:
        model: a Keras model taking float32 [None, S, S, 3] images in [0, 1] and returning logits [None, m].
        class_names: list of str, the m output names.
        path: str or Path, the SavedModel folder to fill (e.g. `<out>/.1.tmp-1a2b3c4d`).
        thresholds: array-like [m] of calibrated per-class probability thresholds, or None for 0.5 each.
            Defaults to None.
    """
    import tensorflow as tf

    image_size = int(model.input_shape[1])
    if len(class_names) != int(model.output_shape[-1]):
        raise UserError(f"model has {model.output_shape[-1]} outputs but {len(class_names)} class names were given")
    thresholds = np.full(len(class_names), 0.5, np.float32) if thresholds is None else np.asarray(thresholds, np.float32)
    if thresholds.shape != (len(class_names),):
        raise UserError(f"{len(thresholds)} thresholds were given for {len(class_names)} classes")
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{path}: a SavedModel is written into a new or empty folder, this one is not")
    # The asset's source file lives outside `path`: tf.saved_model.save copies it into `path/assets/`.
    with tempfile.TemporaryDirectory(prefix="cpsd-tf-assets-") as staging:
        classes_file = Path(staging) / CLASSES_ASSET
        classes_file.write_text("".join(f"{c}\n" for c in class_names))
        thresholds_file = Path(staging) / THRESHOLDS_ASSET
        thresholds_file.write_text("".join(f"{float(t)!r}\n" for t in thresholds))
        module = _serving_module(model, list(class_names), image_size, classes_file, thresholds, thresholds_file)
        signatures = {
            SERVING_KEY: module.serve_bytes.get_concrete_function(),
            PIXELS_KEY: module.serve_pixels.get_concrete_function(),
        }
        tf.saved_model.save(module, str(path), signatures=signatures)
    return path


# The child process of `verify`: no cpsd_tf (a None entry in sys.modules makes `import cpsd_tf` fail),
# plain TensorFlow only. It prints one JSON line.
_VERIFY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.modules["cpsd_tf"] = None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    path, images_file, out_file = sys.argv[1:4]
    loaded = tf.saved_model.load(path)
    images = [bytes.fromhex(h) for h in json.loads(open(images_file).read())]
    outputs = loaded.signatures["serving_default"](images=tf.constant(images))
    probabilities = outputs["probabilities"].numpy()
    np.save(out_file, probabilities)
    classes = [c.decode() for c in outputs["classes"].numpy()[0]]
    asset = open(os.path.join(path, "assets", "classes.txt")).read().splitlines()
    cuts = np.array([float(v) for v in open(os.path.join(path, "assets", "thresholds.txt")).read().split()], np.float32)
    labels_agree = bool(np.array_equal(outputs["labels"].numpy(), probabilities >= cuts[None]))
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    sigs = {k: v for k, v in proto.meta_graphs[0].signature_def.items() if not k.startswith("__")}
    def info(t):
        dims = [d.size for d in t.tensor_shape.dim]
        return {"dtype": types_pb2.DataType.Name(t.dtype), "shape": dims, "name": t.name}
    signatures = {k: {"inputs": {n: info(t) for n, t in v.inputs.items()},
                      "outputs": {n: info(t) for n, t in v.outputs.items()},
                      "method": v.method_name} for k, v in sigs.items()}
    try:
        loaded.signatures["serving_default"](images=tf.constant([b"these are not image bytes"]))
        bad_bytes = "accepted"
    except tf.errors.InvalidArgumentError as e:
        lines = [l.strip() for l in e.message.splitlines() if l.strip()]
        bad_bytes = next((l for l in lines if "could not be decoded" in l), lines[0] if lines else "rejected")
    print(json.dumps({"classes": classes, "asset": asset, "signatures": signatures, "bad_bytes": bad_bytes,
                      "labels_agree": labels_agree, "cpsd_tf_importable": False}))
    """
)


def format_signatures(signatures):
    """Signature dict (from the child process) -> text laid out like `saved_model_cli show --all`."""
    lines = []
    for key in sorted(signatures, key=lambda k: (k != SERVING_KEY, k)):
        sig = signatures[key]
        lines.append(f"signature_def['{key}']:")
        for kind in ("inputs", "outputs"):
            lines.append(f"  The given SavedModel SignatureDef contains the following {kind[:-1]}(s):")
            for name, t in sorted(sig[kind].items()):
                shape = "(" + ", ".join(str(d) for d in t["shape"]) + ("," if len(t["shape"]) == 1 else "") + ")"
                lines += [f"    {kind}['{name}'] tensor_info:", f"        dtype: {t['dtype']}",
                          f"        shape: {shape}", f"        name: {t['name']}"]
        lines.append(f"  Method name is: {sig['method']}")
    return "\n".join(lines)


def verify(path, model, images):
    """Reload the SavedModel at `path` in a fresh process without cpsd_tf and compare with `model`.

    The child gets absolute paths and runs in a scratch folder of the system's temporary directory, so
    a relative `path` works and nothing is written beside the SavedModel.

    Args:
        path: the SavedModel folder.
        model: the Keras model that was exported.
        images: list of bytes, encoded JPEG/PNG images to run through both.

    Returns:
        dict: max_abs_diff, images, classes (from the served outputs), signatures, bad_bytes (the
        error message a request with undecodable bytes got), labels_agree (the `labels` output is the
        probabilities at the thresholds asset), passed (max_abs_diff <= TOLERANCE and labels_agree).
    """
    import tensorflow as tf

    from cpsd_tf.data import preprocess

    image_size = int(model.input_shape[1])
    batch = tf.stack([preprocess.preprocess_eval(tf.constant(b), image_size) for b in images])
    expected = tf.sigmoid(tf.cast(model(batch, training=False), tf.float32)).numpy()
    path = Path(os.path.abspath(path))
    with tempfile.TemporaryDirectory(prefix="cpsd-tf-verify-") as scratch:
        scratch = Path(scratch)
        (scratch / "images.json").write_text(json.dumps([b.hex() for b in images]))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(
            [sys.executable, "-c", _VERIFY_SCRIPT, str(path), str(scratch / "images.json"), str(scratch / "probs.npy")],
            capture_output=True, text=True, env=env, cwd=str(scratch),
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"{path}: the exported SavedModel failed to load or run in a fresh process ({tail})")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        served = np.load(scratch / "probs.npy")
    diff = float(np.max(np.abs(served - expected))) if served.shape == expected.shape else float("inf")
    report.update(max_abs_diff=diff, images=len(images), passed=diff <= TOLERANCE and report["labels_agree"])
    return report


def _sample_images(recipe, count=8):
    """Up to `count` encoded images from the run's first evaluation split, else random PNGs."""
    import tensorflow as tf

    from cpsd_tf.data import records

    data = recipe.data
    for split in list(data.eval_splits) + [data.val_split, data.train_split]:
        try:
            out = [r["image"] for r, _ in zip(records.iter_records(data.dir, split), range(count))]
        except (UserError, OSError):
            continue
        if out:
            return out
    rng = np.random.default_rng(0)
    size = data.image_size
    return [tf.io.encode_png(rng.integers(0, 256, (size + 7, size + 3, 3), dtype=np.uint8)).numpy() for _ in range(count)]


def _dir_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _make_temp_folder(out_dir, version):
    """Create `<out_dir>/.<version>.tmp-<random>` (mode from the umask, unlike mkdtemp's 0700)."""
    for _ in range(100):
        folder = out_dir / f".{version}.tmp-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise UserError(f"{out_dir}: could not create a temporary export folder")


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(src, dst):
    """Rename `src` to `dst`; `FileExistsError` when `dst` exists, whatever it is (never replaces it).

    Uses Linux `renameat2(RENAME_NOREPLACE)` (atomic); where that is missing, a check then `os.rename`
    (which still refuses a non-empty folder, i.e. a version another export published meanwhile).
    """
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the file system does not support the flag
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _publish(folder, out_dir):
    """Rename the verified `folder` to `<out_dir>/<next version>`; a version that appeared meanwhile is skipped."""
    version = next_version(out_dir)
    for _ in range(_PUBLISH_ATTEMPTS):
        target = out_dir / str(version)
        try:
            _rename_noreplace(folder, target)
            return version
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        version = max(version + 1, next_version(out_dir))
    raise UserError(f"{out_dir}: no free version number after {_PUBLISH_ATTEMPTS} attempts (other exports running?)")


def run(recipe, run_dir, model=None, out=None):
    """Export `model` (default: the run's student) into `<out>/<next version>/`, verify it, print a report.

    Reads the run directory, writes only under `out`: the SavedModel goes to a hidden temporary folder,
    is verified there in a fresh process and is renamed to its version folder only on PASS.

    Returns:
        dict: path, version, size_bytes and the `verify` report.
    """
    import click

    from cpsd_tf import rundir, thresholds

    if out is None:
        raise UserError("export needs --out DIR (the SavedModel base folder)")
    model_path = Path(model) if model else Path(run_dir) / rundir.STUDENT_DIR / rundir.MODEL_FILE
    if not model_path.exists():
        raise UserError(f"{model_path}: no trained model to export (run `cpsd-tf distill` first, or pass --model)")
    _check_out_dir(out)
    keras_model = rundir.load_model(model_path)
    class_names = rundir.model_classes(model_path, int(keras_model.output_shape[-1]))
    cuts = thresholds.read(model_path if model_path.is_dir() else model_path.parent)
    images = _sample_images(recipe)

    out_dir = Path(os.path.abspath(out))  # absolute: the fresh-process check runs with another cwd
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the --out folder ({e.strerror})") from None
    folder, version = None, None
    try:
        folder = _make_temp_folder(out_dir, next_version(out_dir))
        click.echo(f"Exporting {model_path} -> {out} (verified in {folder.name}, then published as the next version)")
        write_saved_model(keras_model, class_names, folder, cuts)
        if cuts is None:
            click.echo(f"note: {model_path} has no calibrated thresholds ({thresholds.THRESHOLDS_FILE}); the "
                       f"'labels' output uses 0.5 (re-run its stage, e.g. 'cpsd-tf run', to calibrate it)")
        try:
            report = verify(folder, keras_model, images)
        except UserError as e:
            raise UserError(f"{out}: nothing published: {e.format_message()}") from None
        click.echo(format_signatures(report["signatures"]))
        click.echo("")
        status = "PASS" if report["passed"] else "FAIL"
        click.echo(
            f"Fresh-process check (cpsd_tf not importable): {report['images']} images, "
            f"max |Δprobability| = {report['max_abs_diff']:.2e} (tolerance {TOLERANCE:g}): {status}"
        )
        click.echo(f"Undecodable bytes are refused: {report['bad_bytes']}")
        if not report["labels_agree"]:
            raise UserError(f"{out}: nothing published: the served 'labels' differ from the probabilities at the "
                            f"thresholds asset")
        if not report["passed"]:
            raise UserError(
                f"{out}: nothing published: served probabilities differ from the Keras model's "
                f"by {report['max_abs_diff']:.2e} (tolerance {TOLERANCE:g})"
            )
        version = _publish(folder, out_dir)
    finally:
        if version is None:  # failed, refused or interrupted: remove what this export created, nothing else
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()  # only if still empty
    target = Path(out) / str(version)
    size = _dir_size(target)
    click.echo(f"SavedModel: {target} ({size / 1e6:.2f} MB), assets: {target / 'assets' / CLASSES_ASSET}, "
               f"{target / 'assets' / THRESHOLDS_ASSET}")
    return {"path": str(target), "version": version, "size_bytes": size, **report}

