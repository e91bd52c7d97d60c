"""make gpu-twin: the GPU machine's software on this CPU. It runs make gpu-check's and make gpu-world's
CPU smoke runs on what the GPU machine will run them with, before a lending spends minutes finding out.

The GPU image has its own CPython 3.12 and torch 2.11.0+cu130 (docs/gpu.md); the suite's smoke runs use
this environment's Python 3.11 and torch 2.15, and the v0.28.2 lane. The twin (``.cache/gpu-twin/``):

- ``venv``: a CPython 3.12 (``--python``; else ``python3.12`` on PATH, pyenv's newest 3.12 or ``uv python
  find 3.12``) holding only GPU-image packages: those that ComfyUI v0.28.2, this pack and the bundled
  wheels require (markers evaluated as on the GPU machine; extras left out), at the versions the device
  documentation gives (``gpu_bundle.IMAGE_VERSIONS``), and what pip resolves for them. A package pip
  brings that the image lacks is uninstalled again: there only the bundle can bring it, so here too.
- ``bundle``: ``.gpu/`` (make gpu-bundle) restored with the twin's Python, as the GPU machine restores it
  (its compiled wheels are the cp312 files that travel).

``python scripts/gpu_twin.py run`` then runs ``gpu_check.py --cpu-smoke --bundle`` and ``gpu_world.py
--cpu-smoke --bundle`` in the twin, in an environment without PYTHONPATH, COMFYUI_PATH or a lane, and
writes their results under ``test-artifacts/gpu-twin/``. ``run --only tests`` runs the suite's tests but
the browser and slow ones in the twin, on the v0.28.2 lane's tree and frontend packages: the pack on the
GPU machine's Python and torch. What still differs from the GPU machine: the
CPU (no CUDA kernel, NCCL or dynamic VRAM runs), Python's patch release, and the versions of image
packages the documentation does not give (pip's newest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_bundle  # noqa: E402

TWIN = ROOT / ".cache" / "gpu-twin"
RESULTS = ROOT / "test-artifacts" / "gpu-twin"
PYTHON_VERSION = "3.12"
# Image packages the harness needs beyond the requirements: OpenCV (tests/harness draws faces with it;
# insightface requires it anyway) and pytest (``run --only tests``).
HARNESS_NEEDS = ("opencv-python-headless", "pytest")
# ComfyUI's "non essential dependencies": some core node modules import them (a server without them logs
# import errors, which the suite's start-up tests refuse). The GPU image lacks them and the check uses no
# such node, so they go to a folder of their own that only ``run --only tests`` puts on the path.
TESTS_ONLY = ("kornia", "kornia-rs", "spandrel", "pyopengl", "comfy-angle")
MARKER_ENV = gpu_bundle.marker_env(PYTHON_VERSION)


def find_python(explicit: str | None = None) -> Path:
    """A CPython 3.12 interpreter: ``explicit``, else python3.12 on PATH, pyenv's newest 3.12, uv's."""
    candidates = [explicit] if explicit else [shutil.which(f"python{PYTHON_VERSION}")]
    if not explicit:
        pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
        candidates += [str(p / "bin" / f"python{PYTHON_VERSION}") for p in
                       sorted(pyenv.glob(f"{PYTHON_VERSION}.*"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)],
                              reverse=True)]
        if shutil.which("uv"):
            found = subprocess.run(["uv", "python", "find", PYTHON_VERSION], capture_output=True, text=True)
            candidates.append(found.stdout.strip() if found.returncode == 0 else None)
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True) if Path(candidate).exists() or shutil.which(candidate) else None
        if done is not None and done.returncode == 0 and done.stdout.strip() == PYTHON_VERSION:
            return Path(candidate)
        if explicit:
            raise SystemExit(f"--python {explicit}: " + (f"not a CPython {PYTHON_VERSION} (the GPU machine's Python)"
                                                         if done is not None else "no such program"))
    raise SystemExit(f"no CPython {PYTHON_VERSION} here (the GPU machine's Python): install one (pyenv install "
                     f"{PYTHON_VERSION}, uv python install {PYTHON_VERSION}) or pass --python")


def _names(lines) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(MARKER_ENV):
            names.append(gpu_bundle.canonical(req.name))
    return names


def image_needs(comfyui: Path, site: Path) -> dict:
    """What the twin installs: the requirements of ComfyUI's tree, this pack and the restored bundle's
    distributions (in ``site``) that the GPU image meets, and the harness's; with what is left out."""
    bundled = {gpu_bundle.canonical(d.name.split("-")[0]) for d in site.glob("*.dist-info")}
    wanted = _names((comfyui / "requirements.txt").read_text().splitlines())
    wanted += _names((ROOT / "requirements.txt").read_text().splitlines())
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        wanted += _names(gpu_bundle.metadata_requires(meta.read_text(errors="replace")))   # extras: MARKER_ENV has none
    wanted += list(HARNESS_NEEDS)
    install, not_in_image = set(), set()
    for name in wanted:
        name = gpu_bundle.SAME_MODULE.get(name, name)
        if name in bundled:
            continue
        (install if name in gpu_bundle.GPU_IMAGE_PACKAGES else not_in_image).add(name)
    return {"install": sorted(install), "neither_image_nor_bundle": sorted(not_in_image)}


