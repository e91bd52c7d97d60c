"""``python -m iad.train CONFIG [--set key=value ...]`` - also under ``torchrun --nproc_per_node N``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .config import ConfigError


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iad.train", description="Train an IaD identity adapter (docs/training.md).")
    parser.add_argument("config", help="training config (.json or .toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted for nested ones (e.g. --set steps=100 --set losses.icr.weight=0.1)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = _value(value)
    from . import load_config, run

    try:
        config = load_config(args.config, overrides)
        if args.check:
            print(f"iad.train: {args.config} is valid")
            return 0
        result = run(config)
    except ConfigError as exc:
        print(f"iad.train: {exc}", file=sys.stderr)
        return 2
    if result.final_checkpoint is not None:
        first, last = result.evals[0], result.evals[-1]
        print(f"iad.train: {result.steps} steps, {result.samples_per_second:.2f} samples/s; eval loss "
              f"{first.get('total', float('nan')):.4f} -> {last.get('total', float('nan')):.4f}; "
              f"adapter: {result.final_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
