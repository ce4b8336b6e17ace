"""`cpsd-tf export` and `cpsd-tf predict`: a SavedModel that serves without cpsd_tf, equal to the Keras model."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cpsd_tf import export
from cpsd_tf import recipe as recipe_mod
from cpsd_tf.cli import cli
from cpsd_tf.data import preprocess
from cpsd_tf.models import build_model

CLASSES = ["cat", "dog", "red-3", "sky", "tree"]
SIZE = 16


def _images(count=4, seed=0):
    """Encoded test images of mixed formats and sizes (resized in the graph)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        pixels = rng.integers(0, 256, (SIZE + 5 * i, SIZE + 3, 3), dtype=np.uint8)
        out.append((tf.io.encode_png if i % 2 == 0 else tf.io.encode_jpeg)(pixels).numpy())
    return out


def _keras_probs(model, images):
    batch = tf.stack([preprocess.preprocess_eval(tf.constant(b), SIZE) for b in images])
    return tf.sigmoid(model(batch, training=False)).numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with a 'trained' student (random weights, non-trivial BN statistics) and its recipe."""
    root = tmp_path_factory.mktemp("serve")
    model = build_model("tiny_cnn", "linear", num_classes=len(CLASSES), image_size=SIZE)
    rng = np.random.default_rng(1)
    for v in model.non_trainable_variables:  # moving statistics away from 0/1, so a lost variable shows
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    student = root / "run" / "student"
    student.mkdir(parents=True)
    model.save(student / "model.keras")
    (student / "metrics.json").write_text(json.dumps({"classes": CLASSES}))
    recipe = root / "r.yaml"
    recipe.write_text(json.dumps({
        "run_dir": str(root / "run"),
        "data": {"dir": str(root / "no-data"), "image_size": SIZE},
        "model": {"backbone": "tiny_cnn", "head": "linear", "weights": None},
    }))
    return {"root": root, "recipe": recipe, "model": model, "student": student}


@pytest.fixture(scope="module")
def exported(run):
    out = run["root"] / "serving"
    result = CliRunner().invoke(cli, ["export", "--recipe", str(run["recipe"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output}


def test_export_layout_signature_and_report(run, exported):
    version = exported["out"] / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert (version / "assets" / export.CLASSES_ASSET).read_text().splitlines() == CLASSES
    text = exported["output"]
    assert "signature_def['serving_default']" in text and "inputs['images']" in text
    assert "dtype: DT_STRING" in text and "shape: (-1,)" in text
    assert "outputs['probabilities']" in text and f"shape: (-1, {len(CLASSES)})" in text
    assert "signature_def['pixels']" in text and f"shape: (-1, {SIZE}, {SIZE}, 3)" in text
    assert ": PASS" in text and "could not be decoded" in text
    assert not list(exported["out"].glob(".*")), "temporary files left behind"


# Run in a fresh interpreter where `import cpsd_tf` fails: the SavedModel must not need the package.
_CLIENT = textwrap.dedent(
    """
    import json, sys
    sys.modules["cpsd_tf"] = None
    import numpy as np, tensorflow as tf
    try:
        import cpsd_tf
        raise SystemExit("cpsd_tf is importable")
    except ImportError:
        pass
    m = tf.saved_model.load(sys.argv[1])
    images = [bytes.fromhex(h) for h in json.load(open(sys.argv[2]))]
    out = m.signatures["serving_default"](images=tf.constant(images))
    print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                      "classes": [c.decode() for c in out["classes"].numpy()[0]]}))
    """
)


def test_fresh_process_without_cpsd_tf_serves_the_keras_probabilities(run, exported, tmp_path):
    images = _images(5, seed=7)
    (tmp_path / "images.json").write_text(json.dumps([b.hex() for b in images]))
    proc = subprocess.run([sys.executable, "-c", _CLIENT, str(exported["out"] / "1"), str(tmp_path / "images.json")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["classes"] == CLASSES
    np.testing.assert_allclose(served["probabilities"], _keras_probs(run["model"], images), atol=1e-5)


def test_pixels_signature_and_bad_bytes(run, exported):
    loaded = tf.saved_model.load(str(exported["out"] / "1"))
    images = _images(3)
    pixels = tf.stack([preprocess.to_unit(preprocess.decode_resize(tf.constant(b), SIZE)) for b in images])
    out = loaded.signatures["pixels"](pixels=pixels)
    np.testing.assert_allclose(out["probabilities"].numpy(), _keras_probs(run["model"], images), atol=1e-5)
    assert out["classes"].shape == (3, len(CLASSES))
    with pytest.raises(tf.errors.InvalidArgumentError, match="could not be decoded"):
        loaded.signatures["serving_default"](images=tf.constant([images[0], b"not an image at all"]))


def _snapshot(folder):
    """Every path under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_second_export_is_the_next_version_and_leaves_the_run_dir_alone(run, exported):
    run_dir = run["student"].parent
    before = _snapshot(run_dir)
    result = export.run(recipe_mod.load(run["recipe"]), run_dir, out=str(exported["out"]))
    assert result["version"] == 2 and result["passed"]
    assert sorted(p.name for p in exported["out"].iterdir()) == ["1", "2"]
    assert _snapshot(run_dir) == before, "export wrote into the run directory"


