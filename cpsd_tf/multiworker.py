"""One model on several machines: `tf.distribute.MultiWorkerMirroredStrategy` behind the same trainer.

Every worker runs the same stage command (`cpsd-tf baseline`, `teachers`, `distill`, `pretrain`) with its
own `TF_CONFIG` (the cluster's worker addresses and this worker's index) and `train.strategy:
multi_worker` (or `auto`, which picks it when `TF_CONFIG` names several workers). Each step, every worker
computes the gradient of its share of the global batch (`train.batch_size` is the global batch) and the
workers sum them, so the run trains the model a single process would train with that batch.

The strategy must exist before TensorFlow runs its first operation, so the CLI creates it (`init`) right
after loading the recipe.

Keras 3.15's `fit` does not run under this strategy as shipped (keras-team/keras#20585, checked again
with TF 2.21 / Keras 3.15). Two narrow adaptations of the trainer object (`adapt`) make it run; both lean
on Keras internals and are pinned by `tests/test_multiworker.py` to the versions in pyproject:
1. `_maybe_symbolic_build` builds the model from zeros shaped like the dataset's elements (only shapes
   matter) instead of a cross-worker mean of the first batch, which fails in eager mode (and would use up
   that batch);
2. `train_step` returns its logs as shape [1] tensors, because Keras reduces the logs across workers as
   a mean along axis 0, which a scalar does not have; callbacks still see the same scalars.

The input (`distribute`): every worker builds the same deterministic stream of global batches and keeps
its own rows of each, so the workers train on exactly the batches one process would.

Only the chief (worker 0, or the `chief` task) writes the model folder, its lock and provenance; the other
workers write their backups, selection state and logs to a temporary folder of their own (removed at the
end) and resume from the chief's backup, as TensorFlow's own multi-worker convention does.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from cpsd_tf.errors import UserError

_strategy = None


def local_cluster(workers):
    """`TF_CONFIG` values (JSON strings, worker 0 first) of `workers` processes on this machine, on ports that
    were free when asked: to try a multi-worker run, or test one, without machines of its own."""
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    hosts = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}) for i in range(workers)]


@dataclasses.dataclass(frozen=True)
class Cluster:
    workers: int  # chief + workers
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0 and not self.has_chief)

    has_chief: bool = False


def cluster() -> Cluster:
    """This process's place in the cluster from `TF_CONFIG`; a lone process without it."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return Cluster(1, "worker", 0)
    try:
        config = json.loads(raw)
        spec, task = config.get("cluster", {}), config.get("task", {})
        chiefs, workers = list(spec.get("chief", [])), list(spec.get("worker", []))
        task_type, task_index = str(task.get("type", "worker")), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"TF_CONFIG: not a cluster description ({e}); expected JSON like "
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}') \
            from None
    if task_type not in ("chief", "worker"):
        raise UserError(f"TF_CONFIG: task type {task_type!r} is not supported; use 'chief' or 'worker'")
    members = chiefs if task_type == "chief" else workers
    if not 0 <= task_index < max(len(members), 1):
        raise UserError(f"TF_CONFIG: task index {task_index} is outside the {len(members)} {task_type} address(es)")
    return Cluster(len(chiefs) + len(workers), task_type, task_index, has_chief=bool(chiefs))


def wanted(strategy_name) -> bool:
    """Whether `train.strategy` asks for several workers here ('auto': when TF_CONFIG names several)."""
    if strategy_name == "multi_worker":
        return True
    return strategy_name == "auto" and cluster().workers > 1


def init(recipe):
    """Create the strategy now, before TensorFlow's first operation, when the recipe asks for it."""
    global _strategy
    if _strategy is None and wanted(recipe.train.strategy):
        import tensorflow as tf

        try:
            _strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:  # created after TensorFlow ran: a programming error, said plainly
            raise UserError(f"train.strategy=multi_worker: {e}") from None
    return _strategy


def strategy():
    """The strategy created by `init` (None when there is none)."""
    return _strategy


def active() -> bool:
    return _strategy is not None


