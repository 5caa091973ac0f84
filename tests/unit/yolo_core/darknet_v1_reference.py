"""Seeded YOLOv1 networks and inputs shared by the tests and by the recording of darknet's outputs.

The reference files in `data/darknet_v1/` were recorded with darknet itself (pjreddie/darknet
f6afaab, CPU build): `seeded_model` filled the network, `save_weights` wrote the `.weights` file,
darknet loaded cfg and weights, ran `network_predict` on `seeded_input` (and on dog.jpg through its
`resize_image`), and printed the raw output and the detections of `get_network_boxes` +
`do_nms_sort` at .4, as `darknet yolo test` computes them. A mismatch in the `.weights` order,
a layer's arithmetic or the output layout changes those numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from yolo_core.darknet_cfg import DarknetNet, model_from_cfg

DATA = Path(__file__).resolve().parent / "data" / "darknet_v1"
THRESH = .2  # darknet yolo test's default


@torch.no_grad()
def seeded_model(cfg: str | Path, seed: int = 0) -> DarknetNet:
    """The network of `cfg` with weights drawn from a seeded generator, in eval mode."""
    model = model_from_cfg(cfg).eval()
    rng = np.random.default_rng(seed)
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if name.endswith(("running_var", "bn.weight")):
            values = rng.uniform(.5, 1.5, t.shape)
        elif t.ndim >= 2:  # conv (O, C, k, k), linear (O, I), local (L, F, C, k, k)
            fan_in = t[0, 0].numel() if t.ndim == 5 else t[0].numel()
            values = rng.uniform(-1, 1, t.shape) * (3 / fan_in) ** .5
        else:
            values = rng.uniform(-.5, .5, t.shape)
        t.copy_(torch.from_numpy(values))
    return model


def seeded_input(model: DarknetNet, seed: int = 1) -> torch.Tensor:
    """A (1, C, H, W) input in [0, 1] (darknet reads it as the same float32 CHW buffer)."""
    shape = (model.net.channels, model.net.height, model.net.width)
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))[None]
