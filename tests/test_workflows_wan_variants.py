"""The Wan-variant workflows (ComfyUI's own templates + IaD) run for real: opened in the real frontend,
pointed at tiny models the way a user picks files in the loaders, queued with Ctrl+Enter and executed
by the real server to the end, with their videos saved.

What the test changes in the loaded graph, and why (as test_workflows_execution.py does for the
other workflows):
- model file names -> tiny generated models of the same format (the variant's own class, the Wan
  VAE, Lynx's released layout at the tiny width, InfiniteTalk's patch); LoRA files -> a LoRA that
  matches nothing (the distill LoRAs' layers do not exist at the tiny size);
- the text encoder (umt5-xxl), the audio encoders (wav2vec2 and whisper) and CLIP-H vision have fixed
  configs of hundreds of millions to billions of parameters: their encode nodes are replaced by
  test-only nodes that give outputs of the same shape (the text kept as the seed);
- SCAIL-2's SAM 3.1 person masks (a fixed 0.9 B-parameter model) are left out: the node runs without
  masks, as it allows;
- sizes, frame counts and steps -> small values, so a run takes seconds to a minute on 2 CPU cores.
Everything else - the template's own nodes, the IaD nodes, their widgets and links - runs as shipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import save_file

from harness import tiny_models as tiny
from harness import tiny_wan_variants as tv
from harness.workflow_fixtures import (  # noqa: F401  (fixtures)
    SCREENSHOTS_DIR, TINY_IRSE50_NAME, TINY_LYNX_FOLDER, _module_page, comfy_page, load_json, named_files,
    shipped_workflows, tiny_lynx_folder, workflow_assets,
)

pytestmark = [pytest.mark.server, pytest.mark.browser]

SIZE, FRAMES = 64, 5
STAND_IN_LORA = "iad-test-stand-in-lora.safetensors"
TINY_LYNX_160 = "iad-tiny-lynx-full-160"
AUDIO = ("AudioEncoderEncode", "IaDTestAudioEncoderOutput")
CLIP_VISION = ("CLIPVisionEncode", "IaDTestClipVisionOutput", {"seed": 0}, {0: 0})


@dataclass(frozen=True)
class Run:
    """How one workflow is pointed at tiny models and small sizes."""

    model: object                         # the tiny variant spec its diffusion models become
    widgets: tuple = ()                   # ((node type, title part), {widget: value}) in the graph and its subgraphs
    replace: tuple = ()                   # (node type, new type, widgets, {old output: new output}[, {old input: new}])
    mute: tuple = ()                      # node types left out
    lynx: str = TINY_LYNX_FOLDER          # the tiny Lynx folder of the model's width
    saves: int = 1                        # SaveVideo nodes that must produce a video
    extra: dict = field(default_factory=dict)


def _audio(encoder: str, seconds: float = 4.0) -> tuple:
    return (*AUDIO, {"encoder": encoder, "seconds": seconds, "seed": 0}, {0: 0})


SMALL = {"width": SIZE, "height": SIZE, "length": FRAMES}
RUNS = {
    "wan_humo_17B_lynx_iad": Run(tv.HUMO, ((("WanHuMoImageToVideo", ""), SMALL),), (_audio("whisper-large-v3"),)),
    "wan2.2_14B_s2v_lynx_iad": Run(
        tv.S2V, ((("WanSoundImageToVideo", ""), {"width": SIZE, "height": SIZE}), (("PrimitiveInt", "Chunk Length"), {"value": FRAMES}),
                 (("WanSoundImageToVideoExtend", ""), {"length": FRAMES})),
        (_audio("wav2vec2-large"),)),
    "wan2.2_14B_animate_lynx_iad": Run(
        tv.ANIMATE, ((("PrimitiveInt", "Width"), {"value": SIZE}), (("PrimitiveInt", "Height"), {"value": SIZE}),
                     (("WanAnimateToVideo", ""), {"length": FRAMES}), (("KSampler", ""), {"steps": 2})), (CLIP_VISION,),
        saves=2),
    # LoraLoader's CLIP half needs the text encoder the test conditioning stands in for: its model half runs.
    "wan2.1_14B_vace_ref2v_lynx_iad": Run(
        tv.VACE, ((("PrimitiveNode", ""), {"value": SIZE}), (("WanVaceToVideo", ""), {"length": FRAMES})),
        (("LoraLoader", "LoraLoaderModelOnly", {"lora_name": STAND_IN_LORA, "strength_model": 0.3}, {0: 0}, {"model": "model"}),)),
    # The speakers' masks are painted by hand in the browser (Painter): solid masks stand in for them.
    "wan2.1_14B_infinitetalk_lynx_iad": Run(
        tv.INFINITETALK_BASE, ((("PrimitiveInt", ""), {"value": SIZE}), (("WanInfiniteTalkToVideo", ""), {"length": 9})),
        (_audio("wav2vec2-base"), ("Painter", "SolidMask", {"value": 1.0, "width": SIZE, "height": SIZE}, {1: 0})),
        lynx=TINY_LYNX_160, saves=2),
    "wan2.1_14B_scail2_character_replacement_lynx_iad": Run(
        tv.SCAIL2, ((("PrimitiveInt", "Width"), {"value": SIZE}), (("PrimitiveInt", "Height"), {"value": SIZE})),
        (CLIP_VISION,), mute=("CheckpointLoaderSimple", "SAM3_VideoTrack", "SCAIL2ColoredMask"), saves=2),
    "wan2.2_14B_dancer_lynx_iad": Run(
        tv.DANCER, ((("PrimitiveInt", "Width"), {"value": SIZE}), (("PrimitiveInt", "Height"), {"value": SIZE}),
                    (("PrimitiveInt", "Length"), {"value": 9}), (("WanDancerEncodeAudio", ""), {"video_frames": 9})),
        (CLIP_VISION,), saves=2),
    "wan2.1_1.3B_causal_forcing_i2v_iad": Run(tv.CAUSAL, ((("ARVideoI2V", ""), SMALL),)),
}
WORKFLOWS = [p for p in shipped_workflows() if p.stem in RUNS and tv.available(RUNS[p.stem].model)]


@pytest.fixture(scope="module")
def variant_files(comfy_server, workflow_assets, tmp_path_factory):
    """The tiny stand-ins under the names the workflows' loaders pick (besides workflow_assets')."""
    folder = tmp_path_factory.mktemp("variant-files")
    lora = folder / STAND_IN_LORA
    save_file({"iad_test_stand_in": torch.zeros(1)}, str(lora))
    comfy_server.add_model("loras", lora, STAND_IN_LORA)
    if tv.available(tv.INFINITETALK_BASE):   # its audio patch (MultiTalkModelPatch) came after 0.3.75
        comfy_server.add_model("iad", tiny_lynx_folder(160), TINY_LYNX_160)
        comfy_server.add_model("model_patches", tv.ensure_infinitetalk_patch(), tv.INFINITETALK_PATCH)
    comfy_server.add_model("vae", tiny.ensure(tiny.WAN21_VAE), tiny.WAN21_VAE.filename)
    for run in RUNS.values():
        if tv.available(run.model):
            comfy_server.add_model("diffusion_models", tv.ensure_variant(run.model), run.model.filename)
    from harness.workflow_fixtures import tiny_adapter_path

    comfy_server.add_model("iad", tiny_adapter_path("wan2.1"), "iad-tiny-wan-variants-run.safetensors")


def _tiny_names(path, run: Run) -> dict[str, str]:
    """{file the workflow names: the tiny file it runs on}."""
    models, _ = named_files(load_json(path))
    by_folder = {"diffusion_models": run.model.filename, "vae": tiny.WAN21_VAE.filename, "loras": STAND_IN_LORA,
                 "facexlib": TINY_IRSE50_NAME, "model_patches": tv.INFINITETALK_PATCH}
    names = {name: by_folder[folder] for name, folder in models.items() if folder in by_folder}
    for name, folder in models.items():
        if folder == "iad":
            names[name] = (f"{run.lynx}/{name.split('/', 1)[1]}" if name.startswith("lynx_full/")
                           else "iad-tiny-wan-variants-run.safetensors")
    return names


def _inactive_only_types(graph: dict) -> set[str]:
    from harness.workflow_fixtures import graph_parts

    nodes = [n for part in graph_parts(graph) for n in part["nodes"]]
    return {n["type"] for n in nodes} - {n["type"] for n in nodes if n.get("mode", 0) == 0}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_wan_variant_workflow_runs_to_the_end_from_the_frontend(comfy_page, comfy_server, variant_files, path):
    from harness.paths import comfyui_at_least

    run = RUNS[path.stem]
    report = comfy_page.load_workflow(path)
    # On an older ComfyUI, a newer core node the template only has in a bypassed branch (VACE's
    # BatchImagesNode on 0.3.75) is missing but never runs; on the workflows' own ComfyUI nothing is.
    inactive_only = set() if comfyui_at_least("0.28") else _inactive_only_types(load_json(path))
    assert set(report.missing_node_types) <= inactive_only, report.missing_node_types
    comfy_page.close_dialogs()
    comfy_page.dismiss_toasts()
    names = _tiny_names(path, run)
    assert comfy_page.rename_widget_values(names) >= len(names)
    for node_type, new_type, widgets, outputs, *inputs in run.replace:
        assert comfy_page.replace_node(node_type, new_type, widgets, outputs, *inputs) >= 1, node_type
    assert comfy_page.replace_text_encoding("IaDTestWanConditioning") >= 1
    for (node_type, title), values in run.widgets:
        assert comfy_page.set_widgets(node_type, values, title) >= 1, (node_type, title)
    if run.mute:
        assert comfy_page.mute(list(run.mute)) >= len(run.mute)
    queued = comfy_page.queue_with_keyboard()
    assert queued.status == 200 and not queued.response.get("node_errors"), (
        f"{path.name}: the server rejected the prompt the frontend sent: {queued.response}")
    result = comfy_server.wait(queued.prompt_id, timeout=600)
    comfy_page.screenshot(f"{path.stem}-after-run", SCREENSHOTS_DIR)
    assert result.ok, f"{path.name}: execution failed: {result.error}"

    prompt = queued.prompt
    applies = [k for k, v in prompt.items() if v["class_type"] == "IaDApply"]
    assert applies, f"{path.name}: no IaD Apply in the prompt the frontend sent"
    # Every IaD Apply's model reaches a sampler (through the template's LoRAs, shift and conditioning nodes).
    samplers = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "CFGGuider", "BasicGuider"}
    for apply in applies:
        reached, frontier = {apply}, {apply}
        while frontier:
            frontier = {k for k, v in prompt.items() if k not in reached
                        and any(isinstance(x, list) and x[0] in frontier for x in v["inputs"].values())}
            reached |= frontier
        assert {prompt[k]["class_type"] for k in reached} & samplers, f"{path.name}: IaD Apply {apply} feeds no sampler"
    videos = [k for k, v in prompt.items() if v["class_type"] == "SaveVideo" and result.outputs.get(k)]
    assert len(videos) >= run.saves, f"{path.name}: {len(videos)} saved videos, expected {run.saves}"
    assert comfy_server.is_alive()
