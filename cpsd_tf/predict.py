"""`cpsd-tf predict`: labels of image files from a `.keras` model or an exported SavedModel.

Both kinds of model see the same input: the file's bytes, decoded, resized and scaled to [0, 1] RGB as
evaluation does (`preprocess.preprocess_eval`); the model carries any further preprocessing itself.
A SavedModel runs its own `serving_default` signature, so predict exercises exactly what TF Serving would.

A label is listed when its probability reaches the model's calibrated threshold for that class
(`thresholds.json` beside a `.keras` model, the `thresholds.txt` asset of a SavedModel; see
`cpsd_tf.thresholds`); a model without them uses 0.5, and `--threshold` sets one cut-off for every class.
"""

import json
from pathlib import Path

import click
import numpy as np

from cpsd_tf.errors import UserError


def _saved_model_dir(path):
    """`path` itself, or its highest version folder, when it holds a SavedModel; else None."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if path.is_dir():
        versions = [p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
        if versions:
            return max(versions, key=lambda p: int(p.name))
    return None


class Predictor:
    """Probabilities of encoded images from one model file or folder.

    Args:
        path: a `.keras` file, a trained model's folder (holding `model.keras`), a SavedModel folder or
            an export base folder (its highest version is used).

    Example:
        p = Predictor("runs/demo/student")
        probs = p.predict([open("img.png", "rb").read()])  # float32 [1, m]; names in p.classes
    """

    def __init__(self, path):
        from cpsd_tf import export, rundir

        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: no such model file or folder")
        saved = _saved_model_dir(self.path)
        if saved is not None:
            import tensorflow as tf

            self.kind = "savedmodel"
            self.path = saved
            loaded = tf.saved_model.load(str(saved))
            if export.SERVING_KEY not in loaded.signatures:
                raise UserError(f"{saved}: SavedModel has no '{export.SERVING_KEY}' signature")
            self._serve = loaded.signatures[export.SERVING_KEY]
            self._loaded = loaded  # keeps the variables alive
            classes_file = saved / "assets" / export.CLASSES_ASSET
            self.classes = classes_file.read_text().splitlines() if classes_file.is_file() else None
            thresholds_file = saved / "assets" / export.THRESHOLDS_ASSET
            self.thresholds = (np.array([float(v) for v in thresholds_file.read_text().split()], np.float32)
                               if thresholds_file.is_file() else None)
        else:
            from cpsd_tf import thresholds

            self.kind = "keras"
            self.model = rundir.load_model(self.path)
            self.image_size = int(self.model.input_shape[1])
            self.classes = rundir.model_classes(self.path, int(self.model.output_shape[-1]))
            self.thresholds = thresholds.read(self.path if self.path.is_dir() else self.path.parent)
        if self.thresholds is not None and self.classes is not None and len(self.thresholds) != len(self.classes):
            raise UserError(f"{self.path}: {len(self.thresholds)} calibrated thresholds for {len(self.classes)} classes")

    def predict(self, images, names=None):
        """Probabilities float32 [len(images), m] of a list of encoded images (bytes).

        `names` (same length, e.g. file paths) are used in the error for bytes that do not decode.
        """
        import tensorflow as tf

        from cpsd_tf.data import preprocess

        names = names or [f"image {i}" for i in range(len(images))]
        for data, name in zip(images, names):
            check_image(data, name)
        if self.kind == "savedmodel":
            out = self._serve(images=tf.constant(list(images)))
            if self.classes is None:
                self.classes = [c.decode() for c in out["classes"].numpy()[0]]
            return out["probabilities"].numpy()
        batch = tf.stack([preprocess.preprocess_eval(tf.constant(b), self.image_size) for b in images])
        return tf.sigmoid(tf.cast(self.model(batch, training=False), tf.float32)).numpy()


def check_image(data, name):
    """Refuse bytes that are not a decodable JPEG or PNG image (the converters' formats, `sources.is_jpeg_or_png`)."""
    import tensorflow as tf

    from cpsd_tf.data import sources

    other = sources.other_format(data)
    if other is not None:
        raise UserError(f"{name}: is {other}, not JPEG or PNG")
    try:
        if not sources.is_jpeg_or_png(data):
            raise ValueError("not JPEG or PNG")
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError):
        raise UserError(f"{name}: could not be decoded as an image (expected JPEG or PNG bytes)") from None


def labels_above(probs, classes, threshold, top=None):
    """[(class, probability)] of one row at or above `threshold` (one number, or one per class), most
    probable first (at most `top`)."""
    order = np.argsort(-probs, kind="stable")
    cut = np.broadcast_to(np.asarray(threshold, dtype=np.float64), probs.shape)
    out = [(classes[i], float(probs[i])) for i in order if probs[i] >= cut[i]]
    return out[:top] if top else out


def run(model, images, threshold=None, top=None, as_json=False, batch_size=32):
    """Predict every image file and print a table (or JSON); return the JSON-able result list.

    `threshold` None uses the model's calibrated per-class thresholds (0.5 when it has none).
    """
    predictor = Predictor(model)
    if threshold is None and predictor.thresholds is not None:
        threshold, cut_name = predictor.thresholds, "the calibrated threshold"
    else:
        threshold = 0.5 if threshold is None else threshold
        cut_name = f"{threshold:g}"
    results = []
    for start in range(0, len(images), batch_size):
        chunk = [Path(p) for p in images[start : start + batch_size]]
        probs = predictor.predict([p.read_bytes() for p in chunk], names=[str(p) for p in chunk])
        for path, row in zip(chunk, probs):
            results.append({
                "image": str(path),
                "labels": [{"label": c, "probability": round(p, 6)} for c, p in labels_above(row, predictor.classes, threshold, top)],
            })
    if as_json:
        shown = np.asarray(threshold).tolist()
        shown = dict(zip(predictor.classes, shown)) if isinstance(shown, list) else shown
        click.echo(json.dumps({"model": str(predictor.path), "threshold": shown, "predictions": results}, indent=2))
    else:
        click.echo(format_table(results, cut_name))
    return results


def format_table(results, cut_name):
    """Predictions -> text: one block per image, one line per label at or above its threshold."""
    lines = []
    for r in results:
        lines.append(r["image"])
        if not r["labels"]:
            lines.append(f"  (no label above {cut_name})")
        width = max((len(x["label"]) for x in r["labels"]), default=0)
        lines += [f"  {x['label']:<{width}}  {x['probability']:.3f}" for x in r["labels"]]
    return "\n".join(lines)
