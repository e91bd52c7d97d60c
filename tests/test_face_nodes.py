"""IaD Face Analysis Loader / IaD Face Embed through a real ComfyUI server (LoadImage -> our nodes ->
outputs) and in-process, on the generated insightface pack the session server sees at
models/insightface/models/{antelopev2,buffalo_l}/. Every failure mode gets its message checked and
the server must keep serving the next prompt."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import insightface_pack as ip
from harness.comfy_server import PromptRejected
from harness.prompts import Prompt

pytestmark = pytest.mark.server


def save_input(server, image: np.ndarray) -> str:
    name = f"face-{uuid.uuid4().hex[:10]}.png"
    Image.fromarray(image).save(server.input_dir / name)
    return name


def face_prompt(images: list[str], model_pack: str = "antelopev2", policy: str = "largest", face_index: int = 0,
                det_size: int = 640, detector_colour_order: str | None = None):
    """Without ``detector_colour_order`` the loader gets the inputs a prompt saved before it existed."""
    p = Prompt()
    loaded = [p.add("LoadImage", image=name) for name in images]
    batch = loaded[0][0]
    for extra in loaded[1:]:
        batch = p.add("ImageBatch", image1=batch, image2=extra[0])[0]
    order = {} if detector_colour_order is None else {"detector_colour_order": detector_colour_order}
    loader = p.add("IaDFaceAnalysisLoader", model_pack=model_pack, provider="auto", det_size=det_size, **order)
    embed = p.add("IaDFaceEmbed", face_analysis=loader[0], images=batch, policy=policy, face_index=face_index,
                  min_score=0.5, same_person_threshold=0.3)
    crops = p.add("SaveImage", images=embed[1], filename_prefix=f"crops-{uuid.uuid4().hex[:6]}")
    mask = p.add("MaskToImage", mask=embed[2])
    masks = p.add("SaveImage", images=mask[0], filename_prefix=f"mask-{uuid.uuid4().hex[:6]}")
    return p, dict(loader=loader, embed=embed, crops=crops, masks=masks)


def info_of(result, nodes) -> str:
    return "\n".join(result.ui(nodes["embed"]).get("text", []))


def run_error(server, prompt) -> str:
    result = server.run(prompt)
    assert not result.ok, "the prompt was expected to fail"
    return result.error["exception_message"]


def validation_error(server, prompt, class_type: str) -> str:
    """The prompt is refused before anything runs; the message on the ``class_type`` node."""
    with pytest.raises(PromptRejected) as caught:
        server.submit(prompt)
    errors = [e for node_id, entry in caught.value.node_errors.items() if prompt[node_id]["class_type"] == class_type
              for e in entry["errors"]]
    assert errors, caught.value.body
    assert all(e["type"] != "value_not_in_list" for e in errors), errors   # the pack's message, not core's
    return errors[0]["details"].split(" - ", 1)[-1]


def assert_still_serving(server) -> None:
    assert server.is_alive()
    prompt, nodes = face_prompt([save_input(server, ip.face_image(person=0))])
    result = server.run_ok(prompt)
    assert "1 face(s) from 1 image(s)" in info_of(result, nodes)


@contextmanager
def pack_layout(server, name: str, files: list[Path], nested: bool = False):
    """A pack folder under the running server's models/insightface/models/, removed afterwards."""
    folder = server.models_dir / "insightface" / "models" / name
    target = folder / name if nested else folder
    target.mkdir(parents=True)
    for file in files:
        (target / file.name).symlink_to(file)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_loader_lists_found_packs_and_only_available_providers(comfy_server):
    import onnxruntime

    info = comfy_server.object_info()
    loader = info["IaDFaceAnalysisLoader"]["input"]["required"]
    assert loader["model_pack"][1]["options"] == ["antelopev2", "buffalo_l"]
    assert loader["model_pack"][1]["default"] == "antelopev2"
    providers = loader["provider"][1]["options"]
    assert providers[0] == "auto" and "CPU" in providers
    names = {"CUDA": "CUDAExecutionProvider", "ROCm": "ROCMExecutionProvider", "DirectML": "DmlExecutionProvider",
             "CoreML": "CoreMLExecutionProvider", "CPU": "CPUExecutionProvider"}
    assert all(names[p] in onnxruntime.get_available_providers() for p in providers[1:])
    embed = info["IaDFaceEmbed"]
    assert embed["output"] == ["FACE_EMBEDS", "IMAGE", "MASK", "STRING"]
    assert embed["input"]["required"]["policy"][1]["options"] == ["largest", "most confident", "index"]


