"""The Wan variants in-process: ComfyUI's loader detects each tiny file as the config it stands for,
IaD names the variant, knows where its video rows are, and refuses what it cannot patch by name."""

from __future__ import annotations

import json

import pytest
import torch

from harness import apply_fixtures as af
from harness import tiny_wan_variants as tv

HERE = [s for s in tv.VARIANT_SPECS if tv.available(s)]


@pytest.fixture(scope="module")
def patching():
    af.pack()
    return af.module("iad.patching")


def _load(path):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(path))


@pytest.mark.parametrize("spec", HERE, ids=[s.filename for s in HERE])
def test_every_variant_file_is_detected_as_its_config_and_named(patching, spec):
    model = _load(tv.ensure_variant(spec))
    assert type(model.model.model_config).__name__ == spec.config
    arch = patching.architecture_of(model)
    variants = af.module("iad.patching.wan_variants")
    assert arch.family == "wan" and arch.wan_variant is variants.VARIANTS[spec.config]
    assert arch.variant == f"{variants.VARIANTS[spec.config].name} ({spec.config})"
    assert arch.model_dim == spec.dim and arch.num_blocks == spec.num_layers


def test_a_video_segmentation_wan_and_an_unknown_wan_class_are_refused_by_name(patching, tmp_path):
    """FlowRVS (a Wan that segments a given video, no person to add) and a Wan class IaD has never read."""
    from safetensors.torch import load_file, save_file

    path = tv.ensure_variant(tv.CAUSAL)   # plain Wan T2V weights
    flow = tmp_path / "flow_rvs.safetensors"
    save_file(load_file(str(path)), str(flow), metadata={"config": json.dumps({"transformer": {"model_type": "flow_rvs"}})})
    model = _load(flow)
    import comfy.supported_models

    if hasattr(comfy.supported_models, "WAN21_FlowRVS"):   # ComfyUI versions that have it (v0.28.2; not 0.3.75)
        assert type(model.model.model_config).__name__ == "WAN21_FlowRVS"
        with pytest.raises(patching.UnsupportedModelError, match=r"IaD does not patch Wan FlowRVS.*segments objects"):
            patching.architecture_of(model)

    from comfy.ldm.wan.model import WanModel

    class WanFutureModel(WanModel):
        pass

    import comfy.ops

    future = WanFutureModel(dim=128, ffn_dim=256, num_heads=1, num_layers=1, operations=comfy.ops.disable_weight_init)
    with pytest.raises(patching.UnsupportedModelError, match="WanFutureModel, a Wan model this version of IaD has not read"):
        patching.detect_architecture(future)


def _Model(cls: str, ref_conv: bool = False):
    """What video_rows reads of a diffusion model: its class name, patch size and ref_conv."""
    return type(cls, (), {"patch_size": (1, 2, 2), "ref_conv": object() if ref_conv else None})()


@pytest.mark.parametrize("cls, ref_conv, kwargs, expected", [
    ("WanModel", False, {}, (0, 2 * 16)),                                           # T2V / I2V / Phantom
    ("WanModel", True, {"reference_latent": torch.zeros(1, 16, 8, 8)}, (16, 16 + 32)),   # Fun Control 2.2
    ("WanModel", True, {}, (0, 32)),                                                # ref_conv, no reference given
    ("SCAILWanModel", False, {"reference_latent": torch.zeros(1, 20, 2, 8, 8)}, (32, 64)),
    ("SCAIL2WanModel", False, {"reference_latent": torch.zeros(1, 20, 1, 8, 8)}, (16, 48)),
    ("HumoWanModel", False, {"reference_latent": torch.zeros(1, 16, 1, 8, 8)}, (0, 32)),
    ("WanModel_S2V", False, {"reference_latent": torch.zeros(1, 16, 1, 8, 8)}, (0, 32)),
])
def test_video_rows_per_variant(patching, cls, ref_conv, kwargs, expected):
    rows = af.module("iad.patching.wan_variants").video_rows(_Model(cls, ref_conv), torch.zeros(1, 16, 2, 8, 8), kwargs)
    assert rows == expected
    # odd sizes are padded to the patch size, as core pads them
    rows = af.module("iad.patching.wan_variants").video_rows(_Model(cls), torch.zeros(1, 16, 3, 7, 9), {})
    assert rows[1] - rows[0] == 3 * 4 * 5


def test_video_rows_that_do_not_fit_the_sequence_fail_clearly(patching):
    wan = af.module("iad.patching.wan")
    key = af.module("iad.patching.call_context").VIDEO_ROWS_KEY
    assert wan.video_row_range({key: (0, 48)}, 48) is None
    assert wan.video_row_range({key: (16, 48)}, 64) == (16, 48)
    with pytest.raises(RuntimeError, match="tokens 0-80 of this Wan model's 48-token sequence"):
        wan.video_row_range({key: (0, 80)}, 48)
