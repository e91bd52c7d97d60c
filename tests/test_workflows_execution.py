"""Every shipped workflow runs for real: opened in the real frontend, pointed at the tiny generated
models the way a user picks files in the loaders, queued with Ctrl+Enter (the Run shortcut), and
executed by the real server to the end, with outputs.

What the test changes in the loaded graph, and why:
- model file names -> the tiny generated models of the same format (the real ones are GBs);
- CLIPLoader + CLIPTextEncode -> the test-only IaDTestWanConditioning (umt5-xxl has a fixed 5B
  config, no tiny one can exist); the prompt text is kept and seeds the conditioning;
- video size / frame count / steps -> small values, so a run takes seconds on 2 CPU cores.
Everything else (IaD nodes, their widgets, the links) runs as shipped.
"""

from __future__ import annotations

import io as _io
import json

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from harness import tiny_models as tiny
from harness.workflow_fixtures import (  # noqa: F401  (fixtures)
    SCREENSHOTS_DIR, TINY_ADAPTERS, TINY_IRSE50_NAME, TINY_LYNX_FOLDER, TINY_LYNX_LITE_FOLDER, _module_page, comfy_page, load_json, shipped_workflows, workflow_assets,
)

pytestmark = [pytest.mark.server, pytest.mark.browser]

WORKFLOWS = shipped_workflows()
WIDTH, HEIGHT, FRAMES = 64, 48, 5  # 5 frames -> 2 latent frames


@dataclass(frozen=True)
class Retarget:
    """How a family's workflow is pointed at the tiny models: files per models/ folder, the test
    conditioning that replaces its text encoder, small sizes, and (for families without a tiny
    VAE) the sampler whose latent is saved instead of decoding."""

    files: dict
    conditioning: tuple = ("IaDTestWanConditioning", {})
    small: dict = field(default_factory=dict)
    replace: tuple = ()          # (node type, new type, widgets, {old output: new output})
    mute: tuple = ()             # node types left out (no tiny stand-in: the VAE path)
    save_latent_of: str | None = None


# 4 steps: the shipped IaD Apply starts at 75 % (PersonalVideo's last quarter), so the 4th step runs the identity.
STEPS = 4

RETARGET = {
    "wan": Retarget(
        files={"diffusion_models": tiny.WAN21_T2V.filename,  # 1.3B and 14B share Wan 2.1's architecture
               "vae": tiny.WAN21_VAE.filename, "iad": TINY_ADAPTERS["wan2.1"], "facexlib": TINY_IRSE50_NAME},
        small={"EmptyHunyuanLatentVideo": {"width": WIDTH, "height": HEIGHT, "length": FRAMES}, "KSampler": {"steps": STEPS},
               "BasicScheduler": {"steps": STEPS},
               # Wan 2.2's two experts: 4 steps split 2/2; the IaD-patched low-noise expert runs steps 2-3 (identity in step 3).
               ("KSamplerAdvanced", "high-noise"): {"steps": 4, "end_at_step": 2},
               ("KSamplerAdvanced", "low-noise"): {"steps": 4, "start_at_step": 2}},
    ),
    "hunyuan": Retarget(
        files={"diffusion_models": tiny.HUNYUAN_VIDEO_TINY.filename, "iad": TINY_ADAPTERS["hunyuan_video"]},
        conditioning=("IaDTestVideoConditioning", {"family": "hunyuan_video"}),
        small={"EmptyHunyuanLatentVideo": {"width": WIDTH, "height": HEIGHT, "length": FRAMES},
               "BasicScheduler": {"steps": STEPS}},
        mute=("VAELoader", "VAEDecodeTiled", "SaveAnimatedWEBP"), save_latent_of="SamplerCustomAdvanced",
    ),
    "ltxv": Retarget(
        files={"iad": TINY_ADAPTERS["ltxv"]},
        conditioning=("IaDTestVideoConditioning", {"family": "ltxv"}),
        small={"EmptyLTXVLatentVideo": {"width": 128, "height": 128, "length": 9}, "LTXVScheduler": {"steps": STEPS}},
        # The LTX-Video checkpoint holds model + VAE; the tiny transformer comes through Load Diffusion Model.
        replace=(("CheckpointLoaderSimple", "UNETLoader", {"unet_name": tiny.LTXV_TINY.filename, "weight_dtype": "default"},
                  {0: 0}),),
        mute=("VAEDecode", "SaveAnimatedWEBP"), save_latent_of="SamplerCustom",
    ),
    # ComfyUI's own HunyuanVideo 1.5 template: its text encoders (Qwen2.5-VL + byT5) and 32-channel
    # VAE have no tiny stand-ins; the optional super-resolution stage stays bypassed as shipped.
    "hunyuan_video_1.5": Retarget(
        files={"diffusion_models": tiny.HUNYUAN_VIDEO15_TINY.filename, "iad": TINY_ADAPTERS["hunyuan_video15"]},
        conditioning=("IaDTestVideoConditioning", {"family": "hunyuan_video15"}),
        small={"EmptyHunyuanVideo15Latent": {"width": 128, "height": 128, "length": FRAMES},
               "BasicScheduler": {"steps": STEPS}},
        mute=("VAELoader", "VAEDecode", "CreateVideo", "SaveVideo"), save_latent_of="SamplerCustomAdvanced",
    ),
}


