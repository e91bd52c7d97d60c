"""`make demo`: start ComfyUI with this pack on 127.0.0.1 and run the demo workflow once.

Uses a self-contained ComfyUI instance under .demo/ (its own models, input, output and user
folders; the ComfyUI code is the one `make setup` prepared or COMFYUI_PATH), populated with the
synthetic portrait world's trained models (synthworld/assets; see docs/synth-world.md): a
held-out person's photo goes through the real face nodes, IaD Identity and IaD Apply on a tiny
native Wan T2V. The demo prompt runs through the real server; then the server keeps
serving so you can open http://127.0.0.1:8188 and run the shipped workflows (Workflow ->
Browse Templates -> ComfyUI-IaD) or the demo graph saved to .demo/iad_demo_api.json.

Options: --once (run the demo and stop: what the tests use), --port N, --base-dir DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import demo_graph  # noqa: E402
from harness.comfy_server import ComfyServer  # noqa: E402
from harness.paths import PACK_DIR_NAME, comfyui_dir  # noqa: E402


def _interrupt(*_):
    raise KeyboardInterrupt


def _video_file(result, node_id: str) -> Path:
    item = result.outputs[str(node_id)]["images"][0]
    return result.output_dir / item.get("subfolder", "") / item["filename"]


def _frame_count(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as video:
        return int(getattr(video, "n_frames", 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="run the demo prompt, then stop the server")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base-dir", default=str(REPO / ".demo"), help="the demo instance's folder (default .demo/)")
    args = parser.parse_args()

    # `kill` should stop ComfyUI too, like Ctrl+C (the server runs in its own process group).
    signal.signal(signal.SIGTERM, _interrupt)
    # The demo's graph uses the synthetic world's developer nodes, which register only on request.
    os.environ.setdefault("IAD_DEVELOPER_NODES", "synthworld.nodes")
    base = Path(args.base_dir).resolve()
    demo = demo_graph.prepare(base)
    server = ComfyServer(
        comfy_dir=comfyui_dir(),
        base_dir=base,
        custom_nodes={PACK_DIR_NAME: REPO},
        models=demo.models,
        port=args.port,
    )
    print(f"[demo] starting ComfyUI on {server.url} (log: {server.log_path})")
    t0 = time.monotonic()
    server.start()
    print(f"[demo] server up in {time.monotonic() - t0:.1f} s")
    try:
        t1 = time.monotonic()
        result = server.run_ok(demo.prompt)
        frames = result.images(demo.output_node)
        video = _video_file(result, demo.video_node)
        strip = _video_file(result, demo.strip_node)
        print(f"[demo] demo workflow ran in {time.monotonic() - t1:.1f} s: a synthetic-world person's photos (smiling, "
              f"head turned), prompt {demo.text!r}, naive injection and IaD from the same seed, side by side:\n"
              f"[demo]   {strip} (one PNG: per photo a naive row, then an IaD row; each the photo, then the 9 frames)\n"
              f"[demo]   {video} (animated WEBP, {_frame_count(video)} frames: per photo a row photo | naive | IaD)\n"
              f"[demo]   and IaD's {len(frames)} frames as PNGs ({frames[0].shape[1]}x{frames[0].shape[0]}) in {server.output_dir}")
        (base / "iad_demo_api.json").write_text(json.dumps(demo.prompt, indent=1))
        if args.once:
            return 0
        print(f"[demo] open {server.url} - Ctrl+C stops the server")
        while server.is_alive():
            time.sleep(1.0)
        print(server.log_tail())
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
