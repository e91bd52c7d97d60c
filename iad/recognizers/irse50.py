"""facexlib's IR-SE50 ArcFace recognizer, in torch: the face embedding Lynx was trained on.

The network is written here from its published structure (ResNet-50 "IR-SE": improved residual
units with squeeze-and-excitation, ArcFace head) so that facexlib's released state dict
``recognition_arcface_ir_se50.pth`` loads into it with ``strict=True``. Key layout (see
docs/lynx.md for the full table):

- ``input_layer.{0,1,2}``: conv 3x3 3->64 (no bias), BatchNorm2d(64), PReLU(64)
- ``body.{0..23}``: 3 + 4 + 14 + 3 units of widths 64 / 128 / 256 / 512; the first unit of every
  stage has stride 2. ``body.N.res_layer.{0..5}`` = BN(in), conv3x3(in->d), PReLU(d),
  conv3x3(d->d, stride), BN(d), SE(d, reduction 16: ``fc1``/``fc2`` 1x1 convs without bias).
  ``body.N.shortcut_layer`` is a parameter-free 1x1 max-pool (stride) when in == d, else
  ``{0: conv1x1(in->d, stride, no bias), 1: BN(d)}``.
- ``output_layer.{0,3,4}``: BatchNorm2d(512), Linear(512*7*7 -> 512), BatchNorm1d(512)
  (indices 1 and 2 are the parameter-free dropout and flatten).

Input: a 112x112 face crop aligned with the standard 5-point ArcFace template (what insightface's
``face_align.norm_crop`` produces), **BGR** channel order, scaled to [-1, 1]. Output: a 512-d
L2-normalised embedding.

Weights are user-supplied files: ``.safetensors``, or a ``.pth`` state dict read with
``torch.load(weights_only=True)`` - arbitrary pickled objects are never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IRSE50_EMBEDDER = "facexlib/irse50"
INPUT_SIZE = 112
EMBED_DIM = 512
# (width, number of units) per stage; the first unit of each stage downsamples by 2.
STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
SE_REDUCTION = 16
# File names users have for these weights (facexlib's release name first).
KNOWN_FILENAMES = (
    "recognition_arcface_ir_se50.pth",
    "recognition_arcface_ir_se50.safetensors",
    "arcface_ir_se50.pth",
    "arcface_ir_se50.safetensors",
)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class _IRSEUnit(nn.Module):
    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        if in_channels == width:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # plain subsampling, no parameters
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, width, 1, stride, bias=False), nn.BatchNorm2d(width)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.PReLU(width),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            _SqueezeExcite(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """The IR-SE50 backbone; ``forward`` takes BGR [-1, 1] crops (N, 3, 112, 112)."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        in_channels = 64
        for width, count in STAGES:
            for index in range(count):
                units.append(_IRSEUnit(in_channels, width, 2 if index == 0 else 1))
                in_channels = width
        self.body = nn.Sequential(*units)
        spatial = INPUT_SIZE // 2 ** len(STAGES)  # 112 / 16 = 7
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(0.6),  # inactive in eval mode; kept so the state-dict indices match
            nn.Flatten(),
            nn.Linear(512 * spatial * spatial, EMBED_DIM),
            nn.BatchNorm1d(EMBED_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"IR-SE50 expects aligned crops of shape (N, 3, 112, 112); got {tuple(x.shape)}")
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


def build_irse50() -> IRSE50:
    return IRSE50().eval()


def expected_keys() -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the architecture with its shape (what a weights file must contain)."""
    with torch.device("meta"):  # shapes only: no memory, no init time
        net = IRSE50()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"IR-SE50 weights {path} are not a readable safetensors file ({exc}).") from exc
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        import pickle

        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"IR-SE50 weights {path} contain pickled Python objects besides tensors. IaD only reads plain "
                "state dicts (torch.load with weights_only=True) and never unpickles arbitrary objects. "
                "Use facexlib's original recognition_arcface_ir_se50.pth or a .safetensors export of it."
            ) from exc
        except Exception as exc:
            raise ValueError(f"IR-SE50 weights {path} could not be read as a torch state dict ({exc}).") from exc
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"IR-SE50 weights {path} are not a state dict of tensors (got {type(obj).__name__}).")
        return obj
    raise ValueError(f"IR-SE50 weights {path}: unsupported file type '{suffix}' (use .pth or .safetensors).")


def load_irse50(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> IRSE50:
    """Load facexlib's IR-SE50 weights into our architecture, refusing anything that does not match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"IR-SE50 weights not found at {path}. Place facexlib's recognition_arcface_ir_se50.pth "
            "(or a .safetensors export) there."
        )
    state = _read_state_dict(path)
    # Checkpoints saved from nn.DataParallel carry a "module." prefix.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    expected = expected_keys()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} is not an IR-SE50 ArcFace state dict: {len(missing)} keys missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
            "Expected facexlib's recognition_arcface_ir_se50.pth (Backbone(50, mode='ir_se'))."
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, IR-SE50 needs {shape}.")
    net = IRSE50()
    net.load_state_dict(state, strict=True)
    return net.eval().to(device=device, dtype=dtype)


