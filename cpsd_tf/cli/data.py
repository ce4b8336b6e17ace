"""`cpsd-tf data coco|nuswide|csv` (converters to TFRecord shards) and `cpsd-tf stats`."""

import click

from cpsd_tf.cli.groups import Group

_skip_invalid = click.option(
    "--skip-invalid", is_flag=True,
    help="Skip images that are missing, not JPEG/PNG, or that TensorFlow's decoder (the one training uses) cannot "
    "decode, e.g. truncated ones, and report how many. Without it, any such image is an error.",
)


def _holdout_options(command):
    """`--holdout N [--holdout-split NAME] [--seed S]`: a model-selection split held out of the converted one."""
    options = [
        click.option(
            "--holdout", type=int, metavar="N",
            help="Hold out N random images of the split as a model-selection split, written with the rest.",
        ),
        click.option("--holdout-split", metavar="NAME", help="Name of the held-out split.  [default: val]"),
        click.option("--seed", type=int, metavar="S", help="Seed of the --holdout draw.  [default: 0]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _holdout(count, split, seed):
    """The `Holdout` the options ask for, or None; --holdout-split/--seed alone would silently do nothing."""
    from cpsd_tf.data.holdout import Holdout
    from cpsd_tf.errors import UserError

    if count is None:
        given = [name for name, value in (("--holdout-split", split), ("--seed", seed)) if value is not None]
        if given:
            raise UserError(f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with --holdout N")
        return None
    return Holdout(count, "val" if split is None else split, 0 if seed is None else seed)


def _report(summary, out):
    """Print what a converter wrote (and, on stderr, how many invalid images it skipped)."""
    if summary.skipped:
        click.echo(
            f"skipped {summary.skipped} invalid image{'s' if summary.skipped != 1 else ''} of split "
            f"'{summary.split}' (first: {summary.first_skipped})",
            err=True,
        )
    click.echo(f"Wrote {summary.count} images of split '{summary.split}' ({summary.num_classes} classes) to {out}")
    if summary.objects:
        from cpsd_tf.data import objects

        click.echo(f"Wrote where their objects are to {objects.path(out, summary.split)} (for views labelled by object)")


@click.group("data", cls=Group)
def group():
    """Convert or generate a data set (TFRecord shards).

    coco, nuswide and csv convert a data set on disk; scenes generates the bundled benchmark; build
    makes the recipe's data set with its generator.
    """


@group.command("coco")
@click.option("--annotations", required=True, type=click.Path(dir_okay=False), help="COCO instances_<split>2014.json.")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder holding the split's images.")
@click.option("--split", default="train", show_default=True, help="Split name to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@click.option("--keep-empty", is_flag=True, help="Keep images without any annotation (empty label set).")
@_skip_invalid
@_holdout_options
def coco(annotations, images, split, out, keep_empty, skip_invalid, holdout, holdout_split, seed):
    """COCO-2014 instances JSON + image folder -> TFRecord shards.

    The classes are the category names, sorted.
    """
    from cpsd_tf.data import coco as coco_mod

    summaries = coco_mod.convert_coco(
        annotations, images, split, out, keep_empty=keep_empty, skip_invalid=skip_invalid,
        holdout=_holdout(holdout, holdout_split, seed),
    )
    for summary in summaries:
        _report(summary, out)


@group.command("nuswide")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="NUS-WIDE root (Concepts81.txt, ImageList/, TrainTestLabels/, Flickr/).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@click.option("--keep-empty", is_flag=True, help="Keep images without any of the 81 concepts (dropped by default).")
@_skip_invalid
@_holdout_options
def nuswide(root, out, keep_empty, skip_invalid, holdout, holdout_split, seed):
    """NUS-WIDE official layout -> TFRecord shards (train and test).

    Images without any concept are dropped from both splits, as in the papers CPSD compares with;
    --keep-empty keeps them with an empty label set. --holdout draws the held-out split from train.
    """
    from cpsd_tf.data import nuswide as nuswide_mod

    summaries = nuswide_mod.convert_nuswide(
        root, out, keep_empty=keep_empty, skip_invalid=skip_invalid, holdout=_holdout(holdout, holdout_split, seed)
    )
    for summary in summaries:
        _report(summary, out)


@group.command("csv")
@click.option("--labels", required=True, type=click.Path(dir_okay=False),
              help="CSV (header 'path,labels', labels ';'-separated) or, if named *.jsonl, JSONL file.")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder the image paths are relative to.")
@click.option("--split", required=True, help="Split name to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), help="One class name per line (fixes the class order).")
@_skip_invalid
@_holdout_options
def csv(labels, images, split, out, classes_file, skip_invalid, holdout, holdout_split, seed):
    """A CSV or JSONL list of images and labels -> TFRecord shards.

    \b
    The format follows the extension of --labels: .jsonl is JSONL, any other is CSV.
    CSV: the header line 'path,labels', then per line an image path (relative to --images) and its
    class names separated by ';' (empty for no label; quote a field holding a comma), e.g.
      street/0001.jpg,car;person
    JSONL: per line one object with "path" (relative to --images) and "labels", a list of class names
    (or, with --classes, 0-based indices into it), e.g.
      {"path": "street/0001.jpg", "labels": ["car", "person"]}
    A JSONL line may say where its objects are, for mixed views labelled by object (then every line
    does, and its labels are its objects' classes; box: fractions of the height and width), e.g.
      {"path": "a.jpg", "labels": ["car"], "objects": [{"label": "car", "box": [0.1, 0.2, 0.6, 0.9]}]}
    Blank lines are skipped. The classes are those of --classes, in its order, else the names found,
    sorted.

    An image listed more than once with the same labels is kept once (the duplicates are merged
    silently); listed with different label sets, it is an error naming the image and both sets.
    """
    from cpsd_tf.data import label_list

    summaries = label_list.convert_label_list(
        labels, images, split, out, classes_file=classes_file, skip_invalid=skip_invalid,
        holdout=_holdout(holdout, holdout_split, seed),
    )
    for summary in summaries:
        _report(summary, out)


@click.command("stats")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="A cpsd-tf data folder.")
@click.option("--split", default="train", show_default=True, help="Split to count.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output label-statistics JSON.")
def stats(data_dir, split, out):
    """Label statistics of a split: class and co-occurrence counts."""
    from cpsd_tf import stats as stats_mod

    result = stats_mod.run(data_dir, split, out)
    click.echo(
        f"Wrote {out}: {result['num_images']} images, {len(result['classes'])} classes, "
        f"{sum(result['class_counts'])} labels"
    )