def _family(path) -> str:
    return max((f for f in RETARGET if path.stem.startswith(f)), key=len)


def _model_files(path) -> dict[str, str]:
    """{file name: models sub-folder} of every model file the workflow names (properties.models
    of its loaders, plus the IaD adapter, which has no public download URL)."""
    files = {}
    for node in load_json(path)["nodes"]:
        for meta in node.get("properties", {}).get("models", []):
            files[meta["name"]] = meta["directory"]
        if node["type"] in ("IaDModelLoader", "IaDLynxRefAdapter"):   # adapters have no public download URL
            files[node["widgets_values"][0]] = "iad"
    return files


def _tiny_names(path) -> dict[str, str]:
    files = RETARGET[_family(path)].files
    names = {name: files[folder] for name, folder in _model_files(path).items() if folder in files}
    for name in names:
        for folder, tiny_folder in (("lynx_full/", TINY_LYNX_FOLDER), ("lynx_lite/", TINY_LYNX_LITE_FOLDER)):
            if name.startswith(folder):  # a released Lynx folder, read directly by IaD Model Loader
                names[name] = f"{tiny_folder}/{name.split('/', 1)[1]}"
    return names


def _webp_frames(result, node_id: str) -> list[np.ndarray]:
    frames = []
    for item in result.outputs[node_id]["images"]:
        data = (result.output_dir / item.get("subfolder", "") / item["filename"]).read_bytes()
        with Image.open(_io.BytesIO(data)) as img:
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                frames.append(np.asarray(img.convert("RGB")).copy())
    return frames


def _run_in_frontend(comfy_page, comfy_server, path, small=None):
    """Load, retarget to tiny models (``small`` overrides the family's widget values), Ctrl+Enter;
    returns (queued POST /prompt, result)."""
    report = comfy_page.load_workflow(path)
    assert report.missing_node_types == [], report.missing_node_types
    comfy_page.close_dialogs()
    plan = RETARGET[_family(path)]
    names = _tiny_names(path)
    assert comfy_page.rename_widget_values(names) >= len(names)
    for node_type, new_type, widgets, outputs in plan.replace:
        assert comfy_page.replace_node(node_type, new_type, widgets, outputs) >= 1
    comfy_page.replace_text_encoding(plan.conditioning[0], extra_widgets=plan.conditioning[1])
    present = {n["type"] for n in load_json(path)["nodes"]}
    for key, values in {**plan.small, **(small or {})}.items():
        node_type, title = key if isinstance(key, tuple) else (key, "")
        if node_type in present:
            assert comfy_page.set_widgets(node_type, values, title) >= 1, key
    if plan.mute:
        comfy_page.mute(list(plan.mute))
    if plan.save_latent_of:
        assert comfy_page.add_save_latent(plan.save_latent_of, prefix=f"iad_wf_{path.stem}") == 1
    queued = comfy_page.queue_with_keyboard()
    assert queued.status == 200 and not queued.response.get("node_errors"), (
        f"{path.name}: the server rejected the prompt the frontend sent: {queued.response}")
    result = comfy_server.wait(queued.prompt_id, timeout=300)
    comfy_page.screenshot(f"{path.stem}-after-run", SCREENSHOTS_DIR)
    assert result.ok, f"{path.name}: execution failed: {result.error}"
    return queued, result


