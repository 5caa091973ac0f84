"""Detection end to end: the Detector, drawing, `y9k predict` (pyfunc directory and darknet files),
and the evaluate stage's Ray Data batch inference over a shard.

The model is a real yolo9000 network (width 1/8) over a six-node WordTree whose output layer is
set by hand: zero weights and biases that make anchor 0 of every cell an object, 'dog' over 'cat'
and 'Norfolk terrier' over 'Yorkshire terrier'. Its detections are therefore known exactly.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.evaluate import metrics as M
from pipelines.evaluate.plots import draw_detections
from pipelines.inference import Detector, hierarchical_label, predict_shards, read_predictions
from pipelines.registry import save_pyfunc
from pipelines.shards import SHARD_SCHEMA, write_committed

WNIDS = ["n00015388", "n02084071", "n02121808", "n02092468", "n02094114", "n02094433"]
NAMES = ["animal", "dog", "cat", "terrier", "Norfolk terrier", "Yorkshire terrier"]
PARENTS = [-1, 0, 0, 1, 3, 3]
OBJ = 1 / (1 + math.exp(-4.0))
P_DOG = math.exp(3) / (math.exp(3) + 1)


def crafted_model() -> torch.nn.Module:
    from yolo_core.models import create_model

    torch.manual_seed(0)
    model = create_model("yolo9000", width=0.125, num_classes=len(WNIDS))
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    bias = torch.zeros(model.num_anchors, 5 + len(WNIDS))
    bias[:, 4] = -10.0  # no object ...
    bias[0, 4] = 4.0  # ... except for anchor 0
    bias[:, 5 + 1] = 3.0  # dog over cat
    bias[:, 5 + 4] = 3.0  # Norfolk terrier over Yorkshire terrier
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias.flatten())
    return model.eval()


def tree():
    from yolo_core.tree import Tree

    return Tree(PARENTS, WNIDS, NAMES)


def noise_image(size: int, seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8))


def expected_boxes(size: int, grid: int = 2) -> np.ndarray:
    """Anchor 0 (0.77871 x 1.14074 cells) centred in each cell, row by row, in pixels of a square image."""
    cell = size / grid
    w, h = 0.77871 * cell, 1.14074 * cell
    centres = [((i + 0.5) * cell, (j + 0.5) * cell) for j in range(grid) for i in range(grid)]
    return np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for cx, cy in centres])


def _sorted(boxes: np.ndarray) -> np.ndarray:
    return boxes[np.lexsort((boxes[:, 0], boxes[:, 1]))]


def test_detector_finds_the_crafted_detections():
    det = Detector(crafted_model(), tree(), input_size=64, thresh=0.24, hier_thresh=0.5, nms=0.45)
    (d,) = det([noise_image(128, 0)])
    # Top-down decode: animal -> dog (.95) -> terrier (.95) -> Norfolk terrier (.91 > .5).
    assert d.classes.tolist() == [4, 4, 4, 4]
    np.testing.assert_allclose(d.scores, OBJ, rtol=1e-5)
    np.testing.assert_allclose(_sorted(d.boxes), expected_boxes(128), atol=1e-3)
    # With the DET-style subset [Norfolk terrier, cat], scores are obj x absolute P(node).
    det = Detector(crafted_model(), tree(), input_size=64, thresh=0.005, class_subset=[4, 2])
    (d,) = det([noise_image(128, 0)])
    by_class = {c: d.scores[d.classes == c] for c in (0, 1)}
    np.testing.assert_allclose(by_class[0], OBJ * P_DOG * P_DOG, rtol=1e-5)
    np.testing.assert_allclose(by_class[1], OBJ * (1 - P_DOG), rtol=1e-5)


def real_coco_images(n: int) -> list[Image.Image]:
    from tests.conftest import shared_path

    files = sorted(shared_path("coco_mini", "val2017").glob("*.jpg"))[:n]
    return [Image.open(f).convert("RGB") for f in files]


def test_backends_give_the_same_detections_as_the_eager_model():
    """ONNX Runtime, the torch inference form and the training graph agree on real images."""
    from yolo_core.inference import onnxruntime_available
    from yolo_core.models import create_model
    from yolo_core.postprocess import detect
    from yolo_core.transforms import letterbox, unletterbox_boxes

    torch.manual_seed(3)
    model = create_model("yolov2", width=0.125).eval()
    g = torch.Generator().manual_seed(4)
    for m in model.modules():  # batch norm statistics far from the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * .3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + .2)
    with torch.no_grad():  # decisive class scores: few near the threshold, where rounding could flip them
        model.layers[-2].conv.weight.mul_(30)
    images = real_coco_images(3)
    x = torch.stack([letterbox(img, 128)[0] for img in images])
    with torch.no_grad():
        eager = detect(model(x), model.anchors, model.num_classes, thresh=0.2)
    assert sum(len(d.scores) for d in eager) > 20  # enough detections for the comparison to mean something
    backends = ["torch"] + (["onnxruntime"] if onnxruntime_available() else [])
    for backend in backends:
        det = Detector(model, input_size=128, thresh=0.2, backend=backend, precision="fp32")
        assert det.runner.backend == backend
        for img, want, got in zip(images, eager, det(images)):
            want_px = unletterbox_boxes(want.boxes, letterbox(img, 128)[1]).numpy()
            order_w, order_g = np.lexsort(want_px.T[::-1]), np.lexsort(got.boxes.T[::-1])
            assert got.classes[order_g].tolist() == want.classes[order_w].tolist(), backend
            np.testing.assert_allclose(got.boxes[order_g], want_px[order_w], rtol=1e-3, atol=1e-3 * img.width)
            np.testing.assert_allclose(got.scores[order_g], want.scores[order_w].numpy(), rtol=1e-4)


def test_reduced_size_jpeg_decode_keeps_original_pixels():
    from pipelines.inference import open_image, original_size

    buf = io.BytesIO()
    noise_image(512, 5).save(buf, "JPEG", quality=95)
    img = open_image(buf.getvalue(), "noise.jpg", network_size=64)
    assert img.size == (64, 64) and original_size(img) == (512, 512)  # libjpeg's 1/8 scale
    assert open_image(buf.getvalue(), "noise.jpg", network_size=300).size == (512, 512)  # shrinks < 2x: full
    (d,) = Detector(crafted_model(), tree(), input_size=64)([img])
    np.testing.assert_allclose(_sorted(d.boxes), expected_boxes(512), atol=0.05)


def test_hierarchical_labels_are_drawn():
    assert hierarchical_label(4, NAMES, PARENTS) == "Norfolk terrier < terrier < dog"
    assert hierarchical_label(1, NAMES, PARENTS) == "dog < animal"
    img = Image.new("RGB", (100, 80), (255, 255, 255))
    out = draw_detections(img, np.array([[10, 20, 60, 70.]]), np.array([0.9]), ["Norfolk terrier < terrier < dog"])
    a = np.asarray(out)
    assert out.size == img.size and np.asarray(img).min() == 255  # the input is left alone
    assert (a[45, 10] != 255).any() and (a[45, 35] == 255).all()  # the box edge is drawn, its inside is not


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    save_pyfunc(path, crafted_model(), wnids=WNIDS, names=NAMES, parents=PARENTS, input_size=64, thresh=0.24)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    noise_image(128, 1).save(d / "a.jpg", quality=95)
    noise_image(96, 2).save(d / "b.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_model_carries_a_servable_input_example(model_dir):
    """MLflow's own serving path: the stored example, parsed as a scoring request, predicts."""
    import mlflow
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    model = mlflow.pyfunc.load_model(str(model_dir))
    request = (model_dir / "serving_input_example.json").read_text()
    data = infer_and_parse_data(json.loads(request), model.metadata.get_input_schema())
    assert list(data.columns) == ["image"] and Image.open(io.BytesIO(data["image"][0])).size == (64, 64)
    out = model.predict(data)
    # The crafted model finds its one object per cell at anchor 0: detections, labelled from the tree.
    assert len(out) > 0 and set(out["label"]) == {"Norfolk terrier < terrier < dog"}


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_predict_with_pyfunc_directory_and_with_darknet_files(model_dir, image_dir, tmp_path, capsys):
    from yolo_core.weights import save_weights

    out, drawn = tmp_path / "preds.jsonl", tmp_path / "drawn"
    assert main(["predict", "--model", str(model_dir), "--images", str(image_dir), "--out", str(out),
                 "--draw", str(drawn)]) == 0
    progress = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("predict: ")]
    assert len(progress) == 1 and progress[0].startswith("predict: 2/2 images, ") and "images/s" in progress[0]
    recs = _read_jsonl(out)
    assert [r["image"].rsplit("/", 1)[1] for r in recs] == ["a.jpg", "b.png"]
    for r in recs:
        assert len(r["detections"]) == 4
        assert {d["label"] for d in r["detections"]} == {"Norfolk terrier < terrier < dog"}
        assert {d["wnid"] for d in r["detections"]} == {"n02094114"}
        np.testing.assert_allclose(_sorted(np.array([d["box"] for d in r["detections"]])),
                                   expected_boxes(r["width"]), atol=0.01)
    for stem, size in (("a", 128), ("b", 96)):
        img = Image.open(drawn / f"{stem}.jpg")
        assert img.size == (size, size)

    # The same network as darknet files gives the same detections.
    model = crafted_model()
    (tmp_path / "net.cfg").write_text(model.cfg_text())
    save_weights(model, tmp_path / "net.weights")
    (tmp_path / "net.tree").write_text("".join(f"{w} {p}\n" for w, p in zip(WNIDS, PARENTS)))
    (tmp_path / "net.names").write_text("\n".join(NAMES) + "\n")
    out2 = tmp_path / "darknet.jsonl"
    assert main(["predict", "--cfg", str(tmp_path / "net.cfg"), "--weights", str(tmp_path / "net.weights"),
                 "--tree", str(tmp_path / "net.tree"), "--names", str(tmp_path / "net.names"),
                 "--images", str(image_dir / "a.jpg"), str(image_dir / "b.png"), "--input-size", "64",
                 "--thresh", "0.24", "--out", str(out2)]) == 0
    assert [r["detections"] for r in _read_jsonl(out2)] == [r["detections"] for r in recs]
    # At --hier-thresh .85 the two decodes part: darknet's compounded product .95 x .95 x .91 = .82 stops at
    # 'terrier' (its default for darknet files); the intended rule (absolute P(Norfolk) = .91) goes on.
    for mode, label in ((None, "terrier < dog < animal"), ("intended", "Norfolk terrier < terrier < dog")):
        args = ["predict", "--cfg", str(tmp_path / "net.cfg"), "--weights", str(tmp_path / "net.weights"),
                "--tree", str(tmp_path / "net.tree"), "--names", str(tmp_path / "net.names"), "--images",
                str(image_dir / "b.png"), "--input-size", "64", "--hier-thresh", "0.85", "--out", str(out2)]
        assert main(args + (["--tree-decode", mode] if mode else [])) == 0
        assert {d["label"] for d in _read_jsonl(out2)[0]["detections"]} == {label}
    # --thresh above the objectness leaves nothing.
    assert main(["predict", "--model", str(model_dir), "--images", str(image_dir / "a.jpg"), "--thresh", "0.99",
                 "--out", str(out2)]) == 0
    assert _read_jsonl(out2)[0]["detections"] == []


