"""The foundation: the pack loads into a real ComfyUI, native Wan graphs run on tiny models,
bad prompts are rejected cleanly, and the library/glue boundary holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from harness import prompts
from harness import tiny_models as tiny
from harness.comfy_server import PromptRejected
from harness.paths import REPO_ROOT, comfyui_at_least, comfyui_version

pytestmark = pytest.mark.server


def _pack_node_ids(pack) -> set[str]:
    return {cls.GET_SCHEMA().node_id for cls in pack.nodes.collect_nodes()}


def test_server_starts_and_loads_the_pack_without_import_errors(comfy_server, pack):
    """The pack's nodes are served and nothing at all failed to import: judged by what the server
    serves and by core's failure markers, never by folder names (a clone may have any name, and
    ComfyUI-Manager's folder name also appears in core's own log lines)."""
    stats = comfy_server.get_json("/system_stats")
    assert stats["system"]["comfyui_version"]
    missing = _pack_node_ids(pack) - set(comfy_server.object_info())
    assert not missing, f"the pack's nodes are not served (import failed?): {sorted(missing)}"
    log = comfy_server.log_text()
    problems = [line for line in log.splitlines() if "Cannot import" in line or "IMPORT FAILED" in line]
    assert not problems, problems


def test_object_info_lists_every_node_the_pack_registers(comfy_server, pack):
    info = comfy_server.object_info()
    expected = _pack_node_ids(pack)
    missing = expected - set(info)
    assert not missing, f"registered by the pack but absent from /object_info: {sorted(missing)}"
    # The test-only conditioning node comes from tests/, not from the pack.
    assert "IaDTestWanConditioning" in info
    assert "IaDTestWanConditioning" not in expected


# What a user's node menu holds: the real nodes only.
USER_NODES = {"IaDFaceAnalysisLoader", "IaDFaceEmbed", "IaDModelLoader", "IaDIdentity", "IaDApply", "IaDIRSE50FaceEmbedder",
              "IaDLynxGuider", "IaDLynxRefAdapter", "IaDEvaluateVideo"}
SYNTH_WORLD_NODES = {"IaDSynthWorldTextEncode", "IaDSynthWorldPerson", "IaDSynthWorldDecode"}


def test_a_users_menu_has_only_the_real_nodes_and_developers_ask_for_the_synthetic_worlds(pack, monkeypatch):
    """The synthetic world is a research and test harness: its nodes register only when
    IAD_DEVELOPER_NODES names them (the tests do, in conftest.py; so does `make demo`)."""
    monkeypatch.delenv("IAD_DEVELOPER_NODES", raising=False)
    user = _pack_node_ids(pack)
    assert user == USER_NODES
    assert not any(cls.GET_SCHEMA().category.startswith("IaD/synthetic") for cls in pack.nodes.collect_nodes())
    monkeypatch.setenv("IAD_DEVELOPER_NODES", "synthworld.nodes")
    assert _pack_node_ids(pack) == USER_NODES | SYNTH_WORLD_NODES
    # a module the install lacks (the registry package leaves the world out) is named in the log; the real nodes load
    monkeypatch.setenv("IAD_DEVELOPER_NODES", "no_such_harness.nodes")
    assert _pack_node_ids(pack) == USER_NODES


def test_a_server_without_the_developer_switch_serves_only_the_real_nodes(tmp_path, tiny_models):
    from conftest import make_server

    env = {k: v for k, v in os.environ.items() if k != "IAD_DEVELOPER_NODES"}
    with make_server(tmp_path / "user", tiny_models, env=env) as server:
        served = set(server.object_info())
    assert USER_NODES <= served and not SYNTH_WORLD_NODES & served
    assert not {name for name in served if name.startswith("IaDSynth")}


def test_every_pack_node_input_has_a_tooltip(pack):
    for cls in pack.nodes.collect_nodes():
        schema = cls.GET_SCHEMA()
        for item in schema.inputs:
            assert getattr(item, "tooltip", None), f"{schema.node_id}.{item.id} has no tooltip"
        assert schema.category.startswith("IaD"), f"{schema.node_id} is not under the IaD menu"


def test_minimal_native_wan_t2v_workflow_runs(comfy_server):
    prompt, nodes = prompts.wan_t2v(tiny.WAN21_T2V.filename, tiny.WAN21_VAE.filename, length=5, width=64, height=48)
    first = comfy_server.run_ok(prompt)
    frames = first.images(nodes["save"])
    # 5 frames -> 2 latent frames -> decoded back to 5 frames of the requested size.
    assert len(frames) == 5
    assert all(f.shape == (48, 64, 3) for f in frames)
    stack = np.stack(frames).astype(np.float32)
    assert stack.std() > 1.0, "decoded video is flat: the tiny models produced no signal"


def test_changing_the_seed_changes_the_video(comfy_server):
    prompt_a, nodes = prompts.wan_t2v(tiny.WAN21_T2V.filename, tiny.WAN21_VAE.filename, seed=1, filename_prefix="seed_a")
    prompt_b, _ = prompts.wan_t2v(tiny.WAN21_T2V.filename, tiny.WAN21_VAE.filename, seed=2, filename_prefix="seed_b")
    a = comfy_server.run_ok(prompt_a).images(nodes["save"])
    b = comfy_server.run_ok(prompt_b).images(nodes["save"])
    assert not np.array_equal(np.stack(a), np.stack(b))


def test_invalid_prompt_is_rejected_with_node_errors_and_the_server_keeps_serving(comfy_server):
    prompt, nodes = prompts.wan_t2v("no-such-model.safetensors", tiny.WAN21_VAE.filename)
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.run(prompt)
    assert nodes["model"] in rejected.value.node_errors
    assert "no-such-model.safetensors" in json.dumps(rejected.value.node_errors)
    # A prompt with an unknown node type is also a 400, not a crash.
    with pytest.raises(PromptRejected):
        comfy_server.run({"1": {"class_type": "IaDNoSuchNode", "inputs": {}}})
    assert comfy_server.is_alive()
    ok_prompt, ok_nodes = prompts.wan_t2v(tiny.WAN21_T2V.filename, tiny.WAN21_VAE.filename, steps=1, filename_prefix="after_400")
    assert len(comfy_server.run_ok(ok_prompt).images(ok_nodes["save"])) == 5


@pytest.mark.parametrize(
    "spec, model_type, latent_channels",
    [(tiny.WAN21_T2V, "t2v", 16), (tiny.WAN21_I2V, "i2v", 16), (tiny.WAN22_5B, "t2v", 48)],
    ids=["wan2.1-t2v", "wan2.1-i2v", "wan2.2-5b"],
)
def test_tiny_wan_models_are_detected_by_comfyui_like_the_real_ones(comfy, tiny_models, spec, model_type, latent_channels):
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model(str(tiny_models[spec.filename]))
    config = patcher.model.model_config
    assert config.unet_config["image_model"] == "wan2.1"
    assert config.unet_config["model_type"] == model_type
    assert config.unet_config["dim"] == spec.dim and config.unet_config["num_heads"] == spec.dim // 128
    assert config.unet_config["num_layers"] == spec.num_layers
    assert config.latent_format.latent_channels == latent_channels
    if spec is tiny.WAN22_5B:
        assert type(config).__name__ == "WAN22_T2V"  # ComfyUI's Wan 2.2 TI2V-5B config


def test_tiny_models_are_bit_identical_across_generations(tmp_path):
    from safetensors.torch import load_file

    regenerated = tiny.ensure(tiny.WAN21_T2V, tmp_path)
    cached = tiny.ensure(tiny.WAN21_T2V)
    a, b = load_file(regenerated), load_file(cached)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert regenerated.stat().st_size < 8 * 1024 * 1024


def test_model_folders_merge_with_user_configured_paths(comfy, pack, tmp_path):
    import folder_paths

    saved = {k: folder_paths.folder_names_and_paths.get(k) for k in ("iad", "insightface", "facexlib")}
    try:
        user_dir = str(tmp_path / "shared-insightface")
        folder_paths.folder_names_and_paths["insightface"] = ([user_dir], {".onnx"})
        folder_paths.folder_names_and_paths.pop("iad", None)
        pack.nodes.register_model_folders()
        pack.nodes.register_model_folders()  # idempotent
        paths, exts = folder_paths.folder_names_and_paths["insightface"]
        assert paths[0] == user_dir, "the user's own path must stay first"
        assert paths.count(paths[-1]) == 1 and paths[-1].endswith("insightface")
        assert exts == {".onnx"}
        iad_paths, iad_exts = folder_paths.folder_names_and_paths["iad"]
        assert folder_paths.folder_names_and_paths["facexlib"][0][-1].endswith("facexlib")
        assert iad_paths[-1].endswith("iad") and iad_exts == {".safetensors"}
    finally:
        for key, value in saved.items():
            if value is None:
                folder_paths.folder_names_and_paths.pop(key, None)
            else:
                folder_paths.folder_names_and_paths[key] = value


def test_importing_the_iad_library_never_imports_comfyui_or_node_code():
    script = r"""
