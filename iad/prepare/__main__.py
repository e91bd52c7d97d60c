"""``python -m iad.prepare [CONFIG.json] [--input DIR --output DIR --vae FILE ...]`` (docs/training.md).
On many processes or machines: ``torchrun --nproc_per_node G -m iad.prepare ...`` (same arguments)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iad.prepare", description=__doc__)
    parser.add_argument("config", nargs="?", help="JSON file of PrepareConfig fields (flags override it)")
    parser.add_argument("--input", help="folder of clips with captions, or a public dataset's root (--input-format)")
    parser.add_argument("--input-format", help="how --input is laid out: folder (default), consisid (ConsisID's "
                        "training data), opens2v (OpenS2V-5M), each as published (docs/training.md)")
    parser.add_argument("--output", help="dataset folder to create or resume")
    parser.add_argument("--vae", help="Wan VAE file (ComfyUI/models/vae)")
    parser.add_argument("--text-encoder", help="umt5-xxl file (ComfyUI/models/text_encoders), loaded as CLIP type wan")
    parser.add_argument("--text-encoder-kind", choices=["comfy", "hash", "callable"],
                        help="hash: deterministic stand-in for dry runs/tests (no language understanding)")
    parser.add_argument("--face-pack", help="insightface pack name or folder (default antelopev2)")
    parser.add_argument("--face-search-root", action="append", help="folder holding models/<pack> (repeatable)")
    parser.add_argument("--det-size", type=int)
    parser.add_argument("--resolution", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--num-frames", type=int, help="target window length, 4k+1")
    parser.add_argument("--clips-per-shard", type=int)
    parser.add_argument("--comfyui-dir", help="ComfyUI folder (default: COMFYUI_PATH or the ComfyUI this pack is in)")
    parser.add_argument("--store-pixels", action="store_true",
                        help="also keep each target window's frames (iad.train's mode 'vae' trains on them)")
    parser.add_argument("--clip-prefix", help="put before this input's clip names in the dataset (e.g. celebv-hq/), "
                        "so that a second input whose clips are named like the first one's adds them beside those")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from .pipeline import PrepareConfig, run   # torch and friends: only once the arguments are good

    import os

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""   # torchrun: whose line is whose
    logging.basicConfig(level=logging.INFO, format=prefix + "%(levelname)s %(name)s: %(message)s")
    data: dict = json.loads(Path(args.config).read_text(encoding="utf-8")) if args.config else {}
    if args.config:   # paths in a config file are relative to the file (like iad.train's)
        base = Path(args.config).resolve().parent
        for key in ("input", "output", "vae", "prompt_bank"):
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                data[key] = str(base / data[key])
        spec = data.get("text_encoder") or {}
        if isinstance(spec.get("path"), str) and spec["path"] and not Path(spec["path"]).is_absolute():
            data["text_encoder"] = {**spec, "path": str(base / spec["path"])}
    flags = {"input": args.input, "output": args.output, "vae": args.vae, "face_pack": args.face_pack,
             "face_search_roots": args.face_search_root, "det_size": args.det_size,
             "resolution": args.resolution, "num_frames": args.num_frames, "clips_per_shard": args.clips_per_shard,
             "comfyui_dir": args.comfyui_dir, "input_format": args.input_format, "clip_prefix": args.clip_prefix}
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.text_encoder or args.text_encoder_kind:
        spec = dict(data.get("text_encoder") or {})
        if args.text_encoder_kind:
            spec["kind"] = args.text_encoder_kind
        if args.text_encoder:
            spec.setdefault("kind", "comfy")
            spec["path"] = args.text_encoder
        data["text_encoder"] = spec
    if args.no_progress:
        data["progress"] = False
    if args.store_pixels:
        data["store_pixels"] = True
    try:
        config = PrepareConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        print(f"iad.prepare: {exc}", file=sys.stderr)
        return 2
    state = run(config)
    if rank:   # rank 0 reports for all
        return 0
    clips = sum(1 for _ in state["done"])
    print(f"iad.prepare: {clips} clips in {len(state['shards'])} shards at {config.output}; "
          f"{len(state['skipped'])} skipped" + "".join(f"\n  skipped {s['source']}: {s['reason']}" for s in state["skipped"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