def _by_type(prompt: dict, class_type: str) -> dict[str, dict]:
    return {k: v for k, v in prompt.items() if v["class_type"] == class_type}


def _check_runs_as_shipped(path, queued, result) -> None:
    prompt = queued.prompt
    # The frontend sent the shipped IaD chain (not a stripped graph): identity reaches the sampler.
    applies = _by_type(prompt, "IaDApply")
    assert applies, f"{path.name}: no IaD Apply in the prompt the frontend sent"
    # Follow the patched model through model-patching nodes (shift, cache) to what samples with it.
    reached, frontier = set(applies), set(applies)
    while frontier:
        frontier = {k for k, v in prompt.items() if k not in reached
                    and isinstance(v["inputs"].get("model"), list) and v["inputs"]["model"][0] in frontier}
        reached |= frontier
    consumers = {prompt[k]["class_type"] for k in reached}
    assert consumers & {"KSampler", "KSamplerAdvanced", "BasicGuider", "CFGGuider", "SamplerCustom", "BasicScheduler"}, consumers
    assert _by_type(prompt, "IaDIdentity") and _by_type(prompt, "IaDFaceEmbed")
    assert not _by_type(prompt, "CLIPTextEncode") and not _by_type(prompt, "CLIPLoader")
    plan = RETARGET[_family(path)]
    assert not any(_by_type(prompt, t) for t in plan.mute), "muted nodes were sent"

    # Every output node produced something; the video has the requested frames and size.
    outputs = [k for k, v in prompt.items() if v["class_type"] in ("SaveAnimatedWEBP", "PreviewImage", "PreviewAny",
                                                                    "IaDEvaluateVideo", "SaveLatent")]
    missing = [f"{k} ({prompt[k]['class_type']})" for k in outputs if not result.outputs.get(k)]
    assert not missing, f"{path.name}: output nodes without output: {missing}"
    for node_id in _by_type(prompt, "SaveAnimatedWEBP"):
        frames = _webp_frames(result, node_id)
        assert len(frames) == FRAMES
        assert frames[0].shape[0] == HEIGHT and frames[0].shape[1] % WIDTH == 0
        assert np.stack(frames).astype(np.float32).std() > 1.0, "the saved video is flat"

    for node_id in _by_type(prompt, "SaveLatent"):
        item = result.outputs[node_id]["latents"][0]
        latent = load_file(str(result.output_dir / item.get("subfolder", "") / item["filename"]))["latent_tensor"]
        assert latent.ndim == 5 and torch.isfinite(latent).all() and latent.std() > 0

    # The face branch found the reference photo(s), one face each.
    embed_id = next(iter(_by_type(prompt, "IaDFaceEmbed")))
    photos = len(_by_type(prompt, "LoadImage"))
    crops_id = next(k for k, v in _by_type(prompt, "PreviewImage").items() if v["inputs"]["images"][0] == embed_id)
    assert len(result.outputs[crops_id]["images"]) == photos


def _is_ab(path) -> bool:
    return "ab" in path.stem.split("_")