import importlib, pkgutil, sys
import iad
names = ["iad"] + [m.name for m in pkgutil.walk_packages(iad.__path__, "iad.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution", "synthworld"})
assert not bad, f"importing the iad library pulled in ComfyUI/node/synthetic-world modules: {bad}"
print(len(names))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_pack_metadata_is_what_comfy_registry_and_manager_expect():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    comfy_section = meta["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert comfy_section[key], key
    # The oldest ComfyUI the suite tests (its 0.3.75 lane); the ComfyUI under test satisfies it.
    assert comfy_section["requires-comfyui"] == ">=0.3.75"
    assert comfyui_at_least("0.3.75"), comfyui_version()
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    for package in ("torch", "insightface", "onnxruntime-gpu", "safetensors", "einops"):
        assert package in requirements
    for path in ("__init__.py", "nodes", "iad", "workflows", "requirements.txt", "tests", "LICENSE", "README.md", "docs"):
        assert (REPO_ROOT / path).exists(), path


def test_make_demo_runs_the_demo_workflow_end_to_end(tmp_path):
    from harness.comfy_server import free_port

    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--once", "--port", str(free_port()), "--base-dir", str(tmp_path / "demo")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "demo" / "server.log").read_text()
    assert "demo workflow ran" in done.stdout
    output = tmp_path / "demo" / "output"
    saved = sorted(output.glob("iad_demo_0*.png"))           # IaD's 9 frames, one PNG each
    assert len(saved) == 9
    from PIL import Image

    frames = np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) for path in saved])
    assert frames.shape == (9, 128, 128, 3) and frames.std() > 5.0
    # the claim side by side in one PNG: for each photo (smiling, head turned) a naive row and an IaD row
    # (4 px apart), each the photo then the 9 frames
    strip = np.asarray(Image.open(next(output.glob("iad_demo_naive_vs_iad_0*.png"))).convert("RGB"), dtype=np.float32)
    rows = [strip[r * 132:r * 132 + 128] for r in range(4)]
    assert strip.shape == (4 * 128 + 3 * 4, 10 * 128, 3)
    assert np.array_equal(rows[0][:, :128], rows[1][:, :128]) and np.array_equal(rows[2][:, :128], rows[3][:, :128])
    assert not np.array_equal(rows[0][:, :128], rows[2][:, :128])               # two different photos
    assert np.array_equal(rows[1][:, 128 + 4 * 128:128 + 5 * 128], frames[4])   # row 2: IaD's frames, first photo
    assert np.abs(rows[2][:, 128:] - rows[3][:, 128:]).mean() > 1.0             # naive and IaD differ
    # and the same latents as one video through Load VAE + VAE Decode (the world's Wan 2.1 VAE): per photo a
    # row [photo | naive | IaD]
    with Image.open(next(output.glob("iad_demo_naive_vs_iad_video_*.webp"))) as video:
        assert video.n_frames == 33 and video.size == (3 * 128 + 4, 2 * 128 + 4)
    # The demo is the identity path, not a bare sampler: the real face and IaD nodes ran.
    ran = json.loads((tmp_path / "demo" / "iad_demo_api.json").read_text())
    assert {"IaDFaceEmbed", "IaDIdentity", "IaDApply"} <= {node["class_type"] for node in ran.values()}
