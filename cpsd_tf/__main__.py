"""`python -m cpsd_tf ...` is `cpsd-tf ...`."""

from cpsd_tf.cli import main

main()
