"""Convert Lynx's released files into one IaD adapter checkpoint.

    python -m iad.convert_lynx path/to/lynx_full  ComfyUI/models/iad/lynx_full.safetensors
    python -m iad.convert_lynx path/to/lynx_lite  ComfyUI/models/iad/lynx_lite.safetensors --dtype bf16

IN is a Lynx variant folder holding ``resampler.safetensors`` and ``ip_layers.safetensors`` (or
either of those files). Full vs lite is detected from the files. The output records the
embedder (``facexlib/irse50``), so the IaD nodes refuse it with insightface embeddings.
"""

from __future__ import annotations

import argparse
import sys
import time

_DTYPES = {"keep": None, "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}   # torch dtype names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iad.convert_lynx", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="Lynx variant folder (lynx_full / lynx_lite) or one of its two files")
    parser.add_argument("output", help="the IaD adapter .safetensors to write (e.g. ComfyUI/models/iad/lynx_full.safetensors)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="keep", help="storage dtype of the output (default: as stored)")
    parser.add_argument("--family", default="wan2.1", help="base-model family recorded in the checkpoint (default wan2.1)")
    args = parser.parse_args(argv)
    if not args.output.endswith(".safetensors"):
        parser.error("the output must be a .safetensors file")
    # torch and the checkpoint code load only once the arguments are good (`--help` answers at once)
    import torch

    from .checkpoint import inspect_adapter, save_adapter
    from .lynx import LynxFormatError, inspect_lynx, load_lynx

    start = time.perf_counter()
    try:
        layout = inspect_lynx(args.input)
        print(layout.describe())
        for note in layout.notes:
            print("note:", note)
        if not layout.matches_released_wan14b():
            print("note: shapes differ from the released Wan2.1-T2V-14B checkpoints (a custom or test file)")
        adapter = load_lynx(args.input, family=args.family)
    except (LynxFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dtype = _DTYPES[args.dtype]
    out = save_adapter(adapter, args.output, dtype=None if dtype is None else getattr(torch, dtype))
    config = inspect_adapter(out)  # read back: the written header validates
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, embedder {config.embedder}) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
