"""How often a run's Grad-CAM maps sit on the asked object, measured on freshly rendered scenes.

    python tools/cam_check.py --run-dir runs/demo [--images 100] [--split test_ood]

Renders `--images` scenes images with the run's scenes settings (the split's glyph pool and object
sampling: `test` keeps the scenes, `test_ood` draws objects independently) and remembers each object's
box. For every trained model of the run (baseline, student, ablations, teachers) and every object whose
class the model predicts, it computes Grad-CAM of that class and counts a hit when the map's peak lies in
the object's box grown by half a feature cell. Prints one line per model; `--json` writes the numbers.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsd_tf import cam, rundir, recipe as recipe_mod  # noqa: E402
from cpsd_tf.data import scenes  # noqa: E402


def trained_models(run_dir):
    run_dir = Path(run_dir)
    order = [rundir.BASELINE_DIR, rundir.STUDENT_DIR, rundir.EQUAL_COMPUTE_DIR]
    found = [run_dir / name for name in order if (run_dir / name / rundir.MODEL_FILE).is_file()]
    found += sorted(p.parent for p in (run_dir / rundir.ABLATIONS_DIR).glob(f"*/{rundir.MODEL_FILE}"))
    found += sorted(p.parent for p in (run_dir / rundir.TEACHERS_DIR).glob(f"*/{rundir.MODEL_FILE}"))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--split", default="test", choices=["test", "test_ood"])
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--json", dest="json_out", help="Write the hit rates here.")
    args = parser.parse_args()

    r = recipe_mod.load(Path(args.run_dir) / rundir.RECIPE_FILE)
    config = r.data.scenes.model_copy(update={"image_size": r.data.image_size})
    objects, _ = scenes.sample_objects(config, args.split, seed=args.seed, n=args.images)
    pixels, boxes = scenes.render_with_boxes(config, objects, split=args.split, seed=args.seed)
    images = pixels.astype("float32") / 255.0
    report = {}
    for path in trained_models(args.run_dir):
        model = rundir.load_model(path)
        classes = rundir.model_classes(path, int(model.output_shape[-1]))
        margin = cam.feature_stride(model) // 2
        hits = total = 0
        for image, objs, bxs in zip(images, objects, boxes):
            for cls, box in zip(objs, bxs):
                name = scenes.CLASSES[cls]
                if name in classes:
                    heat, _ = cam.grad_cam(model, image, classes.index(name))
                    hits += cam.peak_in_box(heat, box, margin)
                    total += 1
        name = path.relative_to(args.run_dir).as_posix()
        report[name] = {"hits": hits, "objects": total, "rate": hits / max(total, 1)}
        print(f"{name:<28} {hits:5d} / {total:5d} objects   peak in box: {100 * hits / max(total, 1):5.1f} %", flush=True)
    size, m = config.image_size, margin
    cover = [min(side + 2 * m, size) ** 2 / size**2 for bxs in boxes for _, _, side in bxs]
    # Blind reference: the share of the image the grown boxes cover (a uniformly placed peak's hit rate).
    print(f"{'(blind: mean grown-box area)':<28} {100 * float(np.mean(cover)):29.1f} %")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"split": args.split, "images": args.images, "models": report}, indent=2))


if __name__ == "__main__":
    main()