# The LTX-2 workflow is ComfyUI's LTX-2 template, whose audio VAE, Gemma 3 text encoder and latent
# upsampler have no tiny stand-ins here: it is opened and validated in test_workflows_frontend, and
# its model path (IaD Apply on LTX-2, video and audio) runs in test_apply_server / test_apply_ltx2. The
# long LTX-2 workflow (the same template) runs from the frontend in test_workflows_long_video.py, with a
# tiny audio VAE, the upsampler bypassed and the latents saved.
def _wan_variant_names() -> set[str]:
    """The Wan-variant workflows: they run in test_workflows_wan_variants.py, each pointed at its own tiny model."""
    import sys

    from harness.paths import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from workflow_specs.wan_variants import VARIANTS

    return {v.name for v in VARIANTS}


def _long_video_names() -> set[str]:
    """The long-video workflows (templates + IaD + context windows): they run in test_workflows_long_video.py."""
    import sys

    from harness.paths import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from workflow_specs.long_video import long_video_workflows

    return {w.name for w in long_video_workflows()}


SINGLE = [p for p in WORKFLOWS if not _is_ab(p) and not p.stem.startswith("ltx2")
          and p.stem not in _wan_variant_names() | _long_video_names()]


@pytest.mark.parametrize("path", SINGLE, ids=[p.stem for p in SINGLE])
def test_workflow_runs_to_the_end_from_the_frontend(comfy_page, comfy_server, path):
    queued, result = _run_in_frontend(comfy_page, comfy_server, path)
    _check_runs_as_shipped(path, queued, result)


def test_ab_workflow_puts_plain_iad_and_undecoupled_side_by_side_with_metrics(comfy_page, comfy_server):
    path = next(p for p in WORKFLOWS if _is_ab(p))
    # 8 steps: the shipped last-quarter range gives the identity 2 steps, enough for B and C to differ visibly.
    queued, result = _run_in_frontend(comfy_page, comfy_server, path, small={"KSampler": {"steps": 8}})
    _check_runs_as_shipped(path, queued, result)
    prompt = queued.prompt

    # Same seed and prompt in all three samplers; the model differs: base, IaD, IaD without decoupling.
    samplers = _by_type(prompt, "KSampler")
    assert len(samplers) == 3
    assert len({s["inputs"]["seed"] for s in samplers.values()}) == 1
    assert len({tuple(s["inputs"]["positive"]) for s in samplers.values()}) == 1
    identities = {k: v["inputs"]["decoupling"] for k, v in _by_type(prompt, "IaDIdentity").items()}
    assert sorted(identities.values()) == ["auto", "none"]

    # The three videos, side by side left to right, in the order the notes promise: A | B | C.
    save_id = next(iter(_by_type(prompt, "SaveAnimatedWEBP")))
    frames = np.stack(_webp_frames(result, save_id)).astype(np.float32)
    assert frames.shape[1:3] == (HEIGHT, 3 * WIDTH)
    plain, iad, raw = (frames[:, :, i * WIDTH:(i + 1) * WIDTH] for i in range(3))
    # WebP is lossy: identical inputs give near-identical tiles; IaD must change the video.
    iad_effect, decoupling_effect = np.abs(plain - iad).mean(), np.abs(iad - raw).mean()
    print(f"A/B mean abs difference (0-255): plain vs IaD {iad_effect:.2f}, IaD vs no decoupling {decoupling_effect:.2f}")
    assert iad_effect > 2.0, f"IaD left the video unchanged ({iad_effect:.2f})"
    assert decoupling_effect > 0.5, f"decoupling on/off gave the same video ({decoupling_effect:.2f})"

    # The identity metrics ran on each of the three videos and reported against the references.
    evaluations = _by_type(prompt, "IaDEvaluateVideo")
    assert len(evaluations) == 3
    decoded = {v["inputs"]["video"][0] for v in evaluations.values()}
    assert decoded == set(_by_type(prompt, "VAEDecode"))
    for node_id in evaluations:
        ui = result.outputs[node_id]
        report = json.loads(ui["text"][0])
        assert report["video"] == {"frames": FRAMES, "height": HEIGHT, "width": WIDTH, "fps": 16.0}
        assert report["face_model"].startswith("insightface/antelopev2"), report["face_model"]
        assert "facesim" in report and "motion" in report and "expression_copy" in report
        assert ui["images"], "the metrics plot was not shown"
