"""`cpsd-tf teachers`: the 2k sub-task models of `partition.json`, into `<run_dir>/teachers/<cgp|dgp>-<i>/`.

A recipe whose student or ablations use the `random` set also gets the k teachers of a random partition
(`partition_random.json`, teachers `random-<i>`).
"""

from pathlib import Path

import click

from cpsd_tf import io, partition, train
from cpsd_tf.data import prepare, records
from cpsd_tf.errors import UserError

TEACHERS_DIR = "teachers"
RANDOM_PARTITION_FILE = "partition_random.json"


def load_partition(recipe, run_dir):
    """The run's partition, computed first when `partition.json` is missing."""
    path = Path(run_dir) / partition.PARTITION_FILE
    if not path.is_file():
        partition.run(recipe, run_dir)
    return partition.load(path)


def random_partition(recipe, run_dir):
    """The random partition of the run (k balanced random clusters, seeded), written on first use."""
    path = Path(run_dir) / RANDOM_PARTITION_FILE
    if not path.is_file():
        stats, source = partition.recipe_stats(recipe)
        p = recipe.partition
        io.write_json(path, partition.partition_labels(stats, p.k, p.tau, "random", p.seed, False, source=source))
    return partition.load(path)


def needed_sets(recipe):
    """Teacher sets of the run, in order: cgp, dgp, then random and baseline when the recipe distils from them."""
    from cpsd_tf.recipe import VARIANTS

    sets = ["cgp", "dgp", *recipe.distill.teachers]
    for variant in recipe.ablation:
        sets += VARIANTS[variant]
    return list(dict.fromkeys(sets))


def teachers_of(recipe, run_dir, teacher_set):
    """[(name, model folder, class indices or None for all)] of the teachers of a set."""
    run_dir = Path(run_dir)
    if teacher_set == "baseline":
        return [("baseline", run_dir / "baseline", None)]
    if teacher_set in ("cgp", "dgp"):
        clusters = load_partition(recipe, run_dir)[teacher_set]
    elif teacher_set == "random":
        clusters = random_partition(recipe, run_dir)["cgp"]
    else:
        raise UserError(f"unknown teacher set '{teacher_set}'; choose one of cgp, dgp, random, baseline")
    return [(f"{teacher_set}-{i}", run_dir / TEACHERS_DIR / f"{teacher_set}-{i}", list(c)) for i, c in enumerate(clusters)]


def teacher_list(recipe, run_dir):
    """Every sub-task teacher the run trains (not the baseline), in order cgp-*, dgp-*, random-*."""
    return [t for s in needed_sets(recipe) if s != "baseline" for t in teachers_of(recipe, run_dir, s)]


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
    names = [t[0] for t in teachers]
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
    if not (Path(run_dir) / partition.PARTITION_FILE).is_file():
        return False
    return all(train.is_done(model_dir) for _, model_dir, _ in teacher_list(recipe, run_dir))


def run(recipe, run_dir, only=None, shard=None):
    """Train the selected teachers that are not finished yet."""
    data_dir = prepare.run(recipe)
    info = records.load_info(data_dir)
    part = load_partition(recipe, run_dir)
    if part["classes"] != info.classes:
        raise UserError(
            f"{Path(run_dir) / partition.PARTITION_FILE}: its classes differ from {data_dir}'s; delete it to redo the partition"
        )
    chosen = select(teacher_list(recipe, run_dir), only, shard)
    epochs = recipe.teachers.epochs or recipe.train.epochs
    for n, (name, model_dir, subset) in enumerate(chosen, 1):
        if train.is_done(model_dir):
            click.echo(f"[teachers] {name} finished already, skipped")
            continue
        names = [info.classes[c] for c in subset]
        shown = ", ".join(names[:6]) + ("..." if len(names) > 6 else "")
        click.echo(f"[teachers] {n}/{len(chosen)} {name}: {len(subset)} classes ({shown})")
        metrics = train.fit(
            recipe, model_dir, num_classes=len(subset), class_names=names, subset=subset,
            images=recipe.teachers.images, epochs=epochs, title=f"teacher-{name}",
        )
        click.echo(f"[teachers] {name}: best {metrics['select_split']} mAP {metrics['select_metrics']['mAP']:.2f} at epoch {metrics['best_epoch']}")
