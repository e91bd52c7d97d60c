"""IaD Evaluate Video as a ComfyUI node: in-process on synthetic faces with known answers, and
through a real ComfyUI server with the real insightface engine on the generated test pack."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness import insightface_pack as ip
from harness.comfy_server import PromptRejected
from harness.eval_synthetic import FaceParams, SyntheticFaceAnalyzer, render_face, render_video
from harness.prompts import Prompt
from iad.face_types import FaceEmbeds

H, W = 192, 320
CENTRE = dict(cx=160, cy=96, s=44)


def as_image(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255.0


@pytest.fixture(scope="module")
def node(pack):
    import importlib

    return importlib.import_module(f"{pack.__name__}.nodes.eval_nodes").IaDEvaluateVideo


def run_node(node, **inputs):
    out = node.execute(**inputs)
    report_text, plot = out.args
    return json.loads(report_text), plot, out


def test_node_reports_known_answers_and_a_plot_from_a_reference_photo(node):
    analyzer = SyntheticFaceAnalyzer()
    video = as_image(render_video(9, H, W, lambda t: FaceParams(**CENTRE, mouth_open=0.08 * t)))
    reference = as_image(render_face(H, W, FaceParams(**CENTRE))[None])
    report, plot, out = run_node(node, video=video, face_analysis=analyzer, reference_image=reference,
                                 prompt="a woman starts laughing", fps=16.0)
    assert report["face_model"] == "synthetic/colour-layout-48"
    assert report["facesim"]["face_fraction"] == 1.0 and report["facesim"]["mean"] > 0.9
    assert report["expression_copy"]["copy_paste_rate"] < 0.5          # the mouth opens: it follows the prompt
    assert report["motion"]["dynamic_degree"]["dynamic"] is False
    assert report["prompt"] == "a woman starts laughing"
    assert "no CLIP models supplied" in report["clip_t"]["skipped"]
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[2] == 960
    assert 0.0 <= float(plot.min()) and float(plot.max()) <= 1.0 and float(plot.std()) > 0.05
    assert out.ui["text"] == [json.dumps(report, indent=1)] and out.ui["images"]


def test_reference_embeds_and_reference_photo_give_the_same_result(node):
    analyzer = SyntheticFaceAnalyzer()
    photo = render_face(H, W, FaceParams(**CENTRE))
    embeds = FaceEmbeds(faces=analyzer.detect(photo), embedder=analyzer.embedder, image_sizes=[(H, W)])
    video = as_image(render_video(6, H, W, lambda t: FaceParams(**CENTRE, person=t % 2)))
    from_photo, _, _ = run_node(node, video=video, face_analysis=analyzer, reference_image=as_image(photo[None]))
    from_embeds, _, _ = run_node(node, video=video, face_analysis=analyzer, reference_embeds=embeds)
    assert from_photo["facesim"]["per_frame"] == pytest.approx(from_embeds["facesim"]["per_frame"])
    per_frame = from_embeds["facesim"]["per_frame"]
    assert min(per_frame[0::2]) > 0.99 and max(per_frame[1::2]) < 0.3    # the other person every second frame
    assert from_embeds["identity_stability"]["adjacent_mean"] < 0.3       # flickering identity


def test_bad_inputs_get_clear_errors(node):
    analyzer = SyntheticFaceAnalyzer()
    video = as_image(render_video(3, H, W, lambda t: FaceParams(**CENTRE)))
    with pytest.raises(ValueError, match="needs the reference face"):
        node.execute(video=video, face_analysis=analyzer)
    with pytest.raises(ValueError, match="no face found in reference_image 0"):
        node.execute(video=video, face_analysis=analyzer, reference_image=torch.full((1, H, W, 3), 0.35))
    bad = video.clone()
    bad[1, 5, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        node.execute(video=bad, face_analysis=analyzer, reference_image=video[:1])
    report, _, _ = run_node(node, video=video, face_analysis=analyzer, reference_image=video[:1], clip=object(),
                            prompt="x")
    assert report["clip_t"]["skipped"].startswith("CLIP-T skipped: clip_vision is not connected")
    # windows: an overlap without windows, or as long as a window, is refused before anything runs
    assert "window_frames is 0" in node.validate_inputs(fps=16.0, flow_scale=1.0, window_frames=0, window_overlap=8)
    assert "must be below window_frames 8" in node.validate_inputs(fps=16.0, flow_scale=1.0, window_frames=8,
                                                                   window_overlap=8)
    assert node.validate_inputs(fps=16.0, flow_scale=1.0, window_frames=33, window_overlap=8) is True
    with pytest.raises(ValueError, match="must be below window_frames"):
        node.execute(video=video, face_analysis=analyzer, reference_image=video[:1], window_frames=2, window_overlap=2)


def _tiny_clip_config(tmp_path, name: str, **config) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def _seeded(module: torch.nn.Module, seed: int) -> None:
    # ComfyUI's ops skip weight initialisation (weights come from files): fill them deterministically
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def tiny_comfy_clip(tmp_path, seed: int = 0):
    """A real ``comfy.sd.CLIP`` (SD1 CLIP-L text encoder class, real tokenizer) with a tiny config."""
    import functools

    import comfy.sd
    import comfy.sd1_clip

    config = _tiny_clip_config(
        tmp_path, "tiny_clip_text.json", architectures=["CLIPTextModel"], hidden_act="quick_gelu", hidden_size=16,
        intermediate_size=32, layer_norm_eps=1e-5, max_position_embeddings=77, model_type="clip_text_model",
        num_attention_heads=2, num_hidden_layers=1, projection_dim=16, vocab_size=49408, bos_token_id=0,
        eos_token_id=49407, pad_token_id=1)

    class Target:
        params = {}
        clip = functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=functools.partial(
            comfy.sd1_clip.SDClipModel, textmodel_json_config=config, return_projected_pooled=False))
        tokenizer = comfy.sd1_clip.SD1Tokenizer

    clip = comfy.sd.CLIP(target=Target())
    _seeded(clip.cond_stage_model, seed)
    return clip


def tiny_comfy_clip_vision(tmp_path, projection_dim: int = 16, seed: int = 1):
    """A real ``comfy.clip_vision.ClipVisionModel`` (ViT with projection) with a tiny config."""
    import comfy.clip_vision

    config = _tiny_clip_config(
        tmp_path, f"tiny_clip_vision_{projection_dim}.json", hidden_act="quick_gelu", hidden_size=32, image_size=28,
        intermediate_size=64, layer_norm_eps=1e-5, model_type="clip_vision_model", num_attention_heads=2,
        num_channels=3, num_hidden_layers=2, patch_size=14, projection_dim=projection_dim)
    vision = comfy.clip_vision.ClipVisionModel(config)
    _seeded(vision.model, seed)
    return vision


def test_clip_t_uses_comfyuis_own_clip_classes_and_the_projected_text_embedding(node, pack, comfy, tmp_path):
    import importlib

    glue = importlib.import_module(f"{pack.__name__}.nodes.eval_nodes")
    clip, vision = tiny_comfy_clip(tmp_path), tiny_comfy_clip_vision(tmp_path)
    prompt = "a woman laughs on a beach"

    # SD1 encoders give the unprojected pooled output by default; CLIP-T needs the projected one,
    # exactly what the same encoder computes when configured to project.
    text = glue.projected_text_embedding(clip, prompt)
    clip.cond_stage_model.clip_l.return_projected_pooled = True
    clip.cond_stage_model.clip_l.options_default = (*clip.cond_stage_model.clip_l.options_default[:2], True)
    _, projected = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    unprojected = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled="unprojected")[1]
    assert torch.allclose(text, projected[0].float(), atol=1e-5)
    assert not torch.allclose(text, unprojected[0].float(), atol=1e-3)

    frames = (np.random.default_rng(0).uniform(0, 255, (5, 40, 40, 3))).astype(np.uint8)
    result = glue.make_clip_scorer(clip, vision)(frames, prompt)
    images = vision.encode_image(torch.from_numpy(frames).float() / 255.0)["image_embeds"].float()
    expected = 100 * torch.clamp(torch.nn.functional.cosine_similarity(images, text[None], dim=1), min=0)
    assert result.per_frame == pytest.approx(expected.tolist(), abs=1e-3)
    assert result.text_model == "SD1ClipModel"

    report, _, _ = run_node(node, video=torch.from_numpy(render_video(4, H, W, lambda t: FaceParams(**CENTRE))).float() / 255,
                            face_analysis=SyntheticFaceAnalyzer(), reference_image=torch.from_numpy(
                                render_face(H, W, FaceParams(**CENTRE))[None]).float() / 255,
                            prompt=prompt, clip=clip, clip_vision=vision)
    assert len(report["clip_t"]["per_frame"]) == 4 and 0.0 <= report["clip_t"]["mean"] <= 100.0

    mismatched = tiny_comfy_clip_vision(tmp_path, projection_dim=24)
    with pytest.raises(ValueError, match="same CLIP"):
        glue.make_clip_scorer(clip, mismatched)(frames, prompt)


# -- through a real ComfyUI server, real insightface on the generated pack --------------------------------
def _face_png(server, name: str, person: int) -> str:
    image = ip.face_image(size=256, face=64, person=person)
    Image.fromarray(image).save(server.input_dir / name)
    return name


@pytest.mark.server
def test_evaluate_video_node_in_a_real_server_with_insightface(comfy_server):
    ref = _face_png(comfy_server, "iad_eval_ref.png", person=0)
    other = _face_png(comfy_server, "iad_eval_other.png", person=1)
    p = Prompt()
    analysis = p.add("IaDFaceAnalysisLoader", model_pack="antelopev2", provider="CPU", det_size=640)
    ref_image = p.add("LoadImage", image=ref)
    other_image = p.add("LoadImage", image=other)
    same_video = p.add("RepeatImageBatch", image=ref_image[0], amount=6)
    other_video = p.add("RepeatImageBatch", image=other_image[0], amount=6)
    embeds = p.add("IaDFaceEmbed", face_analysis=analysis[0], images=ref_image[0], policy="largest", face_index=0,
                   min_score=0.5, same_person_threshold=0.3)
    same = p.add("IaDEvaluateVideo", video=same_video[0], face_analysis=analysis[0], reference_embeds=embeds[0],
                 prompt="a person", fps=16.0, frame_sampling="all frames", flow_scale=1.0, window_frames=4,
                 window_overlap=1)
    different = p.add("IaDEvaluateVideo", video=other_video[0], face_analysis=analysis[0], reference_image=ref_image[0],
                      fps=16.0, frame_sampling="ConsisID (16 uniform frames)", flow_scale=0.5)
    p.add("SaveImage", images=same[1], filename_prefix="iad_eval_plot")
    result = comfy_server.run_ok(p)

    same_report = json.loads(result.ui(same)["text"][0])
    assert same_report["face_model"] == "insightface/antelopev2/glintr100"
    assert same_report["facesim"]["face_fraction"] == 1.0 and same_report["facesim"]["mean"] > 0.99
    assert same_report["motion"]["mean_magnitude"] < 0.01
    assert same_report["expression_copy"]["copy_paste_rate"] == 1.0        # identical frames copy the photo
    drift = same_report["drift"]                                          # the same face throughout: no drift
    assert abs(drift["drop"]) < 1e-3 and [(w["start"], w["end"]) for w in drift["windows"]] == [(0, 3), (2, 5)]
    different_report = json.loads(result.ui(different)["text"][0])
    assert different_report["facesim"]["mean"] < 0.5                       # another person
    assert different_report["sampling"] == "consisid16" and different_report["facesim"]["frames_evaluated"] == 6
    assert different_report["motion"]["flow_scale"] == 0.5
    plots = [n for n in result.outputs if result.ui(n).get("images") and n not in (same, different)]
    saved = result.images(plots[0])
    assert saved[0].shape[1] == 960 and saved[0].std() > 10


@pytest.mark.server
def test_evaluate_video_without_a_face_in_the_reference_fails_clearly_and_the_server_keeps_serving(comfy_server):
    Image.fromarray(np.full((256, 256, 3), 90, np.uint8)).save(comfy_server.input_dir / "iad_eval_blank.png")
    p = Prompt()
    analysis = p.add("IaDFaceAnalysisLoader", model_pack="antelopev2", provider="CPU", det_size=640)
    blank = p.add("LoadImage", image="iad_eval_blank.png")
    p.add("IaDEvaluateVideo", video=blank[0], face_analysis=analysis[0], reference_image=blank[0], fps=16.0,
          frame_sampling="all frames", flow_scale=1.0)
    result = comfy_server.run(p)
    assert not result.ok
    assert "no face found in reference_image 0" in result.error["exception_message"]
    with pytest.raises(PromptRejected):          # a missing required input is rejected before running
        bad = Prompt()
        bad.add("IaDEvaluateVideo", fps=16.0, frame_sampling="all frames", flow_scale=1.0)
        comfy_server.run(bad)
    assert comfy_server.is_alive()