def build(python_explicit: str | None, bundle: Path) -> dict:
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle in {bundle}: run `make gpu-bundle` first")
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest.get("python_version") != PYTHON_VERSION:
        raise SystemExit(f"{bundle} was built for Python {manifest.get('python_version')}, the GPU machine's is "
                         f"{PYTHON_VERSION}: rebuild it (make gpu-bundle)")
    python = TWIN / "venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([str(find_python(python_explicit)), "-m", "venv", str(TWIN / "venv")], check=True)
    paths = gpu_bundle.restore(bundle, TWIN / "bundle", python=str(python))
    needs = image_needs(Path(paths["comfyui"]), Path(paths["site"]))
    constraints = TWIN / "image-versions.txt"   # the image's versions, for what pip brings along too
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(gpu_bundle.IMAGE_VERSIONS.items())))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(constraints),
                    *needs["install"]], check=True)
    extra = sorted(n for n in gpu_bundle.installed_versions(python) if n not in gpu_bundle.GPU_IMAGE_PACKAGES)
    if extra:   # pip brought them for an image package; on the GPU machine only the bundle can bring them
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)
    shutil.rmtree(TWIN / "tests-site", ignore_errors=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target",
                    str(TWIN / "tests-site"), *TESTS_ONLY], check=True)
    installed = gpu_bundle.installed_versions(python)
    pinned = {n: v for n, v in gpu_bundle.IMAGE_VERSIONS.items() if n in installed}
    wrong = {n: (v, installed[n]) for n, v in pinned.items() if installed[n] != v}
    if wrong:
        raise SystemExit(f"the twin's versions differ from the GPU image's: {wrong}")
    record = {"python": subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                                       capture_output=True, text=True, check=True).stdout.strip(),
              "installed": installed, "pinned_to_the_image": sorted(pinned), "removed_not_in_image": extra,
              "neither_image_nor_bundle": needs["neither_image_nor_bundle"], "bundle": paths}
    (TWIN / "twin.json").write_text(json.dumps(record, indent=1))
    return record


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COMFYUI_PATH", "IAD_LANE", "IAD_CACHE_DIR",
                                                              "IAD_FRONTEND_ROOT", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONUNBUFFERED="1", IAD_GPU_DIR=str(TWIN / "bundle"))
    return env


def _tests_env() -> dict:
    """The suite's environment in the twin: the full v0.28.2 lane tree (the bundle's is trimmed of tests and
    tokenizer vocabularies), its frontend and template packages (pure data) after the bundle's site, and
    ComfyUI's optional packages (TESTS_ONLY)."""
    import lanes

    lane = lanes.lanes().get("v0.28.2")
    if lane is None:
        raise SystemExit("the tests run needs the v0.28.2 lane: make setup")
    env = _clean_env()
    site = json.loads((TWIN / "twin.json").read_text())["bundle"]["site"]
    env.update(COMFYUI_PATH=lane["comfyui"], PYTHONPATH=os.pathsep.join((site, lane["site"], str(TWIN / "tests-site"))),
               IAD_LANE="gpu-twin",
               IAD_CACHE_DIR=str(TWIN / "test-cache"))
    return env


def run(only: list[str]) -> int:
    python = TWIN / "venv" / "bin" / "python"
    if not (TWIN / "twin.json").is_file():
        raise SystemExit("no twin yet: python scripts/gpu_twin.py build (make gpu-twin does both)")
    commands = {"check": [str(python), "benchmarks/gpu_check.py", "--cpu-smoke", "--bundle", "--results", str(RESULTS / "check"),
                          "--work", str(RESULTS / "check-work")],
                "world": [str(python), "benchmarks/gpu_world.py", "--cpu-smoke", "--bundle", "--results", str(RESULTS / "world")],
                "tests": [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-m", "not browser and not slow",
                          "--durations=10"]}
    failed, names = [], only or ["check", "world"]
    for name in names:
        shutil.rmtree(RESULTS / name, ignore_errors=True)
        shutil.rmtree(RESULTS / f"{name}-work", ignore_errors=True)
        print(f"[gpu-twin] {name}: {' '.join(commands[name][1:])}", flush=True)
        start = time.monotonic()
        rc = subprocess.run(commands[name], cwd=ROOT, env=_tests_env() if name == "tests" else _clean_env()).returncode
        print(f"[gpu-twin] {name}: exit {rc} in {time.monotonic() - start:.0f} s", flush=True)
        if rc:
            failed.append(name)
    twin = json.loads((TWIN / "twin.json").read_text())
    print(f"[gpu-twin] {'failed: ' + ', '.join(failed) if failed else 'passed: ' + ', '.join(names)} on the twin "
          f"({twin['python']}, torch {twin['installed'].get('torch')}); results in {RESULTS}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="make .cache/gpu-twin (venv + restored bundle); redone packages are reused")
    b.add_argument("--python", help=f"a CPython {PYTHON_VERSION} (default: found on PATH, pyenv or uv)")
    b.add_argument("--bundle", default=str(ROOT / ".gpu"))
    r = sub.add_parser("run", help="the two CPU smoke runs in the twin (--only tests: the suite's fast tests there)")
    r.add_argument("--only", action="append", choices=["check", "world", "tests"],
                   help="check, world (the default: both) or tests (the suite without browser and slow tests, on "
                        "the v0.28.2 lane's tree; about 15 minutes)")
    args = parser.parse_args(argv)
    if args.command == "build":
        record = build(args.python, Path(args.bundle))
        print(f"[gpu-twin] Python {record['python']}, torch {record['installed'].get('torch')}, "
              f"{len(record['installed'])} packages ({len(record['pinned_to_the_image'])} at the image's documented "
              f"version); removed as not in the image: {', '.join(record['removed_not_in_image']) or 'none'}; "
              f"left out (neither image nor bundle): {', '.join(record['neither_image_nor_bundle']) or 'none'}")
        return 0
    return run(args.only or [])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
