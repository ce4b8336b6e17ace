"""TFRecord records and `dataset.json` (the contract in DESIGN.md).

One `tf.train.Example` per image: `image/encoded` (JPEG/PNG bytes), `image/id` (bytes), `index` (int64,
dense 0..N-1 within the split) and `labels` (int64 list, possibly empty). Shards are named
`<split>-00000-of-000NN.tfrecord`; `dataset.json` beside them holds `{"classes": [...],
"splits": {"train": N, ...}}`.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cpsd_tf import io
from cpsd_tf.errors import UserError, tf_message
from cpsd_tf.progress import progress_bar

DATASET_JSON = "dataset.json"
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")

# Every shard `shard_paths` handed out in this process, in order (a dict as an ordered set): TensorFlow's
# DataLossError says neither the file nor the record, so `locate_corruption` re-reads these to find them.
_OPENED_SHARDS: dict = {}


@dataclasses.dataclass(frozen=True)
class Record:
    """One image of a split, before it gets its dense `index`."""

    image: bytes
    image_id: str
    labels: Sequence[int]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `dataset.json` says: class names in order and the size of each split."""

    classes: list
    splits: dict

    @property
    def num_classes(self):
        return len(self.classes)


def _tf():
    # TensorFlow is imported lazily (and quietly) so `cpsd-tf --help` and user errors stay fast and clean.
    from cpsd_tf.quiet import import_tensorflow

    return import_tensorflow()


def encode_example(image: bytes, image_id: str, index: int, labels: Sequence[int]) -> bytes:
    """Serialise one record as a `tf.train.Example`."""
    tf = _tf()
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "image/id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode("utf-8")])),
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(index)])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in labels])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec():
    """The parsing spec of the record schema (`labels` comes back as a `tf.SparseTensor`)."""
    tf = _tf()
    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/id": tf.io.FixedLenFeature([], tf.string),
        "index": tf.io.FixedLenFeature([], tf.int64),
        "labels": tf.io.VarLenFeature(tf.int64),
    }


def parse_example(serialized):
    """Parse one serialised record into a dict of dense tensors (works eagerly and in `Dataset.map`)."""
    tf = _tf()
    ex = tf.io.parse_single_example(serialized, feature_spec())
    return {
        "image": ex["image/encoded"],
        "id": ex["image/id"],
        "index": ex["index"],
        "labels": tf.sparse.to_dense(ex["labels"]),
    }