def test_export_onnx_from_model_directory_and_darknet_files(model_dir, tmp_path, capsys):
    """`y9k export` round trip: the file runs in ONNX Runtime at another batch size and gives the torch outputs."""
    from yolo_core.inference import OnnxRuntimeModel, onnxruntime_available
    from yolo_core.weights import save_weights

    if not onnxruntime_available():
        pytest.skip("onnxruntime is not installed (pip install '.[onnx]'; the dev extra includes it)")
    model = crafted_model()
    with torch.no_grad():  # outputs that depend on the input, so the comparison checks the whole graph
        model.layers[-2].conv.weight.normal_(0, 0.05)
    (tmp_path / "net.cfg").write_text(model.cfg_text())
    save_weights(model, tmp_path / "net.weights")
    x = torch.rand(3, 3, 96, 64)
    for src in (["--model", str(model_dir)], ["--cfg", str(tmp_path / "net.cfg"), "--weights", str(tmp_path / "net.weights")]):
        out = tmp_path / "m.onnx"
        assert main(["export", *src, "--format", "onnx", "--out", str(out), "--input-size", "64"]) == 0
        assert "checked with ONNX Runtime" in capsys.readouterr().out
        ref = crafted_model() if src[0] == "--model" else model
        with torch.no_grad():
            want = ref(x)
        got = OnnxRuntimeModel(out, ref)(x)
        assert got.shape == want.shape and (got - want).abs().max() <= 1e-5 * want.abs().max()
    # The pyfunc model carries the export, and its detector runs it.
    assert (model_dir / "artifacts" / "model.onnx").exists()
    from pipelines.registry import load_pyfunc
    from yolo_core.inference import choose_precision

    auto = load_pyfunc(str(model_dir)).detector.runner
    # bf16 where the CPU computes it natively (torch), ONNX Runtime in fp32 elsewhere.
    assert auto.backend == ("torch" if choose_precision("cpu").name == "bf16" else "onnxruntime")
    assert load_pyfunc(str(model_dir), precision="fp32").detector.runner.backend == "onnxruntime"
    assert main(["export", "--cfg", str(tmp_path / "net.cfg"), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "--cfg needs --weights" in capsys.readouterr().err


def test_pyfunc_takes_bytes_or_paths_and_names_bad_rows(model_dir, image_dir):
    import pandas as pd

    from pipelines.registry import OUTPUT_COLUMNS, RegistryError, load_pyfunc

    model = load_pyfunc(str(model_dir))
    paths = [str(image_dir / "a.jpg"), str(image_dir / "b.png")]
    by_path = model.predict(None, pd.DataFrame({"path": paths}))
    by_bytes = model.predict(None, pd.DataFrame({"image": [open(p, "rb").read() for p in paths]}))
    assert list(by_path.columns) == OUTPUT_COLUMNS and len(by_path) == 8
    pd.testing.assert_frame_equal(by_path, by_bytes)
    assert len(model.predict(None, pd.DataFrame({"path": paths}), params={"thresh": 0.99})) == 0
    with pytest.raises(RegistryError, match=r"input row 1, field 'path': cannot read '/nowhere.jpg'"):
        model.predict(None, pd.DataFrame({"path": [paths[0], "/nowhere.jpg"]}))
    with pytest.raises(RegistryError, match=r"input row 0: needs non-empty bytes in 'image' or a path"):
        model.predict(None, pd.DataFrame({"image": [b""]}))


def test_predict_errors_are_one_line_messages(model_dir, image_dir, tmp_path, capsys):
    model = crafted_model()
    (tmp_path / "net.cfg").write_text(model.cfg_text())
    assert main(["predict", "--cfg", str(tmp_path / "net.cfg"), "--images", str(image_dir)]) == 1
    assert "--cfg needs --weights" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--images", str(tmp_path / "missing")]) == 1
    assert f"{tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert main(["predict", "--model", str(model_dir), "--images", str(tmp_path / "bad.jpg")]) == 1
    assert "bad.jpg: not a readable image" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--images", str(image_dir), "--input-size", "50"]) == 1
    assert "--input-size 50 is not a multiple of 32" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Ray Data batch inference and the evaluate stage
# --------------------------------------------------------------------------------------------

DET_CLASSES = [("n02094114", 1, "Norfolk terrier"), ("n02121808", 2, "cat")]
SPLIT = {"n02094114": "seen", "n02121808": "unseen"}


@pytest.fixture
def det_shard(tmp_path):
    """Two 64 px images stored for 128 px originals: one Norfolk terrier box exactly where cell (0, 0)
    predicts, one tiny cat box that nothing matches."""
    rows = []
    boxes = {"a": [[0.25, 0.25, 0.77871 / 2, 1.14074 / 2]], "b": [[0.9, 0.9, 0.05, 0.05]]}
    labels = {"a": ["n02094114"], "b": ["n02121808"]}
    for k, key in enumerate(("a", "b")):
        buf = io.BytesIO()
        noise_image(64, k).save(buf, format="JPEG", quality=95)
        rows.append({"image_id": f"imagenet_det/val/{key}", "dataset": "imagenet_det", "split": "val",
                     "kind": "detection", "source_uri": f"/data/{key}.JPEG", "image": buf.getvalue(),
                     "orig_width": 128, "orig_height": 128, "width": 64, "height": 64, "boxes": boxes[key],
                     "box_nodes": [4 if key == "a" else 2], "box_labels": labels[key], "image_node": -1,
                     "image_label": ""})
    d = tmp_path / "shards" / "imagenet_det-val"
    write_committed(str(d), [pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)])
    return d


def test_batch_inference_and_evaluate_stage(ray_local, det_shard, tmp_path):
    from pipelines.evaluate.stage import run_evaluate

    n = predict_shards(crafted_model(), [str(det_shard / "part-00000.parquet")], str(tmp_path / "preds"), tree=tree(),
                       class_subset=[4, 2], input_size=64, thresh=0.24, batch_size=2, num_actors=1)
    table = read_predictions(str(tmp_path / "preds")).sort_by("image_id")
    assert n == 2 and table.column("image_id").to_pylist() == ["imagenet_det/val/a", "imagenet_det/val/b"]
    for boxes, classes in zip(table.column("boxes").to_pylist(), table.column("classes").to_pylist()):
        assert classes == [0, 0, 0, 0]  # Norfolk terrier only: cat's .05 is under .24
        # Boxes are in pixels of the 128 px originals, not of the stored 64 px images.
        np.testing.assert_allclose(_sorted(np.array(boxes)), expected_boxes(128), atol=0.01)

    cfg = load_config("demo", ["eval.input_size=64", "eval.draw_images=2", f"storage.root={tmp_path}"])
    out = tmp_path / "eval"
    res = run_evaluate(cfg.eval, cfg.ray, None, crafted_model(), [str(det_shard)], tree(), DET_CLASSES, str(out),
                       split=SPLIT)
    ap_norfolk = res.per_class[0]["ap50"]
    assert 0.2 <= ap_norfolk <= 1.0  # the exact box is found, among equal-scored others
    assert res.per_class[1]["ap50"] == 0.0  # the tiny cat box is missed
    assert res.metrics["map50_seen"] == pytest.approx(ap_norfolk)
    assert res.metrics["map50_unseen"] == 0.0
    assert res.metrics["map50_all"] == pytest.approx(ap_norfolk / 2)
    for name in ("per_class.csv", "metrics.json", "pr_curves.png", "manifest.json",
                 "images/imagenet_det_val_a.jpg"):
        assert (out / name).exists(), name

    # The same number computed without Ray: the Detector on the decoded images, boxes scaled x2.
    gt = M.ground_truth_from_shards(pq.read_table(det_shard / "part-00000.parquet"), [c[0] for c in DET_CLASSES])
    det = Detector(crafted_model(), tree(), input_size=64, thresh=cfg.eval.thresh, class_subset=[4, 2])
    dets = det([noise_image_from_shard(det_shard, i) for i in range(2)])
    preds = M.Predictions(np.vstack([d.boxes * 2 for d in dets]), np.concatenate([d.scores for d in dets]),
                          np.concatenate([np.full(len(d.scores), i) for i, d in enumerate(dets)]),
                          np.concatenate([d.classes for d in dets]))
    assert M.ap50(gt, preds).ap50[0] == pytest.approx(ap_norfolk)

    again = run_evaluate(cfg.eval, cfg.ray, None, crafted_model(), [str(det_shard)], tree(), DET_CLASSES, str(out),
                         split=SPLIT)
    assert again.skipped and again.metrics == res.metrics


def noise_image_from_shard(shard_dir, row: int) -> Image.Image:
    data = pq.read_table(shard_dir / "part-00000.parquet", columns=["image"]).column("image")[row].as_py()
    return Image.open(io.BytesIO(data)).convert("RGB")