def find_weights(folders) -> Path | None:
    """The first known IR-SE50 weights file in ``folders`` (searched in order, then one level deep)."""
    for folder in folders:
        folder = Path(folder)
        for candidate in [folder / name for name in KNOWN_FILENAMES] + [
            sub / name for sub in sorted(folder.glob("*")) if sub.is_dir() for name in KNOWN_FILENAMES
        ]:
            if candidate.is_file():
                return candidate
    return None


class IRSE50Recognizer:
    """Batched embedding of aligned 112x112 crops with IR-SE50 (the recognizer Lynx was trained on)."""

    embedder = IRSE50_EMBEDDER
    input_size = INPUT_SIZE

    def __init__(self, net: IRSE50, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 prepare: Callable[[], object] | None = None) -> None:
        self.net = net.eval().to(device=device, dtype=dtype)
        self.dtype = dtype
        # called before every embedding: in ComfyUI, model management loads the network where it runs
        # (and may have offloaded it since), so the inputs follow the weights, wherever they are now
        self.prepare = prepare

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        return cls(load_irse50(path), device, dtype)

    @staticmethod
    def preprocess(crops_bgr) -> torch.Tensor:
        """uint8 (or 0..255 float) BGR crops (N, 112, 112, 3) -> network input (N, 3, 112, 112) in [-1, 1]."""
        x = torch.as_tensor(np.ascontiguousarray(crops_bgr) if isinstance(crops_bgr, np.ndarray) else crops_bgr)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"IR-SE50 needs aligned 112x112x3 crops; got {tuple(x.shape)}")
        return (x.float().permute(0, 3, 1, 2) / 255.0) * 2.0 - 1.0

    @torch.no_grad()
    def embed_bgr_crops(self, crops_bgr, batch_size: int = 64) -> torch.Tensor:
        """(N, 512) float32 L2-normalised embeddings of BGR crops, computed in batches."""
        x = self.preprocess(crops_bgr)
        if self.prepare is not None:
            self.prepare()
        device = self.device
        out = [
            self.net(x[i:i + batch_size].to(device, self.dtype)).float().cpu()
            for i in range(0, x.shape[0], batch_size)
        ]
        return F.normalize(torch.cat(out), dim=1)

    def embed_rgb_crops(self, crops_rgb, batch_size: int = 64) -> torch.Tensor:
        crops = crops_rgb[..., ::-1] if isinstance(crops_rgb, np.ndarray) else torch.flip(torch.as_tensor(crops_rgb), dims=[-1])
        return self.embed_bgr_crops(crops, batch_size)


def analyzer_with_irse50(analyzer, recognizer: IRSE50Recognizer):
    """A copy of a face analyzer (``iad.face_analysis.FaceAnalyzer``) that keeps its detector and its
    5-point ArcFace alignment but embeds the aligned crops with IR-SE50.

    The alignment insightface's ``norm_crop`` does at 112 px (similarity transform onto the standard
    ArcFace template) is the one Lynx uses, so only the recognizer changes. The copy's ``embedder``
    is ``facexlib/irse50``, which adapter checks compare against.
    """
    import copy

    for attribute in ("embed_aligned", "embedder", "crop_size", "describe"):
        if not hasattr(analyzer, attribute):
            raise TypeError(f"expected a FACE_ANALYSIS from IaD Face Analysis Loader, got {type(analyzer).__name__}")
    twin = copy.copy(analyzer)
    base_describe = analyzer.describe
    twin.embedder = recognizer.embedder
    twin.crop_size = INPUT_SIZE
    twin.notes = list(getattr(analyzer, "notes", [])) + [
        f"identity embeddings by IR-SE50 ({recognizer.embedder}, torch"
        f"{'' if recognizer.prepare is not None else f' on {recognizer.device}'}) on the detector's aligned 112x112 crops"
    ]

    def embed_aligned(crops) -> torch.Tensor:
        batch = [np.asarray(c) for c in crops]
        if not batch:
            return torch.zeros(0, EMBED_DIM)
        for i, crop in enumerate(batch):
            if crop.shape != (INPUT_SIZE, INPUT_SIZE, 3) or crop.dtype != np.uint8:
                raise ValueError(f"aligned face {i + 1} is {crop.shape} {crop.dtype}; IR-SE50 needs 112x112x3 uint8 RGB crops")
        return recognizer.embed_rgb_crops(np.stack(batch))

    twin.embed_aligned = embed_aligned
    twin.describe = lambda: f"{base_describe()}; identity embeddings by IR-SE50 ({recognizer.embedder})"
    return twin
