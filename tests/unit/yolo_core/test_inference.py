"""The inference form: batch norm folded with darknet's formula, channels_last, ONNX export and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolo_core.inference import (
    OnnxRuntimeModel,
    choose_precision,
    export_onnx,
    fold_batchnorm,
    inference_model,
    onnxruntime_available,
    run_model,
)
from yolo_core.layers import ConvBlock, DarknetBatchNorm2d
from yolo_core.models import create_model, list_models

SMALL = 0.125


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Batch norm statistics and affine parameters far from their initial values, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, DarknetBatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 1e-3)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def darknet_conv_bn_leaky(x: np.ndarray, w: np.ndarray, mean, var, scale, bias) -> np.ndarray:
    """darknet's forward_convolutional_layer at test time, step by step (float64): gemm, normalize_cpu
    ((x - mean) / (sqrt(var) + .000001)), scale_bias, add_bias, leaky (.1)."""
    c_out, _, k, _ = w.shape
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    h, wd = x.shape[1:]
    out = np.zeros((c_out, h, wd))
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("oc,chw->ohw", w[:, :, dy, dx], xp[:, dy:dy + h, dx:dx + wd])
    out = (out - mean[:, None, None]) / (np.sqrt(var)[:, None, None] + .000001)
    out = out * scale[:, None, None] + bias[:, None, None]
    return np.where(out > 0, out, .1 * out)


def test_folded_block_is_darknets_formula() -> None:
    torch.manual_seed(0)
    block = trained_like(ConvBlock(4, 6, 3))
    bn = block.bn
    x = torch.randn(1, 4, 7, 5)
    want = darknet_conv_bn_leaky(x[0].double().numpy(), block.conv.weight.double().detach().numpy(),
                                 bn.running_mean.double().numpy(), bn.running_var.double().numpy(),
                                 bn.weight.double().detach().numpy(), bn.bias.double().detach().numpy())
    fold_batchnorm(block)
    assert block.bn is None and block.conv.bias is not None
    got = block(x)[0].double().detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("name", list_models())
def test_inference_form_equals_eager(name: str) -> None:
    torch.manual_seed(1)
    model = trained_like(create_model(name, width=SMALL))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    had_bn = any(isinstance(m, DarknetBatchNorm2d) for m in model.modules())  # YOLOv1 has none
    fast = inference_model(model)
    assert not any(isinstance(m, DarknetBatchNorm2d) for m in fast.modules())
    convs = [m.conv for m in fast.modules() if isinstance(m, ConvBlock)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs if c.kernel_size[0] > 1)
    assert all(not p.requires_grad for p in fast.parameters())
    fixed = getattr(model, "detection", None) is not None  # YOLOv1: connected layers fix the input
    x = torch.rand(2, 3, 448, 448) if fixed else torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        want = model(x)
    got = run_model(fast, x)
    assert got.shape == want.shape
    # float32 rounding: the folded product is one rounding away, convolutions sum in another order.
    assert (got - want).abs().max() <= 2e-5 * want.abs().max()
    # The original model is untouched (it may be trained on or saved as darknet weights).
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, DarknetBatchNorm2d) for m in model.modules()) == had_bn


def test_precision_choice() -> None:
    assert choose_precision("cpu", "fp32").dtype == torch.float32
    assert choose_precision("cpu", "bf16").name == "bf16"
    auto = choose_precision("cpu")
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    assert auto.name == ("bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "fp32") and auto.reason
    with pytest.raises(ValueError, match="'auto', 'fp32' or 'bf16'"):
        choose_precision("cpu", "fp16")
    # bf16 where asked: close to fp32 (bf16 keeps 8 bits of mantissa), returned as float32.
    model = inference_model(trained_like(create_model("yolov2_tiny", width=SMALL)))
    x = torch.rand(1, 3, 64, 64)
    ref, low = run_model(model, x), run_model(model, x, choose_precision("cpu", "bf16"))
    assert low.dtype == torch.float32 and 0 < (low - ref).abs().max() <= 0.05 * ref.abs().max()


needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime is not installed "
                               "(pip install '.[onnx]'; the dev extra includes it)")


@needs_ort
@pytest.mark.parametrize("name", list_models())
def test_onnx_round_trip(name: str, tmp_path) -> None:
    torch.manual_seed(2)
    model = trained_like(create_model(name, width=SMALL), seed=3)
    path = tmp_path / f"{name}.onnx"
    fixed = getattr(model, "detection", None) is not None  # YOLOv1: connected layers fix the input
    export_onnx(model, path, input_size=448 if fixed else 64)
    ort_model = OnnxRuntimeModel(path, model)
    # Dynamic batch and spatial size: the export was traced at batch 1.
    for shape in [(1, 3, 448, 448), (2, 3, 448, 448)] if fixed else [(1, 3, 64, 64), (3, 3, 96, 128)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            want = model(x)
        got = ort_model(x)
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 2e-5 * want.abs().max()
    if model.is_detector and not fixed:
        assert torch.equal(ort_model.anchors, model.anchors) and ort_model.num_classes == model.num_classes


def test_channels_last_training_step_matches_nchw() -> None:
    """`train.channels_last` changes the layout, not the numbers: same loss and gradients."""
    grads = []
    for channels_last in (False, True):
        torch.manual_seed(4)
        model = create_model("yolov2", width=SMALL).train()
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        model(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # Batch statistics over 2 x 2 x 2 values at the deepest layers amplify float32 rounding to ~2e-4;
    # a layout mistake would differ at the scale of the gradients themselves.
    assert (grads[0] - grads[1]).abs().max() <= 1e-3 * grads[0].abs().max()