def load_info(data_dir) -> DatasetInfo:
    """Read `dataset.json` of `data_dir`; a missing or malformed file is a `UserError`."""
    path = Path(data_dir) / DATASET_JSON
    if not path.is_file():
        raise UserError(f"{path}: no such file (is '{data_dir}' a cpsd-tf data folder?)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list) or not isinstance(meta.get("splits"), dict):
        raise UserError(f"{path}: expected an object with 'classes' (list) and 'splits' (object)")
    return DatasetInfo(classes=[str(c) for c in meta["classes"]], splits={k: int(v) for k, v in meta["splits"].items()})


def shard_paths(data_dir, split) -> list:
    """The shard files of `split` in order; an unknown split or missing shard is a `UserError`."""
    info = load_info(data_dir)
    if split not in info.splits:
        raise UserError(
            f"{Path(data_dir) / DATASET_JSON}: no split '{split}'; splits are {sorted(info.splits)}"
        )
    paths = sorted(Path(data_dir).glob(f"{split}-*-of-*.tfrecord"))
    paths = [p for p in paths if re.fullmatch(rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}\.tfrecord", p.name)]
    if not paths:
        raise UserError(f"{data_dir}: split '{split}' is listed in {DATASET_JSON} but has no shard files")
    expected = int(paths[0].name.rsplit("-of-", 1)[1].split(".")[0])
    if len(paths) != expected:
        raise UserError(f"{data_dir}: split '{split}' should have {expected} shards, found {len(paths)}")
    paths = [str(p) for p in paths]
    _OPENED_SHARDS.update(dict.fromkeys(paths))
    return paths


def opened_shards() -> list:
    """The shard files `shard_paths` returned in this process so far, in order of first use."""
    return list(_OPENED_SHARDS)


def locate_corruption(paths=None):
    """Find the first shard record that cannot be read; return (shard, record number, detail) or None.

    Each shard is read on its own, record by record (CRCs checked), until TensorFlow raises a
    `DataLossError` (truncated file, flipped bits). A shard that is now missing is skipped: this is
    called after a failure, to name its cause, and must not fail itself.

    Args:
        paths: list of str/Path or None, the shards to check. Defaults to None: every shard
            `shard_paths` returned in this process (`opened_shards()`).

    Returns:
        (shard path str, record number counting from 0 within the shard, TensorFlow's message), or None
        when every shard reads to its end.

    Example:
        locate_corruption(["data/train-00000-of-00001.tfrecord"])
        # ("data/train-00000-of-00001.tfrecord", 9, "truncated record at 1746' failed with ...")
    """
    tf = _tf()
    for shard in opened_shards() if paths is None else [str(p) for p in paths]:
        if not os.path.isfile(shard):
            continue
        count = 0
        try:
            for _ in tf.data.TFRecordDataset(shard, buffer_size=1 << 20):
                count += 1
        except tf.errors.DataLossError as e:
            message = tf_message(e)
            # TF says "truncated record at 5379' failed with Read less bytes than requested": keep the gist.
            found = re.search(r"(truncated|corrupted) record at (\d+)", message)
            return shard, count, f"{found[1]} record at byte {found[2]}" if found else message
    return None


def read_labels(data_dir, split):
    """Return (`index` int64 [N], multi-hot uint8 [N, m]) of a split, ordered by `index`.

    Only the label features are parsed, so this is fast even for large splits.
    """
    tf = _tf()
    info = load_info(data_dir)
    spec = {"index": tf.io.FixedLenFeature([], tf.int64), "labels": tf.io.VarLenFeature(tf.int64)}
    ds = tf.data.TFRecordDataset(shard_paths(data_dir, split)).batch(1024)

    def split_sparse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        return {"index": ex["index"], "rows": ex["labels"].indices[:, 0], "values": ex["labels"].values}

    ds = ds.map(split_sparse)
    n = info.splits[split]
    y = np.zeros((n, info.num_classes), np.uint8)
    seen = np.zeros(n, bool)
    for batch in ds.as_numpy_iterator():
        idx = batch["index"]
        if idx.min() < 0 or idx.max() >= n:
            raise UserError(f"{data_dir}: split '{split}' has record index {idx.max()} outside 0..{n - 1}")
        seen[idx] = True
        rows, values = idx[batch["rows"]], batch["values"]
        if values.size and (values.min() < 0 or values.max() >= info.num_classes):
            raise UserError(f"{data_dir}: split '{split}' has a label outside 0..{info.num_classes - 1}")
        y[rows, values] = 1
    if not seen.all():
        raise UserError(f"{data_dir}: split '{split}' is missing {int((~seen).sum())} of {n} records")
    return np.arange(n, dtype=np.int64), y


def iter_records(data_dir, split):
    """Yield every record of a split as a dict of NumPy values (for tests and tools)."""
    tf = _tf()
    ds = tf.data.TFRecordDataset(shard_paths(data_dir, split)).map(parse_example)
    for ex in ds.as_numpy_iterator():
        yield {
            "image": ex["image"],
            "id": ex["id"].decode("utf-8"),
            "index": int(ex["index"]),
            "labels": [int(x) for x in ex["labels"]],
        }


def check_output_folder(out_dir):
    """Refuse a data folder that holds files but no `dataset.json`: cpsd-tf never writes among a user's files."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and not (out_dir / DATASET_JSON).exists():
        foreign = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
        if foreign:
            raise UserError(
                f"{out_dir}: holds files that are not a cpsd-tf data set ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); cpsd-tf will not write into it: give a new or empty --out"
            )


def write_split(
    out_dir,
    split: str,
    classes: Sequence[str],
    records: Iterable[Record],
    *,
    total: int | None = None,
    examples_per_shard: int = 1024,
    label: str | None = None,
    extra_meta: dict | None = None,
) -> int:
    """Write a split as TFRecord shards into `out_dir` and record it in `dataset.json`.

    Records get their dense `index` in the order they come. Shards are written into a hidden temporary
    folder inside `out_dir` and moved into place only when the whole split is written, so a failure
    (including a `UserError` raised by the `records` iterator) leaves `out_dir` as it was. Writing a split
    into a folder that already holds a dataset requires the same class list, and replaces that split.

    Args:
        out_dir: str or Path, the data folder (created if missing).
        split: str, split name (letters, digits, underscore).
        classes: list of str, class names; a record's labels index into it.
        records: iterable of `Record`.
        total: int or None, expected number of records (for the progress bar). Defaults to None.
        examples_per_shard: int, records per shard. Defaults to 1024.
        label: str or None, progress bar label. Defaults to "Writing <split>".
        extra_meta: dict or None, extra top-level keys merged into `dataset.json`. Defaults to None.

    Returns:
        The number of records written.
    """
    tf = _tf()
    if not SPLIT_NAME.match(split):
        raise UserError(f"split name '{split}' is invalid: use letters, digits and '_'")
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise UserError(f"class list has duplicate names: {dup[:5]}")
    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / DATASET_JSON
    meta = {"classes": classes, "splits": {}}
    if meta_path.exists():
        old = load_info(out_dir)
        if old.classes != classes:
            raise UserError(
                f"{meta_path}: holds a dataset with {len(old.classes)} other classes "
                f"({old.classes[:3]}...); converting split '{split}' with {len(classes)} classes "
                f"({classes[:3]}...) needs the same class list (give another --out, or fix the class list with --classes for data csv)"
            )
        meta = json.loads(meta_path.read_text())
    m = len(classes)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=out_dir))
    done = False
    try:
        count = 0
        shard_files = []
        writer = None
        with progress_bar(records, length=total, label=label or f"Writing {split}") as bar:
            for rec in bar:
                labels = sorted(set(int(x) for x in rec.labels))
                if labels and (labels[0] < 0 or labels[-1] >= m):
                    raise UserError(f"record '{rec.image_id}': label index {labels} out of range 0..{m - 1}")
                if writer is None:
                    shard_files.append(tmp_dir / f"shard-{len(shard_files):05d}")
                    writer = tf.io.TFRecordWriter(str(shard_files[-1]))
                writer.write(encode_example(rec.image, rec.image_id, count, labels))
                count += 1
                if count % examples_per_shard == 0:
                    writer.close()
                    writer = None
        if writer is not None:
            writer.close()
        if count == 0:
            raise UserError(f"split '{split}' is empty: no image to write into {out_dir}")
        n_shards = len(shard_files)
        final = [tmp_dir / f"{split}-{i:05d}-of-{n_shards:05d}.tfrecord" for i in range(n_shards)]
        for src, dst in zip(shard_files, final):
            os.replace(src, dst)
        for old_shard in out_dir.glob(f"{split}-*-of-*.tfrecord"):
            old_shard.unlink()
        for f in final:
            os.replace(f, out_dir / f.name)
        meta["classes"] = classes
        meta.setdefault("splits", {})[split] = count
        if extra_meta:
            meta.update(extra_meta)
        io.write_json(meta_path, meta)
        done = True
        return count
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if created and not done:
            shutil.rmtree(out_dir, ignore_errors=True)
