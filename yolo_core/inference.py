"""The inference form of a darknet model, its ONNX export, and an ONNX Runtime runner.

- :func:`inference_model`: a copy of a model for prediction only: every batch norm folded into
  its convolution with darknet's inference formula (``scale * (x - mean) / (sqrt(var) + 1e-6) +
  bias``, the epsilon outside the root, as `DarknetBatchNorm2d` computes in eval mode), folded
  in float64 so the result equals the eager model to float32 rounding; weights in
  ``channels_last`` (what oneDNN's convolutions want on CPU); leaky activations in place; no
  gradients. Run it under ``torch.inference_mode()`` (see :func:`run_model`).
- :func:`choose_precision`: bf16 autocast only where the hardware computes bf16 natively
  (CUDA devices that report it; CPUs with AVX512-BF16 or AMX-BF16, whose bf16 dot products
  do twice the work per instruction). Elsewhere fp32, which keeps the outputs equal to the
  eager model; bf16 moves them by ~5e-3 relative. The choice is returned with a reason for the logs.
- :func:`export_onnx`: the folded network as ONNX (NCHW input ``images``, output ``raw``: the
  region layer's input, dynamic batch, height and width). Region decode and NMS stay outside
  the graph, in ``yolo_core.postprocess.detect``, so every backend shares them.
- :class:`OnnxRuntimeModel`: an ONNX Runtime session that is called like the torch model (a
  float tensor in, the raw region map out) and carries the attributes ``detect`` needs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from yolo_core.layers import DARKNET_BN_EPS, ConvBlock

log = logging.getLogger(__name__)

ONNX_INPUT, ONNX_OUTPUT = "images", "raw"
ONNX_OPSET = 17


def fold_batchnorm(block: ConvBlock) -> None:
    """Fold the block's batch norm (eval statistics, darknet's formula) into its convolution, in place."""
    bn = block.bn
    if bn is None:
        return
    conv = block.conv
    # float64: the folded weights are then a single rounding away from the exact product.
    s = bn.weight.double() / (bn.running_var.double().sqrt() + DARKNET_BN_EPS)
    weight = conv.weight.double() * s[:, None, None, None]
    bias = bn.bias.double() - bn.running_mean.double() * s
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight.to(conv.weight.dtype))
        folded.bias.copy_(bias.to(conv.weight.dtype))
    block.conv, block.bn = folded, None


def to_channels_last(model: nn.Module) -> nn.Module:
    """Every 4-d parameter and buffer in channels_last, in place (``Module.to(memory_format=...)``
    refuses models with other ranks, e.g. YOLOv1's locally connected weights)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def inference_model(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """A copy of ``model`` for prediction: batch norm folded, channels_last, in-place activations, eval, no grads.

    The original model is not changed (it may still be trained or saved as darknet weights).
    """
    m = copy.deepcopy(model).eval()
    for module in m.modules():
        if isinstance(module, ConvBlock):
            fold_batchnorm(module)
            module.inplace = True
    m.requires_grad_(False)
    if channels_last:
        m = to_channels_last(m)
    m.inference_form = True
    return m


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True)
class Precision:
    """The compute type chosen for a device, and why (for the logs)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"


def choose_precision(device: str | torch.device, requested: str = "auto") -> Precision:
    """fp32, or bf16 autocast where the device computes bf16 natively (``requested='auto'``).

    On a Zen 4 CPU with AVX512-BF16, YOLOv2 runs 1.3x (batch 1) to 1.7x (batch 8) faster in bf16
    than ONNX Runtime in fp32 (tests/benchmarks/results/inference.json); without native bf16,
    autocast emulates it and gains nothing. ``requested`` 'fp32' / 'bf16' forces the choice.
    """
    device = torch.device(device)
    if requested == "fp32":
        return Precision(torch.float32, "fp32 requested")
    if requested == "bf16":
        return Precision(torch.bfloat16, "bf16 requested")
    if requested != "auto":
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {requested!r}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision(torch.bfloat16, f"{torch.cuda.get_device_name(device)} computes bf16 natively")
        return Precision(torch.float32, f"{torch.cuda.get_device_name(device)} has no native bf16")
    if device.type == "cpu":
        native = sorted({"avx512_bf16", "amx_bf16"} & _cpu_flags())
        if native:
            return Precision(torch.bfloat16, f"the CPU computes bf16 natively ({', '.join(native)})")
        return Precision(torch.float32, "the CPU has no native bf16 (avx512_bf16 / amx_bf16)")
    return Precision(torch.float32, f"no bf16 policy for device type {device.type!r}")


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: Precision) -> Iterator[None]:
    """Autocast to bf16 when the precision says so; nothing otherwise."""
    if precision.dtype == torch.bfloat16:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            yield
    else:
        yield