def test_embed_workflow_runs_through_the_server(comfy_server):
    a = ip.face_image(person=0)
    b = np.full((320, 320, 3), 60, np.uint8)
    box_b = ip.draw_face(b, 192, 128, 64, person=0)
    prompt, nodes = face_prompt([save_input(comfy_server, a), save_input(comfy_server, b)])
    result = comfy_server.run_ok(prompt)
    info = info_of(result, nodes)
    assert info.startswith("insightface/antelopev2/glintr100 on CPU: 2 face(s) from 2 image(s), policy 'largest'")
    assert "image 2 of 2 (batch index 1): face at x 160..224, y 96..160" in info
    assert "Identity warning" not in info
    crops = result.images(nodes["crops"])
    assert len(crops) == 2 and all(c.shape == (112, 112, 3) for c in crops)
    assert np.abs(crops[0].astype(int) - crops[1].astype(int)).mean() < 8  # the same drawn face, aligned alike
    masks = result.images(nodes["masks"])
    assert len(masks) == 2 and masks[1].shape == (320, 320, 3)
    x1, y1, x2, y2 = box_b.astype(int)
    assert masks[1][(y1 + y2) // 2, (x1 + x2) // 2, 0] == 255 and masks[1][10, 10, 0] == 0
    assert masks[1][:, :, 0].astype(bool).sum() == pytest.approx(np.pi * 32 * 32, rel=0.1)


def test_several_faces_and_different_people_are_reported_in_info(comfy_server):
    group = np.full((640, 640, 3), 90, np.uint8)
    ip.draw_face(group, 196, 324, 128, person=0)  # large, off the anchor grid
    ip.draw_face(group, 480, 320, 64, person=1)   # small, more confident
    other = ip.face_image(person=1)
    prompt, nodes = face_prompt([save_input(comfy_server, group), save_input(comfy_server, other)],
                                policy="most confident")
    info = info_of(comfy_server.run_ok(prompt), nodes)
    assert "image 1 of 2 (batch index 0): 2 faces found, picked the most confident: x 448..512" in info
    assert "Identity warning" not in info  # person 1 in both
    prompt, nodes = face_prompt([save_input(comfy_server, group), save_input(comfy_server, other)], policy="largest")
    info = info_of(comfy_server.run_ok(prompt), nodes)
    assert "picked the largest" in info
    assert "Identity warning: image 1 of 2 (batch index 0) and image 2 of 2 (batch index 1) do not look like the same person" in info


def test_no_face_in_image_k_fails_with_its_name_and_the_server_keeps_serving(comfy_server):
    blank = np.full((256, 256, 3), 120, np.uint8)
    prompt, nodes = face_prompt([save_input(comfy_server, ip.face_image()), save_input(comfy_server, blank)])
    message = run_error(comfy_server, prompt)
    assert message.startswith("IaD Face Embed: No face found in image 2 of 2 (batch index 1)")
    assert "retrying at 320/256/160/128" in message and "lower the minimum detection score" in message
    assert_still_serving(comfy_server)


def test_tight_crop_works_through_the_server(comfy_server):
    tight = np.full((200, 200, 3), 90, np.uint8)
    ip.draw_face(tight, 100, 100, 200, ring=False)
    prompt, nodes = face_prompt([save_input(comfy_server, tight)])
    assert "with 50% padding around the image (tight crop)" in info_of(comfy_server.run_ok(prompt), nodes)


def test_missing_pack_names_folder_and_files_then_works_once_fixed(comfy_server):
    link = comfy_server.models_dir / "insightface" / "models" / "buffalo_l"
    source = Path(os.readlink(link))
    link.unlink()
    try:
        prompt, _ = face_prompt([save_input(comfy_server, ip.face_image())], model_pack="buffalo_l")
        message = validation_error(comfy_server, prompt, "IaDFaceAnalysisLoader")   # caught before it runs
        assert message.startswith("IaD Face Analysis Loader: Face model pack 'buffalo_l' not found.")
        assert f"Expected the folder {link}" in message
        for name in ip.BUFFALO_L_FILES.values():
            assert name in message
        assert "never downloads" in message
        assert_still_serving(comfy_server)
    finally:
        link.symlink_to(source)
    # The same prompt now runs: the loader notices the folder changed (no stale cached error).
    result = comfy_server.run_ok(prompt)
    assert result.ok


def test_nested_pack_is_used_with_a_note(comfy_server):
    files = sorted(ip.ensure_pack(ip.ANTELOPEV2).glob("*.onnx"))
    with pack_layout(comfy_server, "nestedpack", files, nested=True) as folder:
        packs = comfy_server.object_info()["IaDFaceAnalysisLoader"]["input"]["required"]["model_pack"][1]["options"]
        assert packs == ["antelopev2", "buffalo_l", "nestedpack"]
        prompt, nodes = face_prompt([save_input(comfy_server, ip.face_image())], model_pack="nestedpack")
        result = comfy_server.run_ok(prompt)
        info = info_of(result, nodes)
        assert f"unpacked one level too deep: the model files are in {folder / 'nestedpack'}" in info
        assert info.startswith("insightface/nestedpack/glintr100")


def test_empty_or_incomplete_pack_folder_says_what_is_missing(comfy_server):
    files = {f.name: f for f in ip.ensure_pack(ip.ANTELOPEV2).glob("*.onnx")}
    with pack_layout(comfy_server, "emptypack", []) as folder:
        prompt, _ = face_prompt([save_input(comfy_server, ip.face_image())], model_pack="emptypack")
        message = validation_error(comfy_server, prompt, "IaDFaceAnalysisLoader")
        assert f"{folder} exists but holds no .onnx files" in message
    assert_still_serving(comfy_server)
    with pack_layout(comfy_server, "halfpack", [files["2d106det.onnx"], files["glintr100.onnx"]]) as folder:
        prompt, _ = face_prompt([save_input(comfy_server, ip.face_image())], model_pack="halfpack")
        message = run_error(comfy_server, prompt)
        assert f"Face model pack folder {folder} has no face detector" in message
        assert "glintr100.onnx -> recognition" in message
    assert_still_serving(comfy_server)


def test_detector_colour_order_is_an_optional_input_and_lynxs_rgb_order_runs(comfy_server):
    """Issue 34: 'RGB (as Lynx's pipeline)' hands the detector the RGB photo, as bytedance/lynx does. On a
    pack whose detector sees colour (red only), a photo with a large red face and a smaller grey one
    gives the red face in insightface's BGR order and the grey one in RGB; switching back and forth
    re-runs the loader (never a stale analyzer); leaving the input out (a prompt saved before it
    existed) is the BGR default, bit for bit."""
    optional = comfy_server.object_info()["IaDFaceAnalysisLoader"]["input"]["optional"]["detector_colour_order"]
    assert optional[1]["options"] == ["BGR (insightface's convention)", "RGB (as Lynx's pipeline)"]
    assert optional[1]["default"] == "BGR (insightface's convention)" and "Lynx" in optional[1]["tooltip"]
    photo = np.full((640, 640, 3), 90, np.uint8)
    ip.draw_face(photo, 192, 320, 128, colour=(200, 20, 12))
    ip.draw_face(photo, 480, 320, 64, colour=(180, 180, 180))
    name = save_input(comfy_server, photo)
    files = sorted(ip.ensure_pack(ip.BUFFALO_L_RED_DETECTOR).glob("*.onnx"))
    red_face, grey_face = "x 128..256, y 256..384", "x 448..512, y 288..352"
    with pack_layout(comfy_server, "redpack", files):
        runs = {}
        for order in (None, "BGR (insightface's convention)", "RGB (as Lynx's pipeline)", None):
            prompt, nodes = face_prompt([name], model_pack="redpack", detector_colour_order=order)
            result = comfy_server.run_ok(prompt)
            runs.setdefault(order, []).append((info_of(result, nodes), result.images(nodes["crops"])[0],
                                               "\n".join(result.ui(nodes["loader"]).get("text", []))))
        (legacy, legacy_crop, legacy_loader), (again, again_crop, _) = runs[None]
        (bgr, bgr_crop, bgr_loader), = runs["BGR (insightface's convention)"]
        (rgb, rgb_crop, rgb_loader), = runs["RGB (as Lynx's pipeline)"]
        assert red_face in legacy and red_face in bgr and red_face in again
        assert "2 faces found, picked the largest: " + red_face in bgr
        assert f"face at {grey_face}" in rgb and red_face not in rgb   # the red face is invisible to it in RGB
        assert legacy == bgr and np.array_equal(legacy_crop, bgr_crop) and np.array_equal(legacy_crop, again_crop)
        assert legacy_loader == bgr_loader and "detector input" not in bgr_loader
        assert "detection size 640, detector input RGB (as Lynx's pipeline)" in rgb_loader
        assert np.abs(rgb_crop.astype(int) - bgr_crop.astype(int)).mean() > 10   # another face, aligned on its keypoints


def test_an_unknown_detector_colour_order_is_refused_before_running(comfy_server):
    prompt, _ = face_prompt([save_input(comfy_server, ip.face_image())], detector_colour_order="RGB")
    message = validation_error(comfy_server, prompt, "IaDFaceAnalysisLoader")
    assert message == ("IaD Face Analysis Loader: detector_colour_order = 'RGB' is not one of the choices "
                       "(\"BGR (insightface's convention)\", \"RGB (as Lynx's pipeline)\"). Pick one of them."), message
    assert_still_serving(comfy_server)


def test_grayscale_and_rgba_files_work_and_a_tiny_image_is_rejected(comfy_server):
    rgb = ip.face_image(person=0)
    gray_name = f"gray-{uuid.uuid4().hex[:8]}.png"
    Image.fromarray(rgb).convert("L").save(comfy_server.input_dir / gray_name)
    rgba_name = f"rgba-{uuid.uuid4().hex[:8]}.png"
    Image.fromarray(rgb).convert("RGBA").save(comfy_server.input_dir / rgba_name)
    prompt, nodes = face_prompt([gray_name, rgba_name])
    assert "2 face(s) from 2 image(s)" in info_of(comfy_server.run_ok(prompt), nodes)
    tiny = save_input(comfy_server, np.full((12, 12, 3), 90, np.uint8))
    prompt, _ = face_prompt([tiny])
    message = run_error(comfy_server, prompt)
    assert message.startswith("IaD Face Embed: image 1 of 1 (batch index 0) is only 12x12 px")
    assert_still_serving(comfy_server)


def test_onnxruntime_conflict_gives_one_warning_and_still_runs_on_cpu(tmp_path, tiny_models):
    """A server whose Python sees both onnxruntime and onnxruntime-gpu (a fake dist-info of the
    second one, as `pip install onnxruntime-gpu` next to insightface's onnxruntime leaves)."""
    from conftest import make_server

    site = tmp_path / "site"
    info = site / "onnxruntime_gpu-1.31.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.31.1\n")
    server = make_server(tmp_path / "base", tiny_models)
    server.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    with server:
        for pack in ("antelopev2", "buffalo_l"):
            prompt, nodes = face_prompt([save_input(server, ip.face_image())], model_pack=pack)
            info_text = info_of(server.run_ok(prompt), nodes)
            assert " on CPU: 1 face(s) from 1 image(s)" in info_text
            assert "onnxruntime and onnxruntime-gpu are installed together" in info_text
            assert "pip uninstall -y onnxruntime onnxruntime-gpu" in info_text
        assert server.log_text().count("onnxruntime and onnxruntime-gpu are installed together") == 1