def is_chief() -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy."""
    return not active() or cluster().is_chief


def adapt(trainer, dataset):
    """Let Keras' `fit` run under the strategy (see the module docstring); a no-op without one.

    `dataset` is the local training dataset: its element spec builds the model, so no batch is consumed.
    """
    if not active():
        return trainer
    import tensorflow as tf
    from keras import tree

    strategy_ = _strategy

    def zeros(spec):
        return tf.zeros([1 if d is None else d for d in spec.shape.as_list()], spec.dtype)

    def symbolic_build(iterator=None, data_batch=None):
        del iterator, data_batch  # Keras would take (and lose) the first batch of the epoch for this
        with strategy_.scope():
            batch = tree.map_structure(zeros, dataset.element_spec)
            trainer._symbolic_build(data_batch=batch)

    train_step = trainer.train_step

    def step(data):
        return {name: tf.reshape(value, [1]) for name, value in train_step(data).items()}

    trainer._maybe_symbolic_build = symbolic_build
    if cluster().workers > 1:  # one worker alone takes Keras' single-process path, where logs stay scalars
        trainer.train_step = step
    return trainer


def distribute(dataset, global_batch):
    """Each worker's share of every global batch: worker i keeps rows [i·b, (i+1)·b) with b = batch / workers.

    Every worker builds the same deterministic stream of global batches and cuts its own rows out of each,
    so the workers together train on exactly the batches one process would (TensorFlow's automatic
    sharding is switched off: its rewrite of the pipeline gave a different first batch now and then).
    Returns the dataset unchanged without a multi-worker strategy.
    """
    if not active():
        return dataset
    import tensorflow as tf
    from keras import tree

    replicas = _strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise UserError(f"train.batch_size: {global_batch} does not split evenly over {replicas} replicas; "
                        f"use a multiple of {replicas}")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF

    def for_worker(context):
        share = global_batch // context.num_input_pipelines
        start = context.input_pipeline_id * share
        rows = dataset.map(lambda *e: tree.map_structure(lambda t: t[start:start + share], e))
        per_replica = context.get_per_replica_batch_size(global_batch)
        if per_replica != share:  # several devices on this worker: consecutive slices feed them in turn
            rows = rows.rebatch(per_replica)
        return rows.with_options(options)

    return _strategy.distribute_datasets_from_function(for_worker)


def predict_local(model, dataset):
    """Logits of `model` on every batch of `dataset`, computed by this worker alone (no collective op)."""
    import numpy as np
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))
    out = [forward(element[0] if isinstance(element, tuple) else element).numpy() for element in dataset]
    return np.concatenate(out, axis=0).astype(np.float32)


def barrier():
    """Wait until every worker gets here (a no-op without a multi-worker strategy).

    The end of a stage command: a worker that exits while the chief still writes the model looks to the
    chief's coordination service like a crashed task (it logs "tasks are unhealthy"), so they leave together.
    """
    if not active():
        return
    import tensorflow as tf

    strategy_ = _strategy

    @tf.function
    def together():
        return strategy_.reduce("SUM", strategy_.run(lambda: tf.ones([])), axis=None)

    together()


def wait_for(condition, seconds, poll=1.0):
    """Poll `condition()` until it holds (True) or `seconds` pass (False)."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def working_dir(model_dir):
    """Where this process writes a model: the model folder for the chief; for another worker, a temporary
    folder of its own, holding a copy of the chief's resume state (backup, selection) if there is one."""
    model_dir = Path(model_dir)
    if is_chief():
        return model_dir
    from cpsd_tf.checkpoints import BACKUP_DIR, BEST_WEIGHTS_FILE, SELECTION_FILE

    c = cluster()
    scratch = Path(tempfile.mkdtemp(prefix=f"cpsd-tf-{c.task_type}{c.task_index}-"))
    if (model_dir / BACKUP_DIR).is_dir():
        shutil.copytree(model_dir / BACKUP_DIR, scratch / BACKUP_DIR)
    for name in (SELECTION_FILE, BEST_WEIGHTS_FILE):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, scratch / name)
    return scratch


def release(model_dir, write_dir):
    """Remove a non-chief worker's temporary folder (`working_dir`); the chief's model folder stays."""
    if Path(write_dir) != Path(model_dir):
        shutil.rmtree(write_dir, ignore_errors=True)
