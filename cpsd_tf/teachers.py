"""`cpsd-tf teachers`: the 2k sub-task models of `partition.json`, into `<run_dir>/teachers/<cgp|dgp>-<i>/`."""

from pathlib import Path

import click

from cpsd_tf import partition, train
from cpsd_tf.data import prepare, records
from cpsd_tf.errors import UserError

TEACHERS_DIR = "teachers"
STRATEGIES = ("cgp", "dgp")


def load_partition(recipe, run_dir):
    """The run's partition, computed first when `partition.json` is missing."""
    path = Path(run_dir) / partition.PARTITION_FILE
    if not path.is_file():
        partition.run(recipe, run_dir)
    return partition.load(path)


def teacher_list(part):
    """[(name, class indices)] of every teacher, in order cgp-0 .. cgp-{k-1}, dgp-0 .. dgp-{k-1}."""
    return [(f"{s}-{i}", list(cluster)) for s in STRATEGIES for i, cluster in enumerate(part[s])]


def parse_shard(text):
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard '{text}': expected i/n, e.g. 0/2") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def select(teachers, only=None, shard=None):
    """The teachers named by `--only` (comma-separated) and/or the `--shard i/n` share of them."""
    names = [name for name, _ in teachers]
    if only:
        wanted = [w.strip() for w in only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise UserError(f"--only: unknown teacher(s) {unknown}; this run has {names}")
        teachers = [t for t in teachers if t[0] in wanted]
    if shard:
        i, n = parse_shard(shard)
        teachers = teachers[i::n]
    return teachers


def is_done(recipe, run_dir) -> bool:
    path = Path(run_dir) / partition.PARTITION_FILE
    if not path.is_file():
        return False
    part = partition.load(path)
    return all(train.is_done(Path(run_dir) / TEACHERS_DIR / name) for name, _ in teacher_list(part))


def run(recipe, run_dir, only=None, shard=None):
    """Train the selected teachers that are not finished yet."""
    data_dir = prepare.run(recipe)
    info = records.load_info(data_dir)
    part = load_partition(recipe, run_dir)
    if part["classes"] != info.classes:
        raise UserError(
            f"{Path(run_dir) / partition.PARTITION_FILE}: its classes differ from {data_dir}'s; delete it to redo the partition"
        )
    chosen = select(teacher_list(part), only, shard)
    epochs = recipe.teachers.epochs or recipe.train.epochs
    for n, (name, subset) in enumerate(chosen, 1):
        model_dir = Path(run_dir) / TEACHERS_DIR / name
        if train.is_done(model_dir):
            click.echo(f"[teachers] {name} finished already, skipped")
            continue
        names = [info.classes[c] for c in subset]
        click.echo(f"[teachers] {n}/{len(chosen)} {name}: {len(subset)} classes ({', '.join(names[:6])}{'...' if len(names) > 6 else ''})")
        metrics = train.fit(
            recipe, model_dir, num_classes=len(subset), class_names=names, subset=subset,
            images=recipe.teachers.images, epochs=epochs, title=f"teacher-{name}",
        )
        click.echo(f"[teachers] {name}: best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} at epoch {metrics['best_epoch']}")