# -- in-process: the node classes with tensors ComfyUI would pass ----------------------------------------
@pytest.fixture(scope="module")
def face_nodes(pack):
    pack.nodes.collect_nodes()
    return sys.modules[f"{pack.__name__}.nodes.face_nodes"]


@pytest.fixture(scope="module")
def node_analyzer(face_nodes, tmp_path_factory):
    root = ip.insightface_root(tmp_path_factory.mktemp("insightface"), {"antelopev2": ip.ensure_pack(ip.ANTELOPEV2)})
    return face_nodes.fa.FaceAnalyzer.load("antelopev2", [root])


def test_node_handles_rgba_and_grayscale_batches_and_rejects_nan(face_nodes, node_analyzer):
    rgb = torch.from_numpy(ip.face_image(person=0)).float()[None] / 255.0
    reference = face_nodes.IaDFaceEmbed.execute(node_analyzer, rgb)
    embeds, crops, mask, info = reference.args
    assert crops.shape == (1, 112, 112, 3) and mask.shape == (1, 320, 320) and embeds.dim == 512
    rgba = torch.cat([rgb, torch.ones_like(rgb[..., :1])], dim=-1)
    gray = rgb.mean(-1, keepdim=True)
    for variant in (rgba, gray):
        out = face_nodes.IaDFaceEmbed.execute(node_analyzer, variant).args[0]
        assert np.allclose(out.faces[0].bbox, embeds.faces[0].bbox)
    broken = torch.cat([rgb, rgb.clone()])
    broken[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"IaD Face Embed: image 2 of 2 \(batch index 1\) contains 1 NaN"):
        face_nodes.IaDFaceEmbed.execute(node_analyzer, broken)
    with pytest.raises(ValueError, match="empty batch"):
        face_nodes.IaDFaceEmbed.execute(node_analyzer, rgb[:0])
    with pytest.raises(ValueError, match="must come from IaD Face Analysis Loader"):
        face_nodes.IaDFaceEmbed.execute("not an analyzer", rgb)
