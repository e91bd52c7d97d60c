"""Shared fixtures: a real ComfyUI server (subprocess), ComfyUI in-process, tiny real-format models.

- ``tiny_models``: {filename: path} of generated Wan 2.1 T2V / Wan 2.2 5B / Wan 2.1 I2V / Wan VAE.
- ``comfy_server``: one ComfyUI server for the session with this pack, the test-only nodes and
  the tiny models (``models/diffusion_models``, ``models/vae``).
- ``comfy_server_factory(extra_args=[...])``: another server with its own flags (``--lowvram`` ...).
- ``comfy`` / ``pack``: ComfyUI imported in this process (CPU) / this pack imported as ComfyUI does.
- ``browser``: headless Chromium for the real frontend (``harness.frontend``; workflow tests).
A failing test gets the tail of every running server's log attached to its report.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The synthetic world's developer nodes (synthworld/nodes.py) register only on request: the tests
# ask for them, in this process and in every server they start (which inherits the environment).
os.environ.setdefault("IAD_DEVELOPER_NODES", "synthworld.nodes")

from harness import insightface_pack  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402
from harness.comfy_env import import_comfy, import_pack  # noqa: E402
from harness.comfy_server import ComfyServer  # noqa: E402
from harness.paths import (PACK_DIR_NAME, REPO_ROOT, TEST_NODES_DIR, comfyui_dir, comfyui_version,  # noqa: E402
                           frontend_version)

_LIVE_SERVERS: list[ComfyServer] = []

# LTX-2 (LTXAV) exists only in ComfyUI v0.2x. Where the running ComfyUI lacks it, its test module is
# not collected (rather than skipped); test_apply_inprocess checks which versions have it.
collect_ignore = [] if tiny.LTX2_TINY in tiny.other_family_specs() else ["test_apply_ltx2.py"]
# make gpu-check's bundle carries ComfyUI v0.28.2 (scripts/gpu_bundle.py): its CPU smoke run and bundle are
# tested in that version's lane, not once more per lane (test_gpu_check.py runs in every lane); so is
# make gpu-world's CPU smoke run, which uses the same ComfyUI.
# The synthetic world's published-number reruns (about 8 minutes) too: they run the world's own sampler
# on ComfyUI's WanModel, not the pack's patching, whose every version the other modules cover.
if comfyui_version() != "0.28.2":
    collect_ignore += ["test_gpu_check_bundle.py", "test_gpu_world_smoke.py", "test_synth_published.py"]


def pytest_report_header(config):
    """Which ComfyUI and frontend this run tests (one lane of `make test`)."""
    return [f"ComfyUI {comfyui_version()}, frontend {frontend_version()} ({comfyui_dir()})"]


@pytest.fixture(scope="session")
def comfy_dir() -> Path:
    return comfyui_dir()


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    return tiny.ensure_all()


def _server_models(tiny_models: dict[str, Path]) -> dict[str, dict[str, Path]]:
    return {
        "diffusion_models": {s.filename: tiny_models[s.filename] for s in (tiny.WAN21_T2V, tiny.WAN22_5B, tiny.WAN21_I2V)},
        "vae": {tiny.WAN21_VAE.filename: tiny_models[tiny.WAN21_VAE.filename]},
        # Generated insightface packs where users keep theirs: models/insightface/models/<pack>/.
        "insightface/models": {spec.name: insightface_pack.ensure_pack(spec)
                               for spec in (insightface_pack.ANTELOPEV2, insightface_pack.BUFFALO_L)},
    }


def make_server(base_dir: Path, tiny_models: dict[str, Path], extra_args=(), env: dict[str, str] | None = None) -> ComfyServer:
    return ComfyServer(
        comfy_dir=comfyui_dir(),
        base_dir=base_dir,
        custom_nodes={PACK_DIR_NAME: REPO_ROOT, "iad_test_nodes": TEST_NODES_DIR},
        models=_server_models(tiny_models),
        extra_args=list(extra_args),
        env=env,
    )


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, tiny_models) -> ComfyServer:
    server = make_server(tmp_path_factory.mktemp("comfy-base"), tiny_models)
    _LIVE_SERVERS.append(server)
    try:
        yield server.start()
    finally:
        server.stop()
        _LIVE_SERVERS.remove(server)


@pytest.fixture(scope="session")
def comfy_server_factory(tmp_path_factory, tiny_models):
    started: list[ComfyServer] = []

    def start(extra_args=()) -> ComfyServer:
        server = make_server(tmp_path_factory.mktemp("comfy-base-extra"), tiny_models, extra_args)
        started.append(server)
        _LIVE_SERVERS.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
            _LIVE_SERVERS.remove(server)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (system chromium driven by Playwright; one per
    process: Playwright's sync API cannot run twice in a thread). See tests/harness/frontend.py."""
    from harness.frontend import Browser

    with Browser() as b:
        yield b


@pytest.fixture(scope="session")
def comfy():
    return import_comfy()


@pytest.fixture(scope="session")
def pack(comfy):
    return import_pack()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _LIVE_SERVERS:
            report.sections.append((f"ComfyUI server log (port {server.port}, {server.log_path})", server.log_tail(12000)))
        # Fixtures may register more diagnostics (browser console, screenshots) on the test item.
        for title, produce in getattr(item, "iad_failure_reports", {}).items():
            try:
                report.sections.append((title, produce()))
            except Exception as exc:  # noqa: BLE001 - a diagnostic must never hide the failure
                report.sections.append((title, f"(could not collect: {exc!r})"))
