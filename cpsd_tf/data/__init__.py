"""Data layer: TFRecord records, source converters, the scenes benchmark and the tf.data pipeline."""
