"""The input-pipeline cost of moving object boxes with each view (`boxes.view_boxes`), per image.

    python tools/bench_view_boxes.py [--images 6400] [--boxes 8] [--rounds 3]

Times a `Dataset.map` of `view_boxes` (flip off, translate 0.1, RandAugment 2 ops at magnitude 9, the
official augmentation's geometry) against an identity map over the same random boxes and seeds, on one
tf.data thread, the two taking turns; prints the medians and their difference per image.
"""

import argparse
import statistics
import time

import tensorflow as tf

from cpsd_tf.data.boxes import view_boxes
from cpsd_tf.data.augment_config import AugmentConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6400)
    parser.add_argument("--boxes", type=int, default=8, help="boxes per image")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cfg = AugmentConfig(flip=False, translate=0.1, randaugment={"num_ops": 2, "magnitude": 9})
    boxes = tf.random.uniform([args.images, args.boxes, 4], 0, 32, seed=1)
    seeds = tf.random.uniform([args.images, 2], 0, 2**30, dtype=tf.int64, seed=2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    data = tf.data.Dataset.from_tensor_slices((boxes, seeds))
    maps = {"identity": data.map(lambda b, s: b).with_options(options),
            "view_boxes": data.map(lambda b, s: view_boxes(b, s, cfg, 32)).with_options(options)}

    def seconds(ds):
        start = time.perf_counter()
        for _ in ds:
            pass
        return time.perf_counter() - start

    for ds in maps.values():  # trace and warm up
        seconds(ds)
    times = {name: [] for name in maps}
    for _ in range(args.rounds):
        for name, ds in maps.items():
            times[name].append(seconds(ds))
    ms = {name: 1000 * statistics.median(t) / args.images for name, t in times.items()}
    print(f"identity map {ms['identity']:.3f} ms/image, view_boxes {ms['view_boxes']:.3f} ms/image: "
          f"{ms['view_boxes'] - ms['identity']:.3f} ms per image for {args.boxes} boxes "
          f"(medians of {args.rounds} passes over {args.images} images, one tf.data thread)")


if __name__ == "__main__":
    main()
