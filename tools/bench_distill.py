"""Per-step time of the student's teacher-target modes against the baseline's step, in one process.

Variants (same data pipeline settings, student architecture and optimizer; only targets and loss differ):
  baseline      plain `(images, labels)` batches, ASL;
  cached_clean  teacher logits of the un-augmented images joined by record `index` (`distill.cached_targets_fn`);
  cached_views  teacher logits of every augmented view joined by (pass, index) (`view_targets.targets_fn`,
                float16 tables [E, N, m] as `view_targets.compute` writes them);
  online        the 2k teachers run inside every training step (`distill.online_wrapper`);
  with `--views KIND` (mixup, cutmix, mosaic; `cpsd_tf.views`) also baseline+KIND, cached_views+KIND and
  online+KIND, the same steps on mixed views (mixed in the pipeline, as training does; cached_views+KIND joins
  a table [steps, B, m] by batch position on the deterministic stream, `view_targets.step_targets_fn`).
Teachers are untrained models of the recipe's architecture (speed does not depend on weights), k per
strategy (`--k`, default 5), with the cluster sizes of a balanced partition; the tables are random.

Every variant is traced and warmed up (`--warmup` steps) first; then the variants take turns, `--steps`
steps each, `--rounds` times (a load change on the shared machine hits all alike). A step is one call of
the model's compiled train function on a persistent dataset iterator (data fetch included, no `fit()`
overhead), timed to its result; the median per variant is printed, one line each, with its ratio to the
baseline.

    /work/venv/bin/python tools/bench_distill.py --recipe recipes/demo.yaml [--k 5] [--steps 30] [--rounds 5]
        [--views cutmix [--view-labels objects]]
"""

import argparse
import statistics
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--k", type=int, default=5, help="teachers per strategy (2k in all)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per variant after tracing")
    parser.add_argument("--views", choices=["none", "mixup", "cutmix", "mosaic"], default="none",
                        help="also time the baseline, cached_views and online steps on these mixed views")
    parser.add_argument("--view-labels", choices=["area", "objects"], default="area",
                        help="how --views labels its views (objects: the data folder's <split>.objects.npz)")
    args = parser.parse_args()

    from cpsd_tf.quiet import import_tensorflow

    tf = import_tensorflow()
    import keras

    from cpsd_tf import distill, train, view_targets
    from cpsd_tf import views as views_mod
    from cpsd_tf import recipe as recipe_mod
    from cpsd_tf.data import pipeline, prepare, records
    from cpsd_tf.losses import DistillationLoss
    from cpsd_tf.models import build_model

    r = recipe_mod.load(args.recipe, args.set)
    data_dir = prepare.run(r)
    info = records.load_info(data_dir)
    split = r.data.train_split
    m = info.num_classes
    n = pipeline.num_examples(data_dir, split)
    batch = min(r.train.batch_size, n)
    clusters = [list(map(int, c)) for c in np.array_split(np.arange(m), args.k) if len(c)]
    total_steps = 1 + args.warmup + args.steps * args.rounds
    passes = view_targets.passes_needed(n, batch, total_steps, 1)

    def dataset(**kwargs):
        return pipeline.build(data_dir, split, image_size=r.data.image_size, batch_size=batch, training=True,
                              augment=r.data.augment, repeat=True, cache=r.train.cache,
                              shuffle_buffer=r.train.shuffle_buffer, seed=0, **kwargs)

    def model(num_classes):
        return build_model(r.model.backbone, r.model.head, num_classes, r.data.image_size, weights=r.model.weights,
                           head_options=r.model.head_options)

    def distill_loss():
        return DistillationLoss(m, w_teachers=[0.25, 0.25], w_cls=0.5)

    rng = np.random.default_rng(0)
    clean = distill.cached_targets_fn([rng.normal(size=(n, m)).astype(np.float32) for _ in range(2)])
    views = view_targets.targets_fn([rng.normal(size=(passes, n, m)).astype(np.float16) for _ in range(2)])
    teacher_sets = [([model(len(c)) for c in clusters], clusters) for _ in ("cgp", "dgp")]
    keras.utils.set_random_seed(0)

    variants = {
        "baseline": (model(m), dataset(), train.make_loss(r.train.loss)),
        "cached_clean": (model(m), dataset(with_index=True).map(
            lambda f, y: (f["image"], clean(y, f["index"])), num_parallel_calls=tf.data.AUTOTUNE), distill_loss()),
        "cached_views": (model(m), dataset(with_index=True, with_pass=True).map(
            lambda f, y: (f["image"], views(y, f["pass"], f["index"])), num_parallel_calls=tf.data.AUTOTUNE),
            distill_loss()),
        "online": (distill.online_wrapper(teacher_sets, m)(model(m)), dataset(), distill_loss()),
    }
    if args.views != "none":  # mixed in the pipeline; cached mixed-view targets join by batch position
        cfg = recipe_mod.ViewsConfig(kind=args.views, labels=args.view_labels)
        by_object = views_mod.by_object(cfg)
        name = args.views + ("+objects" if by_object else "")

        def mixed(**kwargs):
            return dataset(mix=views_mod.mixer(cfg, 0), with_objects=by_object, **kwargs)

        by_step = view_targets.step_targets_fn([rng.normal(size=(total_steps + 8, batch, m)).astype(np.float16)
                                                for _ in range(2)])
        variants[f"baseline+{name}"] = (model(m), mixed(), train.make_loss(r.train.loss))
        variants[f"cached_views+{name}"] = (model(m), mixed(with_step=True, deterministic=True).map(
            lambda f, y: (f["image"], by_step(y, f["step"])), num_parallel_calls=tf.data.AUTOTUNE), distill_loss())
        variants[f"online+{name}"] = (distill.online_wrapper(teacher_sets, m)(model(m)), mixed(), distill_loss())

    def step_fn(mdl, it):
        def step():
            out = mdl.train_function(it)
            if isinstance(out, tf.experimental.Optional):
                out = out.get_value()
            return float(out["loss"])  # waits for the step

        return step

    steps = {}
    for name, (mdl, ds, loss) in variants.items():
        mdl.compile(optimizer=train.make_optimizer(r.train, 10**6), loss=loss)
        mdl.fit(ds, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)  # builds, traces the train function
        steps[name] = step_fn(mdl, iter(ds))
        for _ in range(args.warmup):
            steps[name]()

    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["baseline"])
    print(f"# {args.recipe}: batch {batch}, {r.data.image_size} px, N {n}, k {args.k} ({2 * len(clusters)} teachers), "
          f"{args.rounds} rounds x {args.steps} steps per variant, median per step")
    for name, t in times.items():
        med = statistics.median(t)
        q1, _, q3 = statistics.quantiles(t, n=4)
        iqr = f"IQR {q1 * 1000:.2f}-{q3 * 1000:.2f}"
        print(f"{name:15s} {med * 1000:8.2f} ms/step  ({iqr})  x{med / base:.2f} baseline")


if __name__ == "__main__":
    main()
