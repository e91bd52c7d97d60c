"""IR-SE50 ArcFace (facexlib), the recognizer Lynx was trained on: key layout, forward, loading, refusals.

The network under test (iad/recognizers/irse50.py) is checked against a straightforward functional
implementation of the published IR-SE50 structure written here, on seeded random weights whose
state-dict names are facexlib's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from iad.recognizers import IRSE50_EMBEDDER, IRSE50Recognizer, build_irse50, load_irse50
from iad.recognizers.irse50 import expected_keys, find_weights

STAGES = [(64, 3), (128, 4), (256, 14), (512, 3)]


class _Recording(dict):
    def __init__(self, *a):
        super().__init__(*a)
        self.used = set()

    def __getitem__(self, key):
        self.used.add(key)
        return super().__getitem__(key)


def reference_forward(sd, x):
    """IR-SE50 (facexlib ``Backbone(50, mode='ir_se')``) from its published structure, functionally."""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)

    x = F.prelu(bn(F.conv2d(x, sd["input_layer.0.weight"], padding=1), "input_layer.1"), sd["input_layer.2.weight"])
    unit, channels = 0, 64
    for width, count in STAGES:
        for i in range(count):
            stride = 2 if i == 0 else 1
            p = f"body.{unit}."
            if channels == width:
                shortcut = x[:, :, ::stride, ::stride]          # MaxPool2d(kernel 1, stride)
            else:
                shortcut = bn(F.conv2d(x, sd[p + "shortcut_layer.0.weight"], stride=stride), p + "shortcut_layer.1")
            r = F.conv2d(bn(x, p + "res_layer.0"), sd[p + "res_layer.1.weight"], padding=1)
            r = F.prelu(r, sd[p + "res_layer.2.weight"])
            r = bn(F.conv2d(r, sd[p + "res_layer.3.weight"], stride=stride, padding=1), p + "res_layer.4")
            gate = F.conv2d(F.relu(F.conv2d(r.mean((2, 3), keepdim=True), sd[p + "res_layer.5.fc1.weight"])), sd[p + "res_layer.5.fc2.weight"])
            x = r * torch.sigmoid(gate) + shortcut
            unit, channels = unit + 1, width
    x = bn(x, "output_layer.0").flatten(1)                       # (C, H, W) order, 512 * 7 * 7
    x = x @ sd["output_layer.3.weight"].T + sd["output_layer.3.bias"]
    x = bn(x, "output_layer.4")
    return x / x.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random facexlib-named weights (BN statistics randomised too), as .pth and .safetensors."""
    g = torch.Generator().manual_seed(50)
    state = {}
    for name, shape in expected_keys().items():
        t = torch.empty(shape)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(t.shape, generator=g)
        elif name.endswith("running_mean") or name.endswith("bias"):
            state[name] = 0.1 * torch.randn(t.shape, generator=g)
        elif t.ndim == 1:  # BN/PReLU weights
            state[name] = 0.25 + 0.5 * torch.rand(t.shape, generator=g) if ".2.weight" in name else 1.0 + 0.1 * torch.randn(t.shape, generator=g)
        else:
            fan_in = t[0].numel()
            state[name] = torch.randn(t.shape, generator=g) * (1.0 / fan_in) ** 0.5
    state = {k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()}  # exact in fp16 files
    root = tmp_path_factory.mktemp("irse50")
    pth = root / "facexlib" / "recognition_arcface_ir_se50.pth"
    pth.parent.mkdir()
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}, pth)
    st = root / "arcface_ir_se50.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}, str(st))
    return {"state": state, "pth": pth, "safetensors": st, "root": root}


@pytest.fixture(scope="module")
def crops():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)


def test_key_names_are_facexlibs_and_every_one_is_used_by_the_published_structure(weights):
    net_keys = set(build_irse50().state_dict())
    assert net_keys == set(weights["state"])
    assert len([k for k in net_keys if k.endswith("fc1.weight")]) == 24       # 3 + 4 + 14 + 3 SE units
    assert {"input_layer.0.weight", "output_layer.3.weight", "body.3.shortcut_layer.0.weight", "body.23.res_layer.5.fc2.weight"} <= net_keys
    assert "body.0.shortcut_layer.0.weight" not in net_keys                   # 64 -> 64: parameter-free max-pool
    assert tuple(build_irse50().state_dict()["output_layer.3.weight"].shape) == (512, 512 * 7 * 7)
    recording = _Recording(weights["state"])
    reference_forward(recording, torch.zeros(1, 3, 112, 112))
    assert {k for k in net_keys if not k.endswith("num_batches_tracked")} == recording.used


