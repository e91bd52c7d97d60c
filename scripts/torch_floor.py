"""make torch-floor: the pack on the oldest torch it supports, on the oldest ComfyUI it supports.

The suite runs on torch 2.15 (what ``torchvision==0.29.2`` pulls). Users keep the torch their ComfyUI
came with: a ComfyUI 0.3.75 updated in place still runs the torch of the portable build or install it
started from, and ComfyUI itself works with torch well below 2.15. The pack's floor is ``FLOOR``;
this script checks it (``.cache/torch-floor/<torch>/``):

- ``build [--torch V]``: a venv from this environment's Python with torch ``V`` and the torchvision and
  torchaudio of the same release (``RELEASES``), pip resolving their own dependencies, and then every
  other package of this environment at exactly its version here (``--no-deps``), so that torch is the
  one difference. ``floor.json`` records what was installed and what ``pip check`` said.
- ``run [--torch V] [--only fast|ddp|fsdp] [pytest arguments]``: the suite but the browser and slow
  tests, then the two-process DDP and FSDP training tests (slow; FSDP from its own floor, below which
  the trainer refuses it), in the ComfyUI 0.3.75 lane, with that venv's Python and its own cache of
  generated tiny models (made with that torch).

Not in ``make test``: the venv is about 5 GB (torch's CUDA build and its libraries) and the run takes
about 10 minutes on 2 cores. docs/architecture.md, "Which torch", gives the measured result.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import lanes  # noqa: E402
from gpu_bundle import canonical, installed_versions  # noqa: E402
from iad.torch_support import OLDEST_TORCH, OLDEST_TORCH_FOR_FSDP, fsdp_refusal, release_of  # noqa: E402

FLOOR_DIR = ROOT / ".cache" / "torch-floor"
LANE = "0.3.75"
# torch release -> (torchvision, torchaudio) built against it.
RELEASES = {
    "2.4.1": ("0.19.1", "2.4.1"),
    "2.5.1": ("0.20.1", "2.5.1"),
    "2.6.0": ("0.21.0", "2.6.0"),
    "2.7.1": ("0.22.1", "2.7.1"),
    "2.8.0": ("0.23.0", "2.8.0"),
    "2.9.1": ("0.24.1", "2.9.1"),
}
# The release of the oldest torch the pack supports (iad/torch_support.py), and of FSDP's.
FLOOR = next(v for v in RELEASES if release_of(v) == OLDEST_TORCH)
FSDP_FLOOR = next(v for v in RELEASES if release_of(v) == OLDEST_TORCH_FOR_FSDP)
# The multi-process training tests (marked slow, so not in the fast selection): DDP, and FSDP, which has
# a floor of its own.
DISTRIBUTED_TESTS = "tests/test_train_distributed.py"
# What the floor venv takes from torch's own resolution instead of this environment: the torch
# family and the CUDA libraries each torch build pins.
TORCH_OWNED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")


def other_packages(freeze: list[str], torch_needs: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """This environment's ``pip freeze`` lines the floor venv installs as they are (``name==version``,
    over what torch's resolution chose), and the lines left out because they are not pinned releases
    (editable or local installs). A package the torch family requires at a version this environment's
    does not meet (sympy: each torch pins its own) keeps torch's choice."""
    from packaging.specifiers import SpecifierSet

    keep, skipped = [], []
    for line in freeze:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$", line)
        if match is None:
            skipped.append(line)
            continue
        name, version = canonical(match.group(1)), match.group(2)
        if TORCH_OWNED.match(name) or not all(SpecifierSet(spec).contains(version, prereleases=True)
                                              for spec in torch_needs.get(name, [])):
            continue
        keep.append(f"{name}=={version}")
    return keep, skipped


def release(version: str) -> tuple[str, str, str]:
    if version not in RELEASES:
        raise SystemExit(f"--torch {version}: not a release this script knows the torchvision and torchaudio of "
                         f"(known: {', '.join(RELEASES)}); add it to RELEASES in scripts/torch_floor.py")
    return (version, *RELEASES[version])


def _pip(python: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", *args, "--disable-pip-version-check"], text=True,
                          capture_output=capture, check=not capture)


# Run by the floor venv's Python: what the torch family requires, transitively, as {name: [specifier,
# ...]} with the markers evaluated there (pip's vendored packaging: present wherever pip is).
_TORCH_NEEDS = """
import json
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement
canon = lambda n: n.replace("_", "-").replace(".", "-").lower()
needs, todo = {}, ["torch", "torchvision", "torchaudio"]
seen = set(todo)
while todo:
    name = todo.pop()
    try:
        requires = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        continue
    for text in requires:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            dep = canon(req.name)
            needs.setdefault(dep, []).append(str(req.specifier))
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
print(json.dumps(needs))
"""


