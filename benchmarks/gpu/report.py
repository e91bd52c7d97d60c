"""gpu.json and gpu.md: what each phase measured, written as the check goes (a timeout keeps what was
measured before it).

A phase runs in its own process and records into a ``PhaseLog``: a JSON file rewritten after every
figure, which the runner reads back whether the phase finished, failed or was stopped at its cap.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class PhaseLog:
    """A phase's figures, on disk after every ``set`` (atomically)."""

    def __init__(self, path: Path, deadline: float):
        self.path, self.deadline = Path(path), deadline
        self.data: dict = {"figures": {}}
        self.flush()

    def set(self, key: str, value) -> None:
        self.data["figures"][key] = value
        self.flush()

    def note(self, key: str, value) -> None:
        self.data[key] = value
        self.flush()

    def left(self) -> float:
        return self.deadline - time.time()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".partial")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def read_phase(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"figures": {}}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:8]) + (", ..." if len(value) > 8 else "") + "]"
    return str(value)


def markdown(result: dict) -> str:
    """A short table per phase: its status and time, then its headline figures."""
    lines = [f"# make gpu-check ({result.get('mode')})", "",
             f"{result.get('device')}; torch {result.get('torch')}; ComfyUI {result.get('comfyui', {}).get('version')} "
             f"({result.get('comfyui', {}).get('source')}); Python {result.get('python')}; {result.get('created')}; "
             f"{result.get('total_s', 0):.0f} s of a {result.get('budget_s')} s budget.", "",
             "| phase | status | seconds (cap) |", "| --- | --- | --- |"]
    for name, phase in result.get("phases", {}).items():
        last = [line for line in phase.get("error", "").splitlines() if line.strip()][-1:]
        status = phase.get("status", "?") + (f": {last[0].strip()[:120]}" if last else "")
        lines.append(f"| {name} | {status} | {phase.get('seconds', 0):.0f} ({phase.get('cap_s', 0):.0f}) |")
    for name, phase in result.get("phases", {}).items():
        headline = phase.get("figures", {}).get("headline")
        if not headline:
            continue
        lines += ["", f"## {name}", "", "| what | value |", "| --- | --- |"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in headline.items()]
    return "\n".join(lines) + "\n"


def write(result: dict, folders: list[Path]) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu.json", json.dumps(result, indent=1, default=str)), ("gpu.md", markdown(result))):
            tmp = folder / (name + ".partial")
            tmp.write_text(text)
            os.replace(tmp, folder / name)
