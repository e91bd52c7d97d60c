"""IaD Lynx Ref Adapter through a real ComfyUI server: it runs in a native graph (after IaD Apply with
a Lynx ID adapter, before KSampler), bad input is refused before anything runs with a message that
names the node, the input and the fix, a photo without a face fails that prompt only, and the next
good prompt gives exactly the same latent."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from harness import tiny_models as tiny
from harness.prompts import Prompt, post_raw
from harness.workflow_fixtures import TINY_IRSE50_NAME, TINY_LYNX_FOLDER, workflow_assets  # noqa: F401  (fixture)

pytestmark = pytest.mark.server


def _graph(photo: str, ref: dict | None = None, vae: bool = True, blank: bool = False, prefix: str = "lynx_ref"):
    p = Prompt()
    model = p.add("UNETLoader", unet_name=tiny.WAN21_T2V.filename, weight_dtype="default")[0]
    face = p.add("IaDFaceAnalysisLoader", model_pack="antelopev2", provider="auto", det_size=640)
    irse = p.add("IaDIRSE50FaceEmbedder", face_analysis=face[0], weights=TINY_IRSE50_NAME)
    photo_node = p.add("LoadImage", image=photo)
    embed = p.add("IaDFaceEmbed", face_analysis=irse[0], images=photo_node[0], policy="largest", face_index=0,
                  min_score=0.5, same_person_threshold=0.3)
    loader = p.add("IaDModelLoader", adapter_name=f"{TINY_LYNX_FOLDER}/resampler.safetensors", dtype="auto")
    identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=embed[0], decoupling="none", strength=1.0)
    model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=1.0, start_percent=0.0,
                  end_percent=1.0, uncond_identity="null identity (Lynx)")[0]
    values = dict(ref_layers=f"{TINY_LYNX_FOLDER}/ref_layers.safetensors", ref_scale=1.0, start_percent=0.0,
                  end_percent=1.0, dtype="bf16")
    values.update(ref or {})
    image = p.add("EmptyImage", width=320, height=320, batch_size=1, color=0x5A5A5A)[0] if blank else photo_node[0]
    links = dict(model=model, face_analysis=face[0], image=image,
                 ref_text=p.add("IaDTestWanConditioning", text="image of a face", length=8, scale=1.0)[0])
    if vae:
        links["vae"] = p.add("VAELoader", vae_name=tiny.WAN21_VAE.filename)[0]
    ref_node = p.add("IaDLynxRefAdapter", **links, **values)
    pos = p.add("IaDTestWanConditioning", text="a person laughs", length=16, scale=1.0)
    neg = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)
    latent = p.add("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1)
    sampled = p.add("KSampler", model=ref_node[0], positive=pos[0], negative=neg[0], latent_image=latent[0], seed=0,
                    steps=2, cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    save = p.add("SaveLatent", samples=sampled[0], filename_prefix=prefix)
    return p, save, ref_node.id


def _latent(server, graph) -> torch.Tensor:
    prompt, save, _ = graph
    item = server.run_ok(prompt).ui(save)["latents"][0]
    return load_file(str(server.output_dir / item.get("subfolder", "") / item["filename"]))["latent_tensor"]


def test_ref_adapter_runs_refuses_bad_input_and_serves_the_same_output_after(comfy_server, workflow_assets):
    server = comfy_server
    photo = workflow_assets["photos"][0]
    before = _latent(server, _graph(photo, prefix="lynx_ref_before"))
    plain = _latent(server, _graph(photo, ref={"ref_scale": 0.0}, prefix="lynx_ref_off"))
    assert (before - plain).abs().max() > 1e-4, "the ref-adapter changes the video"

    cases = [
        ({"ref_scale": float("nan")}, ["IaD Lynx Ref Adapter", "ref_scale is NaN"]),
        ({"start_percent": 0.8, "end_percent": 0.2}, ["start_percent 0.8 is after end_percent 0.2"]),
        ({"ref_layers": "lynx_full/ref_layers.safetensors"}, ["not found", "models/iad/lynx_full/"]),
    ]
    for values, expected in cases:
        prompt, _, ref_id = _graph(photo, ref=values)
        status, answer = post_raw(server, prompt, "iad-lynx-ref")
        assert status == 400, f"{values}: accepted ({answer})"
        errors = answer.get("node_errors", {}).get(ref_id, {}).get("errors", [])
        text = " ".join(f"{e['message']} {e['details']}" for e in errors)
        assert all(part in text for part in expected), (values, text)
    # no VAE connected: refused before anything runs, naming the input
    prompt, _, ref_id = _graph(photo, vae=False)
    status, answer = post_raw(server, prompt, "iad-lynx-ref")
    assert status == 400
    errors = answer["node_errors"][ref_id]["errors"]
    assert any("vae" in json.dumps(e) for e in errors), errors
    # a photo without a face: that prompt fails with the reason, the server keeps serving
    prompt, _, _ = _graph(photo, blank=True)
    result = server.wait(server.submit(prompt))
    assert not result.ok and result.error["node_type"] == "IaDLynxRefAdapter"
    assert "No face found" in result.error["exception_message"], result.error
    assert server.is_alive()

    after = _latent(server, _graph(photo, prefix="lynx_ref_after"))
    assert torch.equal(after, before)
