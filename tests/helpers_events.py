"""Read TensorBoard event files back (the trainer's logs are part of what users look at)."""


def event_tags(log_dir):
    """Every scalar tag written under `log_dir` (recursively)."""
    import tensorflow as tf

    tags = set()
    for path in log_dir.rglob("events.out.tfevents*"):
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            tags.update(v.tag for v in event.summary.value)
    return tags
