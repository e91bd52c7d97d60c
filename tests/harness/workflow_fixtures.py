"""Pytest fixtures for the workflow tests: the assets a user adds (face pack, adapter, photos),
one ComfyUI page per test module (on the session's ``browser`` from conftest.py), reset for each
test, with its console log and a screenshot attached to the report when the test fails.

Import them into a test module: ``from harness.workflow_fixtures import browser, comfy_page, ...``
(``_module_page`` and ``workflow_assets`` too: pytest resolves fixtures by name in the module).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .frontend import ComfyPage
from .paths import ARTIFACTS_DIR, REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / "workflows"
SCREENSHOTS_DIR = ARTIFACTS_DIR / "workflows"
FAILURES_DIR = ARTIFACTS_DIR / "failures"


def shipped_workflows() -> list[Path]:
    return sorted(WORKFLOWS_DIR.glob("*.json"))


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def reference_image_names() -> list[str]:
    """The photo file names the shipped workflows' Load Image nodes start with."""
    return sorted({name for path in shipped_workflows()
                   for name, kind in named_files(load_json(path))[1].items() if kind == "image"})


# Core nodes that read a file from ComfyUI's input folder (widget 0), and what a stand-in of each is.
INPUT_FILE_NODES = {"LoadImage": "image", "LoadVideo": "video", "LoadAudio": "audio"}


def graph_parts(graph: dict) -> list[dict]:
    """A UI-format graph and its subgraph definitions (templates nest their nodes in those)."""
    return [graph] + list(graph.get("definitions", {}).get("subgraphs", []))


def named_files(graph: dict) -> tuple[dict[str, str], dict[str, str]]:
    """What a workflow names: ``({model file: models sub-folder}, {input file: kind})``, from its
    loaders' download metadata (properties.models), the IaD loaders (adapters have no public URL),
    and the nodes that read the input folder."""
    models, inputs = {}, {}
    for part in graph_parts(graph):
        for node in part["nodes"]:
            values = node.get("widgets_values") or []
            for meta in node.get("properties", {}).get("models", []) or []:
                models[meta["name"]] = meta["directory"]
            if node["type"] in ("IaDModelLoader", "IaDLynxRefAdapter") and values:
                models[values[0]] = "iad"
            if node["type"] in INPUT_FILE_NODES and values and isinstance(values[0], str):
                inputs[values[0]] = INPUT_FILE_NODES[node["type"]]
    return models, inputs


def write_media(target: Path, kind: str, seconds: float = 1.0) -> Path:
    """A small real file a loader decodes: a grey picture (PNG), a 16 fps 64 x 64 video (MPEG-4), or a
    16 kHz tone (WAV), whatever the name's extension says (the decoders read the content)."""
    import wave

    import numpy as np
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "image":
        Image.fromarray(np.full((64, 64, 3), 96, np.uint8)).save(target, format="PNG")
    elif kind == "video":
        import av

        with av.open(str(target), mode="w", format="mp4") as container:
            stream = container.add_stream("mpeg4", rate=16)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for i in range(int(16 * seconds) + 1):
                ramp = np.full((64, 64, 3), (40 + 8 * i) % 256, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(ramp, format="rgb24")))
            container.mux(stream.encode())
    else:
        rate = 16000
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
        with wave.open(str(target), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(samples.tobytes())
    return target


def install_every_named_file(server, graphs: list[dict], stand_in: Path) -> None:
    """Give ``server`` every file the workflows name, as a user has them after following their
    Read-me notes: ``stand_in`` under each model file's name and folder (a tiny IR-SE50 for facexlib),
    the face pack, and small real stand-ins for the photos, videos and sounds they load."""
    from . import insightface_pack

    pack = insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)
    server.add_model("insightface", pack, f"models/{pack.name}")
    for graph in graphs:
        models, inputs = named_files(graph)
        for name, folder in models.items():
            server.add_model(folder, tiny_irse50_path() if folder == "facexlib" else stand_in, name)
        for name, kind in inputs.items():
            if not (server.input_dir / name).exists():
                write_media(server.input_dir / name, kind)


def tiny_adapter_path(family: str = "wan2.1", model_dim: int = 128, blocks=(0, 1), seed: int = 0) -> Path:
    """A tiny IaD adapter checkpoint (real format, random weights) for the tiny Wan model, cached."""
    import sys

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from iad.adapter import AdapterConfig, IdentityAdapter
    from iad.checkpoint import save_adapter

    from .paths import TINY_MODELS_DIR

    target = TINY_MODELS_DIR / "adapters" / f"iad-tiny-{family}-d{model_dim}-b{'-'.join(map(str, blocks))}-s{seed}.safetensors"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        config = AdapterConfig.tiny(family=family, model_dim=model_dim, blocks=list(blocks))
        save_adapter(IdentityAdapter.random(config, seed=seed), target)
    return target


# Tiny adapters (file names in models/iad) per family, for the tiny models of tests/harness/tiny_models.py
# (all 128 wide; HunyuanVideo: blocks 0-1 double, 2-3 single; HunyuanVideo 1.5: 3 double blocks).
TINY_ADAPTERS = {"wan2.1": "iad-tiny-wan2.1-adapter.safetensors", "ltxv": "iad-tiny-ltxv-adapter.safetensors",
                 "hunyuan_video": "iad-tiny-hunyuan-video-adapter.safetensors",
                 "hunyuan_video15": "iad-tiny-hunyuan-video-1.5-adapter.safetensors"}