def test_relative_out_as_in_the_readme(run, tmp_path, monkeypatch):
    # `cpsd-tf export --recipe R --out serving`: the fresh-process check runs with another cwd, so the
    # relative path must be made absolute for it.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["export", "--recipe", str(run["recipe"]), "--out", "serving"])
    assert result.exit_code == 0, result.output
    assert ": PASS" in result.output and "SavedModel: serving/1 " in result.output
    assert sorted(p.name for p in (tmp_path / "serving").iterdir()) == ["1"]
    assert (tmp_path / "serving" / "1" / "saved_model.pb").is_file()


def test_failed_verification_publishes_nothing_and_keeps_user_files(run, tmp_path, monkeypatch):
    out = tmp_path / "serving"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("mine")
    (out / "README").write_text("user file")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference can pass
    result = CliRunner().invoke(cli, ["export", "--recipe", str(run["recipe"]), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert ": FAIL" in result.output and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and f"{out}: nothing published" in error[0]
    assert sorted(p.name for p in out.iterdir()) == ["README", "notes"]  # no version, no temp folder
    assert (out / "notes" / "keep.txt").read_text() == "mine" and (out / "README").read_text() == "user file"


def test_interrupted_export_leaves_nothing(run, tmp_path, monkeypatch):
    seen = []

    def interrupted(path, model, images):
        seen.append(path)
        assert path.is_absolute() and path.name.startswith(".1.tmp-") and (path / "saved_model.pb").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "verify", interrupted)
    out = tmp_path / "new" / "serving"
    with pytest.raises(KeyboardInterrupt):
        export.run(recipe_mod.load(run["recipe"]), run["student"].parent, out=str(out))
    assert seen and not seen[0].exists()
    assert not out.exists()  # export created it and published nothing: removed again


def test_publish_never_replaces_a_version(tmp_path, monkeypatch):
    out = tmp_path / "serving"
    (out / "1").mkdir(parents=True)
    (out / "1" / "saved_model.pb").write_text("an earlier export")
    (out / "2").mkdir()  # empty, but not ours either
    (out / "3").write_text("a user's file named like a version")
    folder = out / ".4.tmp-test"
    folder.mkdir()
    (folder / "saved_model.pb").write_text("new")
    # A concurrent export published 1..3 after this one chose its number: the stale guess must move on.
    monkeypatch.setattr(export, "next_version", lambda out_dir: 1)
    assert export._publish(folder, out) == 4
    assert (out / "1" / "saved_model.pb").read_text() == "an earlier export"
    assert (out / "2").is_dir() and not list((out / "2").iterdir())
    assert (out / "3").read_text() == "a user's file named like a version"
    assert (out / "4" / "saved_model.pb").read_text() == "new" and not folder.exists()


def test_next_version_ignores_temp_folders_and_files(tmp_path):
    (tmp_path / "2").mkdir()
    (tmp_path / ".7.tmp-abcd").mkdir()
    (tmp_path / "9").write_text("file")
    (tmp_path / "v10").mkdir()
    assert export.next_version(tmp_path) == 3
    assert export.next_version(tmp_path / "missing") == 1


def test_verify_detects_a_different_model(run, exported):
    other = build_model("tiny_cnn", "linear", num_classes=len(CLASSES), image_size=SIZE)
    report = export.verify(exported["out"] / "1", other, _images(2))
    assert not report["passed"] and report["max_abs_diff"] > 1e-3


def test_export_errors_exit_2(run, tmp_path):
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(cli, ["export", "--recipe", str(run["recipe"]), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output
    result = CliRunner().invoke(cli, ["export", "--recipe", str(run["recipe"]), "--out", str(tmp_path / "o"),
                                      "--model", str(tmp_path / "missing.keras")])
    assert result.exit_code == 2 and "missing.keras" in result.output
    assert not (tmp_path / "o").exists()


def test_predict_keras_and_savedmodel_agree(run, exported, tmp_path):
    files = []
    for i, data in enumerate(_images(3, seed=3)):
        files.append(tmp_path / f"img{i}.png")
        files[-1].write_bytes(data)
    outputs = {}
    for name, model in (("keras", run["student"]), ("savedmodel", exported["out"])):
        result = CliRunner().invoke(cli, ["predict", "--model", str(model), "--threshold", "0", "--json", *map(str, files)])
        assert result.exit_code == 0, result.output
        outputs[name] = json.loads(result.output)["predictions"]
    expected = _keras_probs(run["model"], [f.read_bytes() for f in files])
    for preds in outputs.values():
        assert [p["image"] for p in preds] == [str(f) for f in files]
        for row, probs in zip(preds, expected):
            got = {x["label"]: x["probability"] for x in row["labels"]}
            assert set(got) == set(CLASSES)
            np.testing.assert_allclose([got[c] for c in CLASSES], probs, atol=1e-5)
            assert [x["probability"] for x in row["labels"]] == sorted(got.values(), reverse=True)
    table = CliRunner().invoke(cli, ["predict", "--model", str(run["student"]), "--top", "2", str(files[0])])
    assert table.exit_code == 0 and table.output.splitlines()[0] == str(files[0])
    assert len(table.output.splitlines()) == 3


def test_predict_bad_image_exits_2(run, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated nonsense")
    result = CliRunner().invoke(cli, ["predict", "--model", str(run["student"]), str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: could not be decoded as an image" in result.output


# === Image formats: JPEG and PNG only, as the converters (what training decodes) ===


def test_serving_refuses_formats_the_converters_refuse(exported):
    """decode_image would take GIF, BMP and WebP; the signature takes JPEG and PNG, like the records."""
    from helpers_images import image_bytes

    serve = tf.saved_model.load(str(exported["out"] / "1")).signatures["serving_default"]
    assert serve(images=tf.constant([image_bytes("JPEG", 20), image_bytes("PNG", 20)]))["probabilities"].shape[0] == 2
    for fmt in ("GIF", "BMP", "WEBP"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="could not be decoded: expected JPEG or PNG bytes"):
            serve(images=tf.constant([image_bytes("PNG", 20), image_bytes(fmt, 20)]))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP"])
def test_predict_refuses_formats_the_converters_refuse(run, exported, tmp_path, fmt):
    from helpers_images import write_image

    image = tmp_path / f"pic.{fmt.lower()}"
    write_image(image, fmt=fmt, size=20)
    for model in (run["student"], exported["out"]):
        result = CliRunner().invoke(cli, ["predict", "--model", str(model), str(image)])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [f"Error: {image}: is {fmt}, not JPEG or PNG"]
