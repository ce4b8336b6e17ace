"""`cpsd-tf data coco|nuswide|csv` (converters to TFRecord shards) and `cpsd-tf stats`."""

import click

_skip_invalid = click.option(
    "--skip-invalid", is_flag=True, help="Skip missing or undecodable images (and report how many) instead of failing."
)


def _report(summary, out):
    """Print what a converter wrote (and, on stderr, how many invalid images it skipped)."""
    if summary.skipped:
        click.echo(
            f"skipped {summary.skipped} invalid image{'s' if summary.skipped != 1 else ''} of split "
            f"'{summary.split}' (first: {summary.first_skipped})",
            err=True,
        )
    click.echo(f"Wrote {summary.count} images of split '{summary.split}' ({summary.num_classes} classes) to {out}")


@click.group("data")
def group():
    """Convert a data set to TFRecord shards, or generate the bundled scenes benchmark."""


@group.command("coco")
@click.option("--annotations", required=True, type=click.Path(dir_okay=False), help="COCO instances_<split>2014.json.")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder holding the split's images.")
@click.option("--split", default="train", show_default=True, help="Split name to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@click.option("--keep-empty", is_flag=True, help="Keep images without any annotation (empty label set).")
@_skip_invalid
def coco(annotations, images, split, out, keep_empty, skip_invalid):
    """COCO-2014 instances JSON + image folder -> TFRecord shards (classes: category names, sorted)."""
    from cpsd_tf.data import sources

    summary = sources.convert_coco(
        annotations, images, split, out, keep_empty=keep_empty, skip_invalid=skip_invalid
    )
    _report(summary, out)


@group.command("nuswide")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="NUS-WIDE root (Concepts81.txt, ImageList/, TrainTestLabels/, Flickr/).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@_skip_invalid
def nuswide(root, out, skip_invalid):
    """NUS-WIDE official layout -> TFRecord shards, splits train and test."""
    from cpsd_tf.data import sources

    for summary in sources.convert_nuswide(root, out, skip_invalid=skip_invalid):
        _report(summary, out)


@group.command("csv")
@click.option("--labels", required=True, type=click.Path(dir_okay=False), help="CSV (path,labels with ';') or JSONL file.")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder the image paths are relative to.")
@click.option("--split", required=True, help="Split name to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data folder.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), help="One class name per line (fixes the class order).")
@_skip_invalid
def csv(labels, images, split, out, classes_file, skip_invalid):
    """A CSV/JSONL list of images and labels -> TFRecord shards."""
    from cpsd_tf.data import sources

    summary = sources.convert_label_list(
        labels, images, split, out, classes_file=classes_file, skip_invalid=skip_invalid
    )
    _report(summary, out)


@click.command("stats")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="A cpsd-tf data folder.")
@click.option("--split", default="train", show_default=True, help="Split to count.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output label-statistics JSON.")
def stats(data_dir, split, out):
    """Label statistics of a split: class counts and co-occurrence counts."""
    from cpsd_tf import stats as stats_mod

    result = stats_mod.run(data_dir, split, out)
    click.echo(
        f"Wrote {out}: {result['num_images']} images, {len(result['classes'])} classes, "
        f"{sum(result['class_counts'])} labels"
    )
