"""The ComfyUI versions this pack is tested against ("lanes"), and running commands in each.

``make setup`` (scripts/setup.sh) prepares, per ComfyUI tree, a folder of the packages that tree
pins itself (``comfyui-frontend-package``, ``comfyui-workflow-templates``, ``comfyui-embedded-docs``)
and records the lane in ``.comfyui/lanes/<name>/lane.json``. One virtual environment serves every
lane (torch and the rest are shared); a lane differs only in the ComfyUI code (``COMFYUI_PATH``),
its pinned packages (first on ``PYTHONPATH``) and its cache of generated tiny models.

    python scripts/lanes.py test [pytest args]      # the whole suite in every lane, then the browser
                                                    # tests with the newest frontend; a summary line
    python scripts/lanes.py run LANE -- CMD ...     # CMD in one lane's environment (LANE "" = default)
    python scripts/lanes.py list
    python scripts/lanes.py record NAME COMFYUI SITE   # (make setup) write a lane's lane.json

Lanes: ``v0.28.2`` (current upstream; from ../shared/comfyui, where the project keeps it), ``0.3.75``
(the oldest supported; from the registry), or only ``custom`` when COMFYUI_PATH names your own
ComfyUI. A lane whose ComfyUI is not at hand says so in one line and the others still run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".comfyui"
LANES_DIR = STATE / "lanes"
# The order the suite runs in: what users run first, then the oldest supported.
ORDER = ("custom", "v0.28.2", "0.3.75")
NEWEST_FRONTEND_DIR = STATE / "frontend-newest"


def lanes() -> dict[str, dict]:
    found = {}
    for path in sorted(LANES_DIR.glob("*/lane.json")):
        lane = json.loads(path.read_text())
        found[lane["name"]] = lane
    return {name: found[name] for name in ORDER if name in found} | {
        name: lane for name, lane in found.items() if name not in ORDER}


def default_lane() -> dict:
    """The lane `make demo` and a plain `pytest` use: your ComfyUI, else 0.3.75 (always at hand)."""
    available = lanes()
    for name in ("custom", "0.3.75", "v0.28.2"):
        if name in available:
            return available[name]
    raise SystemExit("no ComfyUI prepared: run `make setup`")


def comfyui_version(comfyui: str | os.PathLike) -> str:
    """The version a ComfyUI tree declares in its comfyui_version.py."""
    version_file = Path(comfyui) / "comfyui_version.py"
    found = re.search(r'__version__\s*=\s*"([^"]+)"', version_file.read_text()) if version_file.exists() else None
    return found.group(1) if found else "unknown"


def frontend_version_in(folder: str | os.PathLike) -> str:
    """The comfyui-frontend-package version installed in a --target folder (its dist-info)."""
    for info in Path(folder).glob("comfyui_frontend_package-*.dist-info"):
        return info.name.removeprefix("comfyui_frontend_package-").removesuffix(".dist-info")
    return "unknown"


def record(name: str, comfyui: str, site: str) -> None:
    lane = {"name": name, "comfyui": comfyui, "site": site, "version": comfyui_version(comfyui),
            "frontend": frontend_version_in(site)}
    (LANES_DIR / name).mkdir(parents=True, exist_ok=True)
    (LANES_DIR / name / "lane.json").write_text(json.dumps(lane, indent=1))


def lane_env(lane: dict) -> dict:
    env = dict(os.environ)
    env["COMFYUI_PATH"] = lane["comfyui"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (lane["site"], env.get("PYTHONPATH", "")) if p)
    env["IAD_CACHE_DIR"] = str(ROOT / ".cache" / f"comfyui-{lane['name']}")
    env["IAD_LANE"] = lane["name"]
    env.pop("IAD_FRONTEND_ROOT", None)
    return env


def newest_frontend() -> dict | None:
    meta = NEWEST_FRONTEND_DIR / "frontend.json"
    return json.loads(meta.read_text()) if meta.is_file() else None


def _missing_notes() -> list[str]:
    notes = STATE / "lanes-missing.txt"
    return notes.read_text().splitlines() if notes.is_file() else []


# pytest's closing line, e.g. "3 failed, 280 passed, 1 skipped in 530.33s (0:08:50)" (framed by '=' without -q).
_PYTEST_SUMMARY = re.compile(r"(\d+ (passed|failed|errors?|skipped|deselected)|no tests ran)\b.* in [\d.]+s")


def _count(line: str, word: str) -> int:
    match = re.search(rf"(\d+) {word}", line)
    return int(match.group(1)) if match else 0


def _pytest(env: dict, args: list[str], log: Path) -> tuple[int, str, float]:
    """Run pytest, streaming its output and keeping a copy; returns (rc, closing line, seconds)."""
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    closing = ""
    with open(log, "w", encoding="utf-8") as copy:
        # The slowest tests of each lane, printed at its end: CI's 90 minutes are watched from these.
        process = subprocess.Popen([sys.executable, "-m", "pytest", "--durations=15", *args], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            sys.stdout.write(line)
            copy.write(line)
            if _PYTEST_SUMMARY.search(line):
                closing = line.strip().strip("=").strip()
        rc = process.wait()
    return rc, closing, time.monotonic() - started


def test(args: list[str]) -> int:
    available = lanes()
    if not available:
        print("no ComfyUI prepared: run `make setup`", file=sys.stderr)
        return 2
    for note in _missing_notes():
        print(f"[lanes] {note}")
    runs = []
    for name, lane in available.items():
        print(f"\n[lanes] === ComfyUI {lane['version']} ({name}), frontend {lane['frontend']} ===", flush=True)
        rc, closing, seconds = _pytest(lane_env(lane), args, ROOT / "test-artifacts" / f"pytest-{name}.log")
        runs.append((f"ComfyUI {lane['version']} + frontend {lane['frontend']}", rc, closing, seconds))
    newest = newest_frontend()
    browser_lane = available.get("v0.28.2") or next(iter(available.values()))
    if newest is not None:
        env = lane_env(browser_lane)
        env["IAD_FRONTEND_ROOT"] = newest["static"]
        print(f"\n[lanes] === browser tests: ComfyUI {browser_lane['version']} with the newest frontend "
              f"{newest['version']} (--front-end-root) ===", flush=True)
        rc, closing, seconds = _pytest(env, [*args, "-m", "browser"], ROOT / "test-artifacts" / "pytest-frontend-newest.log")
        if rc == 5:   # pytest's "no tests collected": the arguments selected no browser test
            rc, closing = 0, closing or "no browser test selected by these arguments"
        runs.append((f"ComfyUI {browser_lane['version']} + newest frontend {newest['version']} (browser tests)", rc,
                     closing, seconds))
    else:
        print("[lanes] the newest frontend was not prepared (make setup): browser lane not run")
    print("\n[lanes] summary (wall time per lane):")
    passed = failed = 0
    for title, rc, closing, seconds in runs:
        print(f"[lanes]   {title}: {closing or 'no result'} in {seconds:.0f} s (exit {rc})")
        passed += _count(closing, "passed")
        failed += _count(closing, "failed") + _count(closing, "error")
    print(f"lanes: {passed} passed, {failed} failed")
    # Any non-zero exit fails, pytest's 5 (nothing collected) too: a full lane that ran nothing is broken.
    return 1 if any(rc for _, rc, _, _ in runs) else 0


def run(name: str, command: list[str]) -> int:
    lane = lanes().get(name) if name else default_lane()
    if lane is None:
        raise SystemExit(f"no lane '{name}': prepared lanes are {', '.join(lanes()) or 'none'} (run `make setup`)")
    print(f"[lanes] ComfyUI {lane['version']} at {lane['comfyui']}", flush=True)
    return subprocess.call(command, cwd=ROOT, env=lane_env(lane))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("test", "run", "list", "record"):
        print(__doc__)
        return 2
    if argv[0] == "list":
        for name, lane in lanes().items():
            print(f"{name}: ComfyUI {lane['version']}, frontend {lane['frontend']}, {lane['comfyui']}")
        for note in _missing_notes():
            print(note)
        return 0
    if argv[0] == "test":
        return test(argv[1:])
    if argv[0] == "record":
        record(*argv[1:4])
        return 0
    rest = argv[1:]
    name = rest[0] if rest and rest[0] != "--" else ""
    command = rest[rest.index("--") + 1:] if "--" in rest else rest[1:]
    return run(name, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