def test_forward_equals_the_published_structure_on_random_weights(weights, crops):
    net = load_irse50(weights["pth"])
    x = torch.from_numpy(crops).float().permute(0, 3, 1, 2) / 255 * 2 - 1
    with torch.no_grad():
        ours = net(x)
        ref = reference_forward(weights["state"], x)
    assert ours.shape == (2, 512)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(2))
    assert (ours[0] - ours[1]).abs().max() > 1e-3          # different crops, different embeddings


def test_recognizer_preprocessing_is_lynxs_rgb_to_bgr_minus_one_to_one(weights, crops):
    """Lynx: aligned RGB crop -> ToTensor -> Normalize(0.5, 0.5) -> reverse channels -> IR-SE50."""
    recognizer = IRSE50Recognizer(load_irse50(weights["safetensors"]))
    assert recognizer.embedder == IRSE50_EMBEDDER == "facexlib/irse50"
    rgb = crops
    lynx_input = (torch.from_numpy(rgb).float().permute(0, 3, 1, 2) / 255 - 0.5) / 0.5
    lynx_input = lynx_input[:, [2, 1, 0]]
    with torch.no_grad():
        expected = reference_forward(weights["state"], lynx_input)
    torch.testing.assert_close(recognizer.embed_rgb_crops(rgb), expected, atol=1e-5, rtol=1e-4)
    # Our face pipeline holds BGR crops (insightface's norm_crop on BGR images): same embeddings,
    # also when computed one crop per batch.
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    torch.testing.assert_close(recognizer.embed_bgr_crops(bgr, batch_size=1), expected, atol=1e-5, rtol=1e-4)


def test_pth_and_safetensors_and_dataparallel_prefix_load_the_same(weights, tmp_path):
    prefixed = tmp_path / "dp.pth"
    torch.save({"module." + k: v for k, v in weights["state"].items()}, prefixed)
    for path in (weights["pth"], weights["safetensors"], prefixed):
        loaded = load_irse50(path).state_dict()
        assert loaded.keys() == weights["state"].keys()
        assert all(torch.equal(loaded[k].float(), weights["state"][k].float()) for k in loaded), path


def test_weights_are_found_in_a_model_folder(weights):
    assert find_weights([weights["root"] / "nowhere", weights["root"]]) == weights["root"] / "arcface_ir_se50.safetensors"
    assert find_weights([weights["root"] / "facexlib"]) == weights["pth"]
    assert find_weights([weights["root"] / "nowhere"]) is None


def test_pickled_objects_are_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    bad = tmp_path / "evil.pth"
    torch.save({"input_layer.0.weight": Boom()}, bad)
    with pytest.raises(ValueError, match="never unpickles arbitrary objects"):
        load_irse50(bad)


def test_wrong_network_and_missing_file_are_refused_clearly(weights, tmp_path):
    no_se = {k: v for k, v in weights["state"].items() if ".res_layer.5." not in k}   # plain IR-50, no SE
    path = tmp_path / "ir50.safetensors"
    save_file(no_se, str(path))
    with pytest.raises(ValueError, match=r"ir50.safetensors is not an IR-SE50 ArcFace state dict: 48 keys missing"):
        load_irse50(path)
    shaped = dict(weights["state"])
    shaped["output_layer.3.weight"] = torch.zeros(256, 512 * 49)
    path = tmp_path / "shape.safetensors"
    save_file(shaped, str(path))
    with pytest.raises(ValueError, match=r"output_layer.3.weight has shape \(256, 25088\)"):
        load_irse50(path)
    with pytest.raises(FileNotFoundError, match="recognition_arcface_ir_se50.pth"):
        load_irse50(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"aligned 112x112x3 crops"):
        IRSE50Recognizer(build_irse50()).embed_bgr_crops(np.zeros((1, 128, 128, 3), np.uint8))
