"""Step time of the student (cached and online teacher logits) against the baseline's step.

Times `model.fit` steps after a warm-up on the same data pipeline, model and optimizer; only the targets
and the loss differ. Teachers are untrained models of the recipe's architecture (speed does not depend
on their weights), k per strategy, with the cluster sizes of a balanced partition.

    python tools/bench_distill.py --recipe recipes/demo.yaml --steps 60 --repeats 3

Prints one JSON line: seconds per step (median over repeats) and the ratios to the baseline.
"""

import argparse
import json
import statistics
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from cpsd_tf.quiet import import_tensorflow

    tf = import_tensorflow()
    import keras

    from cpsd_tf import distill, recipe as recipe_mod, train
    from cpsd_tf.data import pipeline, prepare, records
    from cpsd_tf.models import build_model

    r = recipe_mod.load(args.recipe)
    data_dir = prepare.run(r)
    info = records.load_info(data_dir)
    m, n = info.num_classes, info.splits[r.data.train_split]
    k = r.partition.k
    clusters = [list(c) for c in np.array_split(np.arange(m), k)]
    batch = r.train.batch_size

    def dataset(with_index):
        return pipeline.build(data_dir, r.data.train_split, image_size=r.data.image_size, batch_size=batch,
                              training=True, augment=r.data.augment, repeat=True, cache=r.train.cache,
                              with_index=with_index, seed=0)

    def student():
        keras.utils.set_random_seed(0)
        return build_model(r.model.backbone, r.model.head, m, r.data.image_size, weights=r.model.weights,
                           head_options=r.model.head_options)

    setups = {}

    def prepare_fit(name, model, ds, loss):
        model.compile(optimizer=train.make_optimizer(r.train, 10**6), loss=loss)
        model.fit(ds, epochs=1, steps_per_epoch=10, verbose=0, shuffle=False)  # trace + warm-up
        setups[name] = (model, ds)

    prepare_fit("baseline", student(), dataset(False), train.make_loss(r.train.loss))

    rng = np.random.default_rng(0)
    tables = [rng.normal(size=(n, m)).astype(np.float32) for _ in range(2)]
    join = distill.cached_targets_fn(tables)
    cached_ds = dataset(True).map(lambda f, y: (f["image"], join(y, f["index"])), num_parallel_calls=tf.data.AUTOTUNE)
    prepare_fit("student_cached", student(), cached_ds, distill.make_loss(r, m, 2))

    teacher_sets = []
    for _ in ("cgp", "dgp"):
        models = [build_model(r.model.backbone, r.model.head, len(c), r.data.image_size, weights=r.model.weights,
                              head_options=r.model.head_options) for c in clusters]
        teacher_sets.append((models, clusters))
    wrapper = distill.online_wrapper(teacher_sets, m)(student())
    prepare_fit("student_online", wrapper, dataset(False), distill.make_loss(r, m, 2))

    # Modes take turns in every repeat, so a load change on the machine hits all of them alike.
    times = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, (model, ds) in setups.items():
            start = time.perf_counter()
            model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
            times[name].append((time.perf_counter() - start) / args.steps)
    results = {name: statistics.median(t) for name, t in times.items()}

    out = {f"{k}_s_per_step": round(v, 4) for k, v in results.items()}
    out["cached_over_baseline"] = round(results["student_cached"] / results["baseline"], 3)
    out["online_over_baseline"] = round(results["student_online"] / results["baseline"], 3)
    out.update(recipe=args.recipe, batch=batch, image_size=r.data.image_size, steps=args.steps, repeats=args.repeats)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