def run_model(model: nn.Module, x: torch.Tensor, precision: Precision | None = None) -> torch.Tensor:
    """One forward pass for prediction: inference mode, channels_last input when the weights are, fp32 out."""
    with torch.inference_mode():
        if getattr(model, "inference_form", False) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, precision or Precision(torch.float32, "")):
            out = model(x)
        return out.float()


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


class OnnxExportError(RuntimeError):
    """The model cannot be exported, or ONNX support is not installed."""

    user_facing = True


def export_onnx(model: nn.Module, out: str | os.PathLike[str] | io.BytesIO, input_size: int = 416) -> None:
    """Write the folded network as ONNX: input ``images`` (B, 3, H, W) float32 in [0, 1], output ``raw``.

    Batch, height and width are dynamic (any multiple of the network stride). The graph ends at
    the region layer's input; decode and NMS are `yolo_core.postprocess.detect`.
    """
    m = inference_model(model, channels_last=False)  # the trace is layout-free; ORT picks its own
    x = torch.zeros(1, 3, input_size, input_size)
    dims = {0: "batch", 2: "height", 3: "width"}
    import warnings

    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about the shape checks it traces.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(m, (x,), out, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                              dynamic_axes={ONNX_INPUT: dims, ONNX_OUTPUT: dims}, opset_version=ONNX_OPSET,
                              dynamo=False, do_constant_folding=True)
        except ModuleNotFoundError as e:
            raise OnnxExportError(f"ONNX export needs {e.name} (pip install '.[onnx]')") from None


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime CPU session standing in for the torch model: ``raw = runner(images)``.

    Holds the region parameters (``anchors``, ``num_classes``, ...) of the model it was exported
    from, so ``yolo_core.postprocess.detect`` treats it like the torch model.
    """

    def __init__(self, onnx_model: bytes | str | os.PathLike[str], like: nn.Module,
                 threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxExportError("the ONNX Runtime backend needs onnxruntime (pip install '.[onnx]')") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        src = onnx_model if isinstance(onnx_model, bytes) else os.fspath(onnx_model)
        self.session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
        self.register_buffer("_anchors", like.anchors.detach().cpu().clone() if like.anchors is not None else None)
        self.num_classes = like.num_classes
        self.num_anchors = like.num_anchors
        self.stride = like.stride
        self.net = like.net

    @classmethod
    def from_model(cls, model: nn.Module, input_size: int = 416, threads: int | None = None) -> OnnxRuntimeModel:
        """Export ``model`` in memory and open a session on it."""
        buf = io.BytesIO()
        export_onnx(model, buf, input_size)
        return cls(buf.getvalue(), model, threads)

    @property
    def anchors(self) -> torch.Tensor | None:
        return self._anchors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (raw,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: arr})
        return torch.from_numpy(raw)


# --------------------------------------------------------------------------------------------
# Choosing the backend
# --------------------------------------------------------------------------------------------

BACKENDS = ("auto", "torch", "onnxruntime")


@dataclass
class Runner:
    """The network as a prediction callable: ``raw = runner(images)`` (float32 NCHW in, float32 out)."""

    backend: str  # "torch" or "onnxruntime"
    model: nn.Module  # the inference form, or an OnnxRuntimeModel
    precision: Precision

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "onnxruntime":
            return self.model(x)
        return run_model(self.model, x, self.precision)

    def describe(self) -> str:
        return f"{self.backend} ({self.precision.name}: {self.precision.reason})"


def make_runner(model: nn.Module, device: str | torch.device = "cpu", backend: str = "auto",
                precision: str = "auto", input_size: int = 416,
                onnx_model: bytes | str | os.PathLike[str] | None = None) -> Runner:
    """The fastest faithful way to run ``model`` on ``device``.

    ``backend='auto'``: where the precision is bf16 (native bf16, see :func:`choose_precision`),
    the torch inference form under bf16 autocast; else ONNX Runtime on CPU when it is installed
    (1.4x the torch inference form in fp32 on the benchmark machine, see
    tests/benchmarks/results/inference.json); else the torch inference form (GPUs too).
    ``onnx_model`` reuses an exported file (e.g. the registered model's artifact) instead of
    exporting in memory.
    """
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    prec = choose_precision(device, precision)
    if backend == "auto":
        backend = ("onnxruntime" if device.type == "cpu" and prec.dtype == torch.float32
                   and onnxruntime_available() else "torch")
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise ValueError(f"the onnxruntime backend runs on the CPU, not {device}")
        if precision == "bf16":
            raise ValueError("the onnxruntime backend runs in fp32; use backend='torch' for bf16")
        ort_model = (OnnxRuntimeModel(onnx_model, model) if onnx_model is not None
                     else OnnxRuntimeModel.from_model(model, input_size))
        return Runner("onnxruntime", ort_model, Precision(torch.float32, "ONNX Runtime CPU, fp32"))
    return Runner("torch", inference_model(model.to(device), channels_last=True), prec)
