"""IaD Apply and Lynx's nodes under ComfyUI's own MultiGPU CFG Split (``MultiGPU_WorkUnits``), through a
real server (docs/patching.md, "Multi-GPU engines").

The server is told it has two devices (``IAD_TEST_DEVICES=cpu,cpu:0``, tests/comfy_test_nodes/
device_nodes.py), so core's own path runs: a fresh model from the loader for the second device, cond
and uncond on a thread per device, the clones rebuilt from the patched model at sampling. Lynx full (its
ID adapter through IaD Apply, and its ref-adapter) is placed before and after the split node. In-process
checks of the same path (which modules each thread runs): tests/test_multigpu_engines.py.
On 0.3.75, which has no multi-GPU, the test checks that absence.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from harness import insightface_pack
from harness import tiny_models as tiny
from harness.prompts import Prompt, run_latent
from harness.workflow_fixtures import TINY_IRSE50_NAME, TINY_LYNX_FOLDER, tiny_irse50_path, tiny_lynx_folder

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def two_device_server(tmp_path_factory, tiny_models):
    from conftest import _LIVE_SERVERS, make_server

    server = make_server(tmp_path_factory.mktemp("two-devices"), tiny_models,
                         env={**os.environ, "IAD_TEST_DEVICES": "cpu,cpu:0"})
    _LIVE_SERVERS.append(server)
    try:
        server.start()
        pack_dir = insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)
        server.add_model("insightface", pack_dir, f"models/{pack_dir.name}")
        server.add_model("iad", tiny_lynx_folder(), TINY_LYNX_FOLDER)
        server.add_model("facexlib", tiny_irse50_path(), TINY_IRSE50_NAME)
        import numpy as np
        from PIL import Image

        face = insightface_pack.face_image(size=320, face=64, person=0, background=80, centre=(160, 160))
        Image.fromarray(np.ascontiguousarray(face)).save(server.input_dir / "iad_multigpu_face.png")
        yield server
    finally:
        server.stop()
        _LIVE_SERVERS.remove(server)


def _graph(split: str | None, prefix: str, weight: float = 1.0, ref_scale: float = 1.0):
    """Lynx full on the tiny Wan 2.1 T2V; ``split``: where MultiGPU_WorkUnits goes (None, "before" IaD Apply,
    "after" the ref-adapter)."""
    p = Prompt()
    model = p.add("UNETLoader", unet_name=tiny.WAN21_T2V.filename, weight_dtype="default")[0]
    if split == "before":
        model = p.add("MultiGPU_WorkUnits", model=model, max_gpus=2)[0]
    face = p.add("IaDFaceAnalysisLoader", model_pack="antelopev2", provider="auto", det_size=640)
    irse = p.add("IaDIRSE50FaceEmbedder", face_analysis=face[0], weights=TINY_IRSE50_NAME)
    photo = p.add("LoadImage", image="iad_multigpu_face.png")
    embed = p.add("IaDFaceEmbed", face_analysis=irse[0], images=photo[0], policy="largest", face_index=0,
                  min_score=0.5, same_person_threshold=0.3)
    loader = p.add("IaDModelLoader", adapter_name=f"{TINY_LYNX_FOLDER}/resampler.safetensors", dtype="auto")
    identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=embed[0], decoupling="none", strength=1.0)
    model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=weight, start_percent=0.0,
                  end_percent=1.0, uncond_identity="null identity (Lynx)")[0]
    model = p.add("IaDLynxRefAdapter", model=model, face_analysis=face[0], image=photo[0],
                  ref_text=p.add("IaDTestWanConditioning", text="image of a face", length=8, scale=1.0)[0],
                  vae=p.add("VAELoader", vae_name=tiny.WAN21_VAE.filename)[0],
                  ref_layers=f"{TINY_LYNX_FOLDER}/ref_layers.safetensors", ref_scale=ref_scale, start_percent=0.0,
                  end_percent=1.0, dtype="bf16")[0]
    if split == "after":
        model = p.add("MultiGPU_WorkUnits", model=model, max_gpus=2)[0]
    model = p.add("IaDTestDeviceLog", model=model, name=prefix)[0]
    pos = p.add("IaDTestWanConditioning", text="a person laughs", length=16, scale=1.0)
    neg = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)
    latent = p.add("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1)
    sampled = p.add("KSampler", model=model, positive=pos[0], negative=neg[0], latent_image=latent[0], seed=0,
                    steps=2, cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    return p, p.add("SaveLatent", samples=sampled[0], filename_prefix=prefix)


def _device_log(server, name: str) -> list[dict]:
    return json.loads((server.output_dir / "iad_probe" / f"{name}.json").read_text())


def test_lynx_full_under_multigpu_work_units_equals_one_device(comfy_server, tiny_models, request):
    info = comfy_server.object_info()
    if "MultiGPU_WorkUnits" not in info:   # 0.3.75: no multi-GPU in core at all
        assert not {"SelectModelDevice", "MultiGPU_Options"} & set(info)
        return
    server = request.getfixturevalue("two_device_server")
    single = run_latent(server, _graph(None, "mg_single"))
    one_device = _device_log(server, "mg_single")
    assert {c["device"] for c in one_device} == {None}
    off = run_latent(server, _graph("after", "mg_off", weight=0.0, ref_scale=0.0))
    outs = {}
    for split in ("after", "before"):
        out = outs[split] = run_latent(server, _graph(split, f"mg_{split}"))
        calls = _device_log(server, f"mg_{split}")
        by_device = {}
        for c in calls:
            by_device.setdefault(c["device"], set()).add(c["model"])
        # Core split the work: two devices, each with its own model object, cond and uncond apart.
        assert set(by_device) == {"cpu", "cpu:0"} and all(len(m) == 1 for m in by_device.values()), calls
        assert by_device["cpu"] != by_device["cpu:0"], "each device runs its own model"
        assert all(len(c["cond_or_uncond"]) == 1 for c in calls), calls
        # Every device's patches (IaD's cross-attention, Lynx's self-attention) hold that device's modules.
        assert not [c["foreign_site_patches"] for c in calls if c["foreign_site_patches"]], calls
        # The identity (ID adapter + ref-adapter) acts on both devices: the video equals one device's,
        # up to the float differences of batching cond and uncond apart, and differs from no identity.
        assert torch.allclose(out, single, atol=1e-4, rtol=1e-4), (split, (out - single).abs().max())
        assert (out - off).abs().max() > 1e-2, split
    # The next run reuses the loaded device clone (the node's reuse_loaded path) and gives the same video.
    assert torch.equal(run_latent(server, _graph("after", "mg_after_again")), outs["after"])
