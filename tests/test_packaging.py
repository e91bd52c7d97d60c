"""What users install, checked with the registry's own tools (comfy-cli, which `make setup` puts
in .comfyui/tools/comfy-cli): the package `comfy node pack` makes holds only what runs and loads
in ComfyUI; `comfy node validate` passes; ComfyUI-Manager's node scanner can see the V3 nodes
(node_list.json); the Python sources are ASCII."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

COMFY_CLI = REPO_ROOT / ".comfyui" / "tools" / "comfy-cli" / "bin" / "comfy"
# What a user needs: the entry point, the glue, the library, the workflows, the example training
# configs, what the registry and ComfyUI-Manager read, and the licence.
PACKAGE_TOP_LEVEL = {"__init__.py", "nodes", "iad", "workflows", "configs", "requirements.txt", "install.py",
                     "pyproject.toml", "node_list.json", "README.md", "LICENSE"}
PACKAGE_MAX_BYTES = 1_000_000   # 12.5 MB before the .comfyignore (tests, docs, the synthetic world's models)


def _comfy_cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    assert COMFY_CLI.exists(), f"{COMFY_CLI} is missing: run `make setup` (it installs the registry's comfy-cli)"
    # comfy-cli runs in its own venv: the lane's PYTHONPATH (compiled packages for another Python, in
    # make gpu-twin's test run) must not reach it.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "DO_NOT_TRACK": "1", "HOME": str(home)}
    return subprocess.run([str(COMFY_CLI), "--skip-prompt", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _checkout_files(*pathspec: str) -> list[str]:
    """The files git would commit from this checkout (tracked and new, not ignored) that exist."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *pathspec],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    return [name for name in listed if name and (REPO_ROOT / name).is_file()]


def _working_tree_copy(dest: Path) -> Path:
    """This checkout's files as a fresh repository: `comfy node pack` packs what git tracks, and
    the test must see uncommitted work too."""
    for name in _checkout_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return _working_tree_copy(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def registry_package(checkout, tmp_path_factory) -> Path:
    done = _comfy_cli("node", "pack", cwd=checkout, home=tmp_path_factory.mktemp("home"))
    assert done.returncode == 0, done.stdout + done.stderr
    return checkout / "node.zip"


def test_the_registry_package_holds_only_what_runs(registry_package):
    with zipfile.ZipFile(registry_package) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == PACKAGE_TOP_LEVEL, f"unexpected: {sorted(top_level - PACKAGE_TOP_LEVEL)}, " \
                                           f"missing: {sorted(PACKAGE_TOP_LEVEL - top_level)}"
    assert not [n for n in names if n.endswith((".onnx", ".safetensors", ".pt", ".pth", ".ckpt"))]
    size = registry_package.stat().st_size
    print(f"\nregistry package: {len(names)} files, {size / 1e6:.2f} MB")
    assert size < PACKAGE_MAX_BYTES


@pytest.mark.server
def test_the_registry_package_loads_in_comfyui_with_every_real_node(registry_package, tmp_path, tiny_models):
    """Unpacked where ComfyUI-Manager puts a registry install: the 8 real nodes load. A developer
    switch naming the synthetic world (absent from the package) is reported and changes nothing."""
    from conftest import make_server
    from test_foundation import USER_NODES

    pack = tmp_path / "ComfyUI-IaD"
    with zipfile.ZipFile(registry_package) as archive:
        archive.extractall(pack)
    server = make_server(tmp_path / "base", tiny_models, env={**os.environ, "IAD_DEVELOPER_NODES": "synthworld.nodes"})
    server.custom_nodes = {"ComfyUI-IaD": pack}
    with server:
        served = set(server.object_info())
        log = server.log_text()
    assert USER_NODES <= served and not {n for n in served if n.startswith("IaDSynth")}
    assert not [line for line in log.splitlines() if "Cannot import" in line or "IMPORT FAILED" in line]
    assert "IAD_DEVELOPER_NODES names 'synthworld.nodes', which this install cannot import" in log


def test_comfy_node_validate_passes(checkout, tmp_path):
    """The registry's publishing checks (configuration, and ruff's security rules S102/S307/E702)."""
    done = _comfy_cli("node", "validate", cwd=checkout, home=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "All validation checks passed" in output, output
    assert not re.search(r"\b(S102|S307|E702)\b", output), output   # ruff's findings (it only warns)


def test_node_list_json_names_every_node_a_user_sees(pack):
    """ComfyUI-Manager's scanner reads NODE_CLASS_MAPPINGS from the source, which V3 nodes do not
    have, or node_list.json: so the file must list exactly the nodes the pack registers."""
    import build_node_list

    assert (REPO_ROOT / "node_list.json").read_text() == build_node_list.render(build_node_list.user_node_list(pack)), \
        "node_list.json is stale: run scripts/build_node_list.py"


def test_python_sources_are_ascii():
    offenders = []
    for name in _checkout_files("*.py"):
        for number, line in enumerate((REPO_ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
            if not line.isascii():
                offenders.append(f"{name}:{number}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)
