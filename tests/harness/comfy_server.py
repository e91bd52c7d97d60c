"""A real ComfyUI server in a subprocess, and a client that queues API-format prompts.

The server runs ``main.py --cpu --listen 127.0.0.1`` on a free port with a temporary
``--base-directory``: its ``custom_nodes`` holds symlinks to this pack (and, for tests, the
test-only node pack), its ``models/*`` symlinks to generated tiny models. Its log goes to
``<base>/server.log`` and is attached to failing tests by ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .paths import FRONTEND_ROOT

MODEL_SUBFOLDERS = (
    "diffusion_models", "text_encoders", "vae", "loras", "clip_vision", "iad", "insightface",
    "checkpoints", "clip", "unet",
)


class ServerError(RuntimeError):
    """The server failed to start or died; the message carries the tail of its log."""


class PromptRejected(RuntimeError):
    """HTTP 400 from POST /prompt: validation failed before anything ran."""

    def __init__(self, body: dict):
        self.body = body
        self.node_errors = body.get("node_errors", {})
        super().__init__(json.dumps(body, indent=1)[:4000])


@dataclass
class PromptResult:
    prompt_id: str
    status: str  # "success" or "error"
    outputs: dict
    messages: list
    output_dir: Path
    history: dict = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def error(self) -> dict | None:
        """The ``execution_error`` message (node_id, node_type, exception_message, traceback)."""
        for kind, data in self.messages:
            if kind == "execution_error":
                return data
        return None

    def images(self, node_id: str) -> list[np.ndarray]:
        """The images an output node saved, as uint8 HxWxC arrays (in save order)."""
        from PIL import Image

        frames = []
        for item in self.outputs.get(str(node_id), {}).get("images", []):
            path = self.output_dir / item.get("subfolder", "") / item["filename"]
            if item.get("type") == "temp":
                path = self.output_dir.parent / "temp" / item.get("subfolder", "") / item["filename"]
            with Image.open(path) as img:
                frames.append(np.asarray(img.convert("RGB")).copy())
        return frames

    def ui(self, node_id: str) -> dict:
        return self.outputs.get(str(node_id), {})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and Path(os.readlink(dst)) == Path(src):
            return
        dst.unlink()
    dst.symlink_to(src, target_is_directory=Path(src).is_dir())


class ComfyServer:
    """One ComfyUI process. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        comfy_dir: Path,
        base_dir: Path,
        custom_nodes: dict[str, Path] | None = None,
        models: dict[str, dict[str, Path]] | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        python: str = sys.executable,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ):
        self.comfy_dir = Path(comfy_dir)
        self.base_dir = Path(base_dir)
        self.custom_nodes = dict(custom_nodes or {})
        self.models = {k: dict(v) for k, v in (models or {}).items()}
        self.extra_args = list(extra_args)
        self.python = python
        self.port = port or free_port()
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log_path = self.base_dir / "server.log"
        self._log_file = None

    # -- layout ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def add_model(self, folder: str, path: Path, name: str | None = None) -> str:
        """Make ``path`` visible as ``models/<folder>/<name>`` (works while running: ComfyUI
        rescans folders on every listing). Returns the name to use in a prompt."""
        name = name or Path(path).name
        _link(Path(path).resolve(), self.models_dir / folder / name)
        return name

    def _prepare_layout(self) -> None:
        for sub in ("custom_nodes", "input", "output", "temp", "user/default"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in MODEL_SUBFOLDERS:
            (self.models_dir / sub).mkdir(parents=True, exist_ok=True)
        settings = self.base_dir / "user" / "default" / "comfy.settings.json"
        if not settings.exists():
            settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
        for name, src in self.custom_nodes.items():
            _link(Path(src).resolve(), self.base_dir / "custom_nodes" / name)
        for folder, files in self.models.items():
            for name, path in files.items():
                self.add_model(folder, path, name)

    # -- process --------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            self.python, str(self.comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
            "--port", str(self.port), "--base-directory", str(self.base_dir),
            "--disable-auto-launch", "--database-url", f"sqlite:///{self.base_dir / 'comfyui.db'}",
            *(["--front-end-root", FRONTEND_ROOT] if FRONTEND_ROOT else []),
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        self._prepare_layout()
        self._log_file = open(self.log_path, "ab", buffering=0)
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.pop("CUDA_VISIBLE_DEVICES", None)
        self.process = subprocess.Popen(
            self.command(), cwd=self.comfy_dir, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.process.returncode} during start-up:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise ServerError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 8000) -> str:
        return self.log_text()[-chars:]

    # -- HTTP -----------------------------------------------------------------------------------
    def request(self, method: str, path: str, payload=None, timeout: float = 30.0) -> tuple[int, bytes]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str, timeout: float = 30.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerError(f"GET {path} -> HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    # -- prompts --------------------------------------------------------------------------------
    def submit(self, prompt: dict, client_id: str | None = None) -> str:
        """POST /prompt. Returns the prompt id; raises PromptRejected on HTTP 400."""
        status, body = self.request("POST", "/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        parsed = json.loads(body) if body else {}
        if status == 400:
            raise PromptRejected(parsed)
        if status != 200:
            raise ServerError(f"POST /prompt -> HTTP {status}: {body[:2000]!r}\n{self.log_tail()}")
        return parsed["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> PromptResult:
        """Poll /history/<id> until the prompt finished (success or error)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise ServerError(f"ComfyUI died while running prompt {prompt_id}:\n{self.log_tail()}")
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") in ("success", "error"):
                    return PromptResult(
                        prompt_id=prompt_id, status=status["status_str"], outputs=entry.get("outputs", {}),
                        messages=[tuple(m) for m in status.get("messages", [])], output_dir=self.output_dir,
                        history=entry,
                    )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 600.0) -> PromptResult:
        """Queue a prompt and wait for it. Raises PromptRejected if validation fails."""
        return self.wait(self.submit(prompt), timeout=timeout)

    def run_ok(self, prompt: dict, timeout: float = 600.0) -> PromptResult:
        """Like run(), but a failed execution raises with the error and the server log."""
        result = self.run(prompt, timeout=timeout)
        if not result.ok:
            err = result.error or {}
            raise AssertionError(
                f"prompt failed in node {err.get('node_id')} ({err.get('node_type')}): "
                f"{err.get('exception_message')}\n{''.join(err.get('traceback', []))}\n--- server log ---\n{self.log_tail()}"
            )
        return result