_TINY_ADAPTER_BLOCKS = {"wan2.1": (0, 1), "ltxv": (0, 1), "hunyuan_video": (1, 2, 3), "hunyuan_video15": (0, 2)}
# A tiny Lynx "full" folder (the released layout at the tiny Wan's width) and random IR-SE50 weights
# (full architecture, fp16: the recognizer has no smaller form).
TINY_LYNX_FOLDER = "iad-tiny-lynx-full"
TINY_LYNX_LITE_FOLDER = "iad-tiny-lynx-lite"
TINY_IRSE50_NAME = "iad-tiny-irse50.safetensors"


def tiny_lynx_folder(width: int = 128) -> Path:
    """Lynx full's released layout at a tiny Wan's width (128; 160 for the InfiniteTalk base, whose
    audio patch needs a width divisible by its 40 heads): two entries (blocks 0, 1), the ref-adapter."""
    from . import lynx_files
    from .paths import TINY_MODELS_DIR

    folder = TINY_MODELS_DIR / "lynx" / f"full-d{width}-e2"
    if not (folder / "ip_layers.safetensors").exists():
        lynx_files.write_lynx(folder, lynx_files.LynxSpec(output=width, model_dim=width))
    if not (folder / "ref_layers.safetensors").exists():   # the ref-adapter, one entry per tiny Wan block
        lynx_files.write_ref_layers(folder, blocks=2, dim=width)
    return folder


def tiny_lynx_lite_folder() -> Path:
    """Lynx lite's released layout at the tiny Wan's width: one entry (block 0), 64-wide tokens."""
    from . import lynx_files
    from .paths import TINY_MODELS_DIR

    folder = TINY_MODELS_DIR / "lynx" / "lite-d128-e1"
    if not (folder / "ip_layers.safetensors").exists():
        lynx_files.write_lynx(folder, lynx_files.LynxSpec("lite", output=64, model_dim=128, entries=1, registers=0, seed=3))
    return folder


def tiny_irse50_path() -> Path:
    """Seeded random IR-SE50 weights with the real key layout (the recognizer Lynx needs)."""
    import sys

    from .lynx_files import random_irse50_state
    from safetensors.torch import save_file

    from .paths import TINY_MODELS_DIR

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from iad.recognizers.irse50 import expected_keys

    target = TINY_MODELS_DIR / "irse50" / "random-irse50-v1.safetensors"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    state = random_irse50_state(expected_keys())
    partial = target.with_suffix(".partial")
    save_file(state, str(partial))
    partial.replace(target)
    return target


@pytest.fixture(scope="session")
def workflow_assets(comfy_server, tiny_models):
    """Puts into the running server what a user adds before running a shipped workflow: a face
    model pack (tiny antelopev2 in models/insightface/models/), IaD adapters (tiny, models/iad), the
    tiny LTX-Video/HunyuanVideo transformers, and reference photos of one person under the names the workflows' Load Image nodes use.
    Returns {"adapters": {family: name}, "photos": [names]}."""
    import numpy as np
    from PIL import Image

    from . import insightface_pack

    pack_dir = insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)
    comfy_server.add_model("insightface", pack_dir, f"models/{pack_dir.name}")
    for family, name in TINY_ADAPTERS.items():
        comfy_server.add_model("iad", tiny_adapter_path(family, blocks=_TINY_ADAPTER_BLOCKS[family]), name)
    comfy_server.add_model("iad", tiny_lynx_folder(), TINY_LYNX_FOLDER)
    comfy_server.add_model("iad", tiny_lynx_lite_folder(), TINY_LYNX_LITE_FOLDER)
    comfy_server.add_model("facexlib", tiny_irse50_path(), TINY_IRSE50_NAME)
    from . import tiny_models as tiny

    for spec in tiny.other_family_specs():  # LTX-Video, LTX-2, HunyuanVideo (1.5) transformers
        comfy_server.add_model("diffusion_models", tiny.ensure_other(spec), spec.filename)
    photos = []
    for i, name in enumerate(reference_image_names() or ["iad_reference_1.png"]):
        # The same test person in different photos: position and background vary (on the tiny
        # detector's anchor grid: 16 px steps at a 64 px face in 320 px).
        image = insightface_pack.face_image(size=320, face=64, person=0, background=80 + 15 * (i % 4),
                                            centre=(160 + 16 * ((i % 3) - 1), 160 - 16 * (i % 2)))
        Image.fromarray(np.ascontiguousarray(image)).save(comfy_server.input_dir / name)
        photos.append(name)
    for path in shipped_workflows():   # the videos and sounds they load (the driving videos, the audio)
        for name, kind in named_files(load_json(path))[1].items():
            if kind != "image" and not (comfy_server.input_dir / name).exists():
                write_media(comfy_server.input_dir / name, kind, seconds=2.0)
    return {"adapters": dict(TINY_ADAPTERS), "photos": photos}


@pytest.fixture(scope="module")
def _module_page(browser, comfy_server, workflow_assets) -> ComfyPage:
    # workflow_assets first: the UI reads the photo and model lists when it opens. One page per
    # test module: opening the UI costs ~5-8 s on 2 cores, loading a workflow replaces the graph.
    page = browser.new_page(comfy_server.url)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture
def comfy_page(request, _module_page) -> ComfyPage:
    """The ComfyUI page, with no dialog or notification left from the previous test; its console
    log (this test's part) and a screenshot are attached to the report if the test fails."""
    page = _module_page
    page.close_dialogs()
    page.dismiss_toasts()
    page.console.clear()
    page.blocked.clear()
    request.node.iad_failure_reports = {
        "browser console (this test)": page.log_text,
        "screenshot of the page at failure": lambda: str(page.screenshot(request.node.name, FAILURES_DIR)),
    }
    return page