def torch_needs(python: Path) -> dict[str, list[str]]:
    out = subprocess.run([str(python), "-c", _TORCH_NEEDS], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def build(version: str) -> dict:
    torch_v, vision_v, audio_v = release(version)
    home = FLOOR_DIR / torch_v
    python = home / "venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    _pip(python, "install", "-q", f"torch=={torch_v}", f"torchvision=={vision_v}", f"torchaudio=={audio_v}")
    freeze = _pip(Path(sys.executable), "freeze", capture=True).stdout.splitlines()
    keep, skipped = other_packages(freeze, torch_needs(python))
    if keep:
        _pip(python, "install", "-q", "--no-deps", *keep)
    check = _pip(python, "check", capture=True)
    installed = installed_versions(python)
    record = {"python": subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                                       capture_output=True, text=True, check=True).stdout.strip(),
              "torch": installed.get("torch"), "torchvision": installed.get("torchvision"),
              "torchaudio": installed.get("torchaudio"), "same_as_this_environment": len(keep),
              "left_out_not_pinned": skipped, "pip_check": check.stdout.strip().splitlines(),
              "installed": installed}
    (home / "floor.json").write_text(json.dumps(record, indent=1))
    return record


def run_env(version: str) -> dict:
    lane = lanes.lanes().get(LANE)
    if lane is None:
        raise SystemExit(f"the floor run needs the ComfyUI {LANE} lane: make setup")
    env = lanes.lane_env(lane)
    env.update(IAD_LANE=f"{LANE}-torch{version}", IAD_CACHE_DIR=str(FLOOR_DIR / version / "test-cache"),
               PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    return env


def run(version: str, only: str | None, pytest_args: list[str]) -> int:
    torch_v = release(version)[0]
    home = FLOOR_DIR / torch_v
    if not (home / "floor.json").is_file():
        raise SystemExit(f"no floor venv for torch {torch_v} yet: python scripts/torch_floor.py build --torch {torch_v}")
    record = json.loads((home / "floor.json").read_text())
    pytest = [str(home / "venv" / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "--durations=10"]
    runs = {"fast": [*pytest, "-m", "not browser and not slow", *pytest_args],
            "ddp": [*pytest, DISTRIBUTED_TESTS, "-k", "not fsdp", *pytest_args],
            "fsdp": [*pytest, DISTRIBUTED_TESTS, "-k", "fsdp", *pytest_args]}
    names = [only] if only else list(runs)
    print(f"[torch-floor] ComfyUI {LANE}, Python {record['python']}, torch {record['torch']}, torchvision "
          f"{record['torchvision']}, torchaudio {record['torchaudio']}", flush=True)
    failed = []
    for name in names:
        env = run_env(torch_v)
        if name == "fsdp" and fsdp_refusal(torch_v):
            if only != "fsdp":
                # The trainer refuses FSDP here; the fast suite's tests/test_torch_floor.py checks that refusal.
                print(f"[torch-floor] fsdp: not run: the trainer refuses FSDP below torch {FSDP_FLOOR} (--only fsdp "
                      f"probes it there anyway)", flush=True)
                continue
            print(f"[torch-floor] fsdp: a probe below FSDP's floor ({FSDP_FLOOR}), the trainer's refusal lifted "
                  f"(IAD_FSDP_BELOW_FLOOR=1)", flush=True)
            env["IAD_FSDP_BELOW_FLOOR"] = "1"
        print(f"[torch-floor] {name}: {' '.join(runs[name][1:])}", flush=True)
        start = time.monotonic()
        rc = subprocess.run(runs[name], cwd=ROOT, env=env).returncode
        print(f"[torch-floor] {name}: exit {rc} in {time.monotonic() - start:.0f} s", flush=True)
        if rc:
            failed.append(name)
    print(f"[torch-floor] {'FAILED: ' + ', '.join(failed) if failed else 'passed'} on torch {record['torch']} with "
          f"ComfyUI {LANE}", flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "make the floor venv (.cache/torch-floor/<torch>/venv)"),
                       ("run", "the suite but browser and slow tests there, in the ComfyUI 0.3.75 lane")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--torch", default=FLOOR, help=f"the torch release (default: the floor, {FLOOR})")
        if name == "run":
            p.add_argument("--only", choices=["fast", "ddp", "fsdp"],
                           help="fast (the suite but browser and slow tests), ddp or fsdp (the two-process training "
                                f"tests; fsdp below torch {FSDP_FLOOR}: a probe with the trainer's refusal lifted); "
                                "default all three")
    args, rest = parser.parse_known_args(argv)
    if args.command == "build":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        record = build(args.torch)
        print(f"[torch-floor] Python {record['python']}, torch {record['torch']}, torchvision {record['torchvision']}, "
              f"torchaudio {record['torchaudio']}; {record['same_as_this_environment']} other packages at this "
              f"environment's versions; pip check: {'; '.join(record['pip_check']) or 'nothing'}")
        return 0
    return run(args.torch, args.only, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
