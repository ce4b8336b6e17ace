"""TensorBoard logs of a run: what they hold, and a small writer of event files.

`tensorboard --logdir <run_dir>` (or a folder of run directories, to compare seeds and ablation variants)
shows every model of the run. Scalars are logged at step = epoch number counted from 1 (the `epoch` of
`metrics.json`'s history and its `best_epoch`); one-off summaries (recipe, HParams, images) at step 0.

Each model folder's `tensorboard/` (written by `cpsd_tf.train.fit`):
- `train/`: `epoch_loss` (the training loss, mean over the epoch's batches), `epoch_learning_rate` (at the
  end of the epoch); a student also logs `loss/asl` and `loss/distill_<set>` per teacher set: its loss
  terms weighted as they enter the total, so they sum to `epoch_loss`;
- `selection/`: `val_mAP/raw`, `val_mAP/ema` (when the EMA is on) and `val_AP/<class>` (raw weights) on
  the selection split, each epoch;
- the folder itself: `recipe` (text: the resolved recipe the model was trained with, its `train.lr` the
  stage's learning rate), the HParams session (`MODEL_HPARAMS`, `hparams_config`), and `val_mAP`, the best
  selection mAP (one value, at the best epoch): the HParams metric.

The run directory's `tensorboard/`: `partition` (image: `partition.png`, by the partition stage); any
other figure can be added with `log_image`.

The writer needs only the `tensorboard` package (its protos and record format), not TensorFlow, so a stage
that does not train (partition, reports) stays light.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from pathlib import Path

LOG_DIR = "tensorboard"  # a model folder's (or the run directory's) TensorBoard folder
TRAIN_DIR = "train"
SELECTION_DIR = "selection"
BEST_TAG = "val_mAP"  # HParams metric: the best selection mAP of the model
RECIPE_TAG = "recipe"
PARTITION_TAG = "partition"
TERM_PREFIX = "loss_"  # training logs `loss_<term>` -> TensorBoard `loss/<term>`

# HParams: name -> description, in the order of the table. Students add the DISTILL_HPARAMS.
MODEL_HPARAMS = {
    "model": "model name: baseline, baseline_equal_compute, teacher-<set>-<i>, or the student variant (cpsd, sd, ...)",
    "role": "baseline, teacher, student (or pretrain)",
    "seed": "recipe seed",
    "partition.k": "clusters per partition strategy",
    "epochs": "epochs the model was trained for",
    "lr": "peak learning rate of the model's stage",
}
DISTILL_HPARAMS = {
    "distill.teacher_logits": "online, cached_views or cached_clean targets",
    "distill.w_distill": "total weight of the distillation terms",
    "distill.alpha": "CGP's share of w_distill",
}

_file_ids = itertools.count()


class EventWriter:
    """Append summaries to a new event file in `log_dir`, created at the first write.

    Example:
        with EventWriter(model_dir / "tensorboard" / "train") as writer:
            writer.scalar("epoch_loss", 0.5, step=1)
    """

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self._file = None
        self._records = None

    def _open(self):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_ids)}.v2"
        self._file = open(self.log_dir / name, "ab")
        self._records = RecordWriter(self._file)
        self._records.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())

    def write(self, summary, step=0):
        """Write a `summary_pb2.Summary` at `step` and flush."""
        from tensorboard.compat.proto import event_pb2

        if self._file is None:
            self._open()
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._records.write(event.SerializeToString())
        self._file.flush()

    def scalars(self, values, step):
        """Write {tag: number} at `step`, in one event."""
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        summary = summary_pb2.Summary()
        for tag, value in values.items():
            summary.value.extend(scalar_pb(tag, float(value)).value)
        if summary.value:
            self.write(summary, step)

    def scalar(self, tag, value, step):
        self.scalars({tag: value}, step)

    def text(self, tag, text, step=0):
        """Write Markdown `text` (TensorBoard's Text tab)."""
        from tensorboard.plugins.text.summary_v2 import text_pb

        self.write(text_pb(tag, text), step)

    def image(self, tag, png, step=0):
        """Write PNG bytes as an image (TensorBoard's Images tab), in `tf.summary.image`'s format."""
        import numpy as np
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.image import metadata
        from tensorboard.util import tensor_util

        width, height = png_size(png)
        tensor = tensor_util.make_tensor_proto(np.array([str(width).encode(), str(height).encode(), png], dtype=object))
        summary = summary_pb2.Summary()
        summary.value.add(tag=tag, tensor=tensor,
                          metadata=metadata.create_summary_metadata(display_name=None, description=None))
        self.write(summary, step)

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = self._records = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def png_size(png):
    """(width, height) of PNG bytes, read from the IHDR header; a `ValueError` for other bytes."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


def log_image(log_dir, tag, png_path, step=0):
    """Log the PNG file `png_path` as image `tag` at `step` in the TensorBoard folder `log_dir`.

    Example (the results figure beside the partition heat map):
        log_image(run_dir / "tensorboard", "results", run_dir / "results.png")
    """
    with EventWriter(log_dir) as writer:
        writer.image(tag, Path(png_path).read_bytes(), step)


def train_tag(name):
    """TensorBoard tag of a training log: `loss_<term>` -> `loss/<term>`, any other `x` -> `epoch_x`."""
    if name.startswith(TERM_PREFIX):
        return "loss/" + name[len(TERM_PREFIX):]
    return f"epoch_{name}"


def recipe_markdown(recipe):
    """The recipe as a YAML code block (the text summary `recipe`)."""
    from cpsd_tf import recipe as recipe_mod

    return "```yaml\n" + recipe_mod.dump(recipe) + "```\n"


def model_hparams(recipe, title, *, role, epochs):
    """The HParams of one model (`MODEL_HPARAMS`, and `DISTILL_HPARAMS` for a student)."""
    values = {"model": title, "role": role, "seed": int(recipe.seed), "partition.k": int(recipe.partition.k),
              "epochs": int(epochs), "lr": float(recipe.train.lr)}
    if role == "student":
        d = recipe.distill
        values.update({"distill.teacher_logits": d.teacher_logits, "distill.w_distill": float(d.w_distill),
                       "distill.alpha": float(d.alpha)})
    return values


STRING_HPARAMS = ("model", "role", "distill.teacher_logits")  # the others are numbers


def hparams_config_summary():
    """The HParams experiment: every hparam (typed, marked as differing across models), and the metrics
    `val_mAP` and `train/epoch_loss`.

    Without it TensorBoard would make every scalar of every model (each class's AP) a metric column.
    (`hp.hparams_config_pb` leaves an hparam without a domain untyped, so the experiment is built here.)
    """
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    hparams = [api_pb2.HParamInfo(name=name, description=text, differs=True,
                                  type=api_pb2.DATA_TYPE_STRING if name in STRING_HPARAMS else api_pb2.DATA_TYPE_FLOAT64)
               for name, text in {**MODEL_HPARAMS, **DISTILL_HPARAMS}.items()]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(group="", tag=BEST_TAG), display_name="best val mAP",
                                  description="best selection mAP (%) of the model"),
               api_pb2.MetricInfo(name=api_pb2.MetricName(group=TRAIN_DIR, tag="epoch_loss"), display_name="train loss",
                                  description="training loss of the last epoch")]
    experiment = api_pb2.Experiment(hparam_infos=hparams, metric_infos=metrics)
    summary = summary_pb2.Summary()
    summary.value.add(tag=metadata.EXPERIMENT_TAG, tensor=metadata.NULL_TENSOR,
                      metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment)))
    return summary


def log_model_start(writer, recipe, hparams, trial_id):
    """At the start of training: the recipe text, the HParams experiment and this model's session."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    writer.text(RECIPE_TAG, recipe_markdown(recipe))
    writer.write(hparams_config_summary())
    writer.write(hp.hparams_pb(hparams, trial_id=str(trial_id)))


def log_best(writer, best_mAP, best_epoch):
    """At the end of training: the best selection mAP at its epoch (skipped when NaN: nothing to select on)."""
    if best_mAP is not None and math.isfinite(best_mAP) and best_epoch >= 1:
        writer.scalar(BEST_TAG, best_mAP, best_epoch)
