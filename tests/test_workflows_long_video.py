"""The long-video workflows (ComfyUI's own Wan 2.2 14B T2V and LTX-2 templates, made long, with IaD
Apply and core's context-windows node after it) run for real: opened in the real frontend, pointed at
tiny models the way a user picks files, made short (but longer than one window, so the windows are
used), queued with Ctrl+Enter and executed by the real server to the end.

What the test changes in the loaded graph, and why (as test_workflows_execution.py and
test_workflows_wan_variants.py do for the other workflows):
- model file names -> tiny generated models of the same format (Wan 2.2 14B's experts have Wan 2.1's
  architecture: the tiny Wan 2.1 T2V; the tiny LTX-2 transformer; Lynx's layout at the tiny width; a
  LoRA that matches nothing);
- the text encoders (umt5-xxl, Gemma 3 12B) have fixed configs of billions of parameters: their encode
  nodes become the test-only conditioning nodes (the text kept as the seed);
- LTX-2: the checkpoint's model comes through Load Diffusion Model (the tiny transformer), and the
  audio VAE loader reads a tiny audio VAE of the real format (the empty audio latent needs its
  config); the video VAE and the spatial upsampler have no tiny stand-ins: the upsampler is bypassed
  (stage 2 samples at stage 1's size), the sampled latents are saved instead of decoded;
- length, size and steps -> small values; the windows node's window and overlap -> a window shorter
  than the video (Wan: 33 frames in 17-frame windows; LTX-2: 33 frames in 17-frame windows).
Everything else - the template's own nodes, the IaD nodes, the windows node and their links - runs as
shipped. The shipped lengths and windows are checked without a browser.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness import tiny_models as tiny
from harness.paths import comfyui_at_least
from harness.workflow_fixtures import (  # noqa: F401  (fixtures)
    SCREENSHOTS_DIR, TINY_IRSE50_NAME, TINY_LYNX_FOLDER, WORKFLOWS_DIR, _module_page, comfy_page, load_json, named_files,
    tiny_adapter_path, workflow_assets,
)

pytestmark = [pytest.mark.server, pytest.mark.browser]

WAN = WORKFLOWS_DIR / "wan2.2_14B_t2v_long_context_windows_lynx_iad.json"
LTX2 = WORKFLOWS_DIR / "ltx2_19b_t2v_long_context_windows_iad.json"
STAND_IN_LORA = "iad-test-long-video-stand-in-lora.safetensors"
LTX2_CHECKPOINT = "iad-tiny-ltx2-audio-vae.safetensors"   # the tiny audio VAE + vocoder, where LTX-2 keeps them
LTX2_ADAPTER = "iad-tiny-ltx2-long-video.safetensors"
FRAMES, WINDOW, OVERLAP = 33, 17, 8   # Wan: 9 latent frames in windows of 5 overlapping by 2; LTX-2: 5 in 3, by 1


def _nodes(graph: dict, node_type: str, title: str | None = None) -> list[dict]:
    return [n for n in graph["nodes"] if n["type"] == node_type and (title is None or n.get("title") == title)]


# -- what is shipped: long videos, windows shorter than the video, one windows node per IaD Apply ----
def test_shipped_long_workflows_are_long_and_sample_in_windows():
    wan = load_json(WAN)
    fps = _nodes(wan, "PrimitiveFloat", "Float (FPS)")[0]["widgets_values"][0]
    seconds = _nodes(wan, "PrimitiveFloat", "Float (Duration)")[0]["widgets_values"][0]
    assert _nodes(wan, "ComfyMathExpression")[0]["widgets_values"][0] == "floor(a * b) + 1"
    frames = int(fps * seconds) + 1
    assert fps == 16 and frames >= 241, (fps, seconds)
    windows = _nodes(wan, "WanContextWindowsManual")
    assert len(windows) == len(_nodes(wan, "IaDApply")) == 2   # both experts
    for node in windows:   # context_length, context_overlap (video frames)
        assert node["widgets_values"][:2] == [81, 30] and node["widgets_values"][0] < frames

    ltx2 = load_json(LTX2)
    length = _nodes(ltx2, "PrimitiveInt", "Length")[0]["widgets_values"][0]
    rate = _nodes(ltx2, "PrimitiveInt", "Frame Rate(int)")[0]["widgets_values"][0]
    assert length == 481 and rate == 24 and (length - 1) % 8 == 0
    windows = _nodes(ltx2, "LTXVContextWindows")
    assert len(windows) == len(_nodes(ltx2, "IaDApply")) == 1
    assert windows[0]["widgets_values"][:2] == [145, 40] and windows[0]["widgets_values"][0] < length


# -- tiny stand-ins ---------------------------------------------------------------------------------
def tiny_ltx2_audio_vae(target) -> object:
    """LTX-2's audio VAE and vocoder in the released checkpoint's format (``audio_vae.*``,
    ``vocoder.*``, the config in the ``config`` metadata), a few channels wide: 8 latent channels x 16
    frequency bins (64 mel bins), what the LTX-2 transformer's 128 audio channels take."""
    from harness.comfy_env import import_comfy

    if target.exists():
        return target
    import_comfy()
    from comfy.ldm.lightricks.vae.audio_vae import AudioVAE

    ddconfig = {"double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
                "in_channels": 2, "out_ch": 2, "ch": 8, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [],
                "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height"}
    config = {"audio_vae": {"model": {"params": {"ddconfig": ddconfig, "sampling_rate": 16000}},
                            "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160}}},
              "vocoder": {"resblock_kernel_sizes": [3], "upsample_rates": [4, 4, 5, 2], "upsample_kernel_sizes": [8, 8, 10, 4],
                          "resblock_dilation_sizes": [[1, 3, 5]], "upsample_initial_channel": 32, "stereo": True,
                          "output_sample_rate": 16000}}
    metadata = {"config": json.dumps(config)}
    state = tiny._randomise(AudioVAE(metadata), seed=7)
    state = {("audio_vae." + k.removeprefix("autoencoder.") if k.startswith("autoencoder.") else k): v for k, v in state.items()}
    for key in state:
        if key.endswith("std-of-means"):
            state[key] = torch.ones_like(state[key])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    save_file(state, str(partial), metadata=metadata)
    partial.replace(target)
    return target


@pytest.fixture(scope="module")
def long_files(comfy_server, workflow_assets, tmp_path_factory):
    from harness.paths import TINY_MODELS_DIR

    folder = tmp_path_factory.mktemp("long-video-files")
    save_file({"iad_test_stand_in": torch.zeros(1)}, str(folder / STAND_IN_LORA))
    comfy_server.add_model("loras", folder / STAND_IN_LORA, STAND_IN_LORA)
    if comfyui_at_least("0.28"):   # LTX-2 came with ComfyUI 0.7
        comfy_server.add_model("checkpoints", tiny_ltx2_audio_vae(TINY_MODELS_DIR / "ltx2-audio-vae" / "v1.safetensors"),
                               LTX2_CHECKPOINT)
        comfy_server.add_model("iad", tiny_adapter_path("ltx2", model_dim=128, blocks=(0, 1)), LTX2_ADAPTER)


# -- running them ---------------------------------------------------------------------------------
def _tiny_names(path, by_folder: dict) -> dict[str, str]:
    models, _ = named_files(load_json(path))
    names = {name: by_folder[folder] for name, folder in models.items() if folder in by_folder}
    for name, folder in models.items():
        if folder == "iad" and name.startswith("lynx_full/"):
            names[name] = f"{TINY_LYNX_FOLDER}/{name.split('/', 1)[1]}"
    return names


def _downstream(prompt: dict, start: str) -> set[str]:
    """The nodes that take ``start``'s outputs, directly or through others."""
    reached, frontier = {start}, {start}
    while frontier:
        frontier = {k for k, v in prompt.items() if k not in reached
                    and any(isinstance(x, list) and x[0] in frontier for x in v["inputs"].values())}
        reached |= frontier
    return reached - {start}


def _run(comfy_page, comfy_server, path, edit) -> tuple:
    report = comfy_page.load_workflow(path)
    assert report.missing_node_types == [], report.missing_node_types
    comfy_page.close_dialogs()
    comfy_page.dismiss_toasts()
    edit()
    log_before = len(comfy_server.log_text())
    queued = comfy_page.queue_with_keyboard()
    assert queued.status == 200 and not queued.response.get("node_errors"), (
        f"{path.name}: the server rejected the prompt the frontend sent: {queued.response}")
    result = comfy_server.wait(queued.prompt_id, timeout=600)
    comfy_page.screenshot(f"{path.stem}-after-run", SCREENSHOTS_DIR)
    assert result.ok, f"{path.name}: execution failed: {result.error}"
    return queued.prompt, result, comfy_server.log_text()[log_before:]


def _check_windows_after_iad(path, prompt: dict, result, windows_type: str, samplers: set[str], copies: int) -> None:
    """Each IaD Apply (on a loader of the template's model) feeds exactly one windows node, whose
    model reaches a sampler; IaD Apply and the windows node ran in this run (not from a cache)."""
    applies = {k: v for k, v in prompt.items() if v["class_type"] == "IaDApply"}
    windows = {k: v for k, v in prompt.items() if v["class_type"] == windows_type}
    assert len(applies) == len(windows) == copies, (sorted(applies), sorted(windows))
    for key, apply in applies.items():
        assert prompt[apply["inputs"]["model"][0]]["class_type"] in ("UNETLoader", "CheckpointLoaderSimple")
        consumers = [k for k, v in prompt.items() if any(x == [key, 0] for x in v["inputs"].values())]
        assert [prompt[k]["class_type"] for k in consumers] == [windows_type], f"{path.name}: IaD Apply {key} feeds {consumers}"
        window = windows[consumers[0]]
        assert (window["inputs"]["context_length"], window["inputs"]["context_overlap"]) == (WINDOW, OVERLAP)
        reached = {prompt[k]["class_type"] for k in _downstream(prompt, consumers[0])}
        assert reached & samplers, f"{path.name}: the windows node after IaD Apply {key} reaches no sampler: {reached}"
    cached = {n for kind, data in result.messages if kind == "execution_cached" for n in data.get("nodes", [])}
    assert not cached & (set(applies) | set(windows)), "IaD Apply or the windows node came from the cache"


def _video_frames(result, prompt: dict) -> list[tuple[int, int, int]]:
    """(frames, height, width) of each video a SaveVideo node wrote."""
    import av

    found = []
    for key in (k for k, v in prompt.items() if v["class_type"] == "SaveVideo"):
        for item in result.outputs.get(key, {}).get("images", []):
            with av.open(str(result.output_dir / item.get("subfolder", "") / item["filename"])) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            found.append((len(frames), *frames[0].shape[:2]))
    return found


def _assert_absent(server, types: set[str]) -> None:
    """On a ComfyUI without what a workflow needs: those node types are really not there."""
    assert not types & set(server.object_info()), types & set(server.object_info())


def test_wan22_long_workflow_runs_in_context_windows_from_the_frontend(comfy_page, comfy_server, long_files):
    if not comfyui_at_least("0.28"):
        # the template's ComfySwitchNode and ComfyMathExpression came after 0.3.75: checked absent, so the
        # workflow cannot run here (IaD Apply with WanContextWindowsManual on 0.3.75: test_long_video_server.py)
        _assert_absent(comfy_server, {"ComfySwitchNode", "ComfyMathExpression"})
        return
    names = _tiny_names(WAN, {"diffusion_models": tiny.WAN21_T2V.filename, "vae": tiny.WAN21_VAE.filename,
                              "loras": STAND_IN_LORA, "facexlib": TINY_IRSE50_NAME})

    def edit():
        assert comfy_page.rename_widget_values(names) >= len(names)
        assert comfy_page.replace_text_encoding("IaDTestWanConditioning") == 2
        assert comfy_page.set_widgets("EmptyHunyuanLatentVideo", {"width": 64, "height": 64}) == 1
        # The template's length: floor(16 fps x 2 s) + 1 = 33 frames (9 latent frames).
        assert comfy_page.set_widgets("PrimitiveFloat", {"value": 2.0}, "Float (Duration)") == 1
        assert comfy_page.set_widgets("PrimitiveInt", {"value": 4}, "Int (Steps)") == 2          # 4 steps, 2 per expert
        assert comfy_page.set_widgets("PrimitiveInt", {"value": 2}, "Int (Split Steps)") == 2
        assert comfy_page.set_widgets("WanContextWindowsManual", {"context_length": WINDOW, "context_overlap": OVERLAP}) == 2

    prompt, result, log = _run(comfy_page, comfy_server, WAN, edit)
    _check_windows_after_iad(WAN, prompt, result, "WanContextWindowsManual", {"KSamplerAdvanced"}, copies=2)
    # Both experts sampled in windows: 9 latent frames in windows of 5 (17 frames) overlapping by 2 (8 frames).
    assert log.count("Using context windows: Context length 5 with overlap 2 for 9 frames") >= 2, log[-3000:]
    assert _video_frames(result, prompt) == [(FRAMES, 64, 64)]
    assert comfy_server.is_alive()


def test_ltx2_long_workflow_runs_in_context_windows_from_the_frontend(comfy_page, comfy_server, long_files):
    if not comfyui_at_least("0.28"):   # LTX-2's nodes and LTXVContextWindows came after 0.3.75: checked absent
        _assert_absent(comfy_server, {"LTXVContextWindows", "LTXAVTextEncoderLoader"})
        return
    names = _tiny_names(LTX2, {"checkpoints": LTX2_CHECKPOINT, "loras": STAND_IN_LORA})
    names.update({n: LTX2_ADAPTER for n, folder in named_files(load_json(LTX2))[0].items() if folder == "iad"})

    def edit():
        assert comfy_page.rename_widget_values(names) >= len(names)
        # The checkpoint's transformer -> the tiny LTX-2 (its VAE output's consumers are muted or bypassed below).
        assert comfy_page.replace_node("CheckpointLoaderSimple", "UNETLoader",
                                       {"unet_name": tiny.LTX2_TINY.filename, "weight_dtype": "default"}, {0: 0}) == 1
        assert comfy_page.replace_text_encoding("IaDTestVideoConditioning", extra_widgets={"family": "ltx2"}) == 2
        assert comfy_page.mute(["LTXAVTextEncoderLoader", "LatentUpscaleModelLoader", "VAEDecodeTiled", "VAEDecode",
                                "LTXVAudioVAEDecode", "CreateVideo", "SaveVideo"]) == 7
        assert comfy_page.evaluate("""() => {   // bypass (Ctrl+B): stage 2 samples stage 1's latent at its size
            const nodes = window.app.graph.nodes.filter((n) => n.type === 'LTXVLatentUpsampler');
            for (const n of nodes) n.mode = 4;
            return nodes.length;
        }""") == 1
        assert comfy_page.set_widgets("EmptyImage", {"width": 256, "height": 256}) == 1   # stage 1: 128 x 128
        assert comfy_page.set_widgets("PrimitiveInt", {"value": FRAMES}, "Length") == 1
        assert comfy_page.set_widgets("LTXVScheduler", {"steps": 4}) == 1
        assert comfy_page.set_widgets("LTXVContextWindows", {"context_length": WINDOW, "context_overlap": OVERLAP}) == 1
        assert comfy_page.add_save_latent("LTXVSeparateAVLatent", 0, prefix="iad_wf_ltx2_long") == 2

    prompt, result, log = _run(comfy_page, comfy_server, LTX2, edit)
    _check_windows_after_iad(LTX2, prompt, result, "LTXVContextWindows", {"CFGGuider"}, copies=1)
    # Both stages sampled in windows: 5 latent frames in windows of 3 (17 frames) overlapping by 1 (8 frames).
    assert log.count("Using context windows: Context length 3 with overlap 1 for 5 frames") >= 2, log[-3000:]
    saves = [k for k, v in prompt.items() if v["class_type"] == "SaveLatent"]
    assert len(saves) == 2
    for key in saves:   # the video latents of stage 1 and stage 2: every frame of the video
        item = result.outputs[key]["latents"][0]
        latent = load_file(str(result.output_dir / item.get("subfolder", "") / item["filename"]))["latent_tensor"]
        assert tuple(latent.shape) == (1, 128, 5, 4, 4) and torch.isfinite(latent).all() and latent.std() > 0
    assert comfy_server.is_alive()
