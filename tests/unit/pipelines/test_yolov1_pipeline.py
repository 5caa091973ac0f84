"""YOLOv1 in the pipeline's pieces: flat classes from the tree, the config it fixes, the v1 test
path in the Detector, and the registry bundle."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pipelines.config import ConfigError, load_config
from pipelines.inference import Detector
from pipelines.job import adapt_config_to_model
from pipelines.train.loop import build_model, flat_label_map
from yolo_core.detection import detect
from yolo_core.transforms import resize

# root 0; 1 and 2 under it; 3, 4 under 1; 5 under 3.
PARENTS = [-1, 0, 0, 1, 1, 3]


def test_flat_label_map_takes_the_node_or_its_nearest_listed_ancestor():
    assert flat_label_map(PARENTS, [3, 2]).tolist() == [-1, -1, 1, 0, -1, 0]
    assert flat_label_map(PARENTS, [1, 3]).tolist() == [-1, 0, -1, 1, 0, 1]


def test_adapt_config_to_model_changes_only_what_yolov1_fixes():
    cfg = load_config("demo", ["model.name=fast_yolo"])
    before = cfg.to_dict()
    notes = adapt_config_to_model(cfg)
    after = cfg.to_dict()
    changed = {(s, k) for s in before if isinstance(before[s], dict) for k in before[s] if before[s][k] != after[s][k]}
    assert changed == {("train", "mode"), ("train", "multiscale"), ("eval", "input_size")}
    assert (cfg.train.mode, cfg.train.multiscale, cfg.eval.input_size) == ("detect", False, cfg.train.input_size)
    assert "fast_yolo is a YOLOv1 model" in notes[0] and "train.mode: 'joint' -> 'detect'" in notes[0]
    assert adapt_config_to_model(load_config("demo")) == []  # other models: untouched
    with pytest.raises(ConfigError, match="train.mode.*'classify'.*fast_yolo"):
        adapt_config_to_model(load_config("demo", ["model.name=fast_yolo", "train.mode=classify"]))


def test_build_model_sizes_yolov1_from_the_flat_classes():
    cfg = load_config("demo", ["model.name=yolov1", "model.width=0.0625", "train.input_size=64"])
    model = build_model(cfg.model, cfg.train, None, None, [4, 7, 9])
    assert (model.num_classes, model.net.width, model.detection.spec.num) == (3, 64, 2)
    with pytest.raises(ValueError, match="flat class list"):
        build_model(cfg.model, cfg.train, None, None)


def test_detector_takes_darknets_v1_path():
    torch.manual_seed(0)
    cfg = load_config("demo", ["model.name=fast_yolo", "model.width=0.125", "train.input_size=64"])
    model = build_model(cfg.model, cfg.train, None, None, [1, 2, 3]).eval()
    img = Image.new("RGB", (120, 80), (30, 120, 200))
    (got,) = Detector(model, thresh=0.0, nms=0.4, device="cpu")([img])
    with torch.no_grad():
        (ref,) = detect(model(resize(img, 64)[None]), model.detection.spec, thresh=0.0, nms=0.4)
    assert len(got.scores) == len(ref.scores) > 0
    # box fractions of the resized input are fractions of the original image (no letterbox)
    assert torch.allclose(torch.from_numpy(got.boxes).float(), ref.boxes * torch.tensor([120., 80., 120., 80.]),
                          atol=1e-4)


def test_predict_with_darknet_v1_files_gives_darknets_detections(tmp_path, capsys):
    """`y9k predict --cfg --weights --names` on a YOLOv1 cfg: the detections darknet's `yolo test`
    path printed for the same cfg, weights and image (recorded, see darknet_v1_reference.py)."""
    import json

    from pipelines.cli import main
    from tests.conftest import shared_path
    from tests.unit.yolo_core.darknet_v1_reference import DATA, seeded_model
    from yolo_core.weights import save_weights

    save_weights(seeded_model(DATA / "mini-v1.cfg"), tmp_path / "mini.weights")
    dog, names = shared_path("darknet", "dog.jpg"), shared_path("darknet", "voc.names")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--cfg", str(DATA / "mini-v1.cfg"), "--weights", str(tmp_path / "mini.weights"),
                 "--names", str(names), "--images", str(dog), "--out", str(out)]) == 0
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    w, h = rec["width"], rec["height"]
    voc = names.read_text().splitlines()
    ours = sorted((d["name"], d["score"], *d["box"]) for d in rec["detections"])
    ref = json.loads((DATA / "reference.json").read_text())["mini-v1.cfg"]["dog"]["detections"]
    theirs = sorted((voc[c], p, (x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h)
                    for c, p, x, y, bw, bh in ref)
    assert [o[0] for o in ours] == [t[0] for t in theirs] and len(ours) > 0
    for o, t in zip(ours, theirs):
        assert o[1] == pytest.approx(t[1], abs=5e-3)  # stb_image vs libjpeg decoding of dog.jpg
        assert o[2:] == pytest.approx(t[2:], abs=5e-3 * max(w, h))
    assert main(["predict", "--cfg", str(DATA / "mini-v1.cfg"), "--weights", str(tmp_path / "mini.weights"),
                 "--images", str(dog), "--input-size", "64"]) == 1
    assert "YOLOv1 network, its input is fixed at 48x48" in capsys.readouterr().err
