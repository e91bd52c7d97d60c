"""Start-up time of the command-line tools: `python -m <tool> --help`, against a bare
`python -c pass` and `python -c "import torch"`, measured side by side in one run (median of
--repeat runs each, wall clock, fresh processes).

    .venv/bin/python benchmarks/bench_cli_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "python -m iad.train --help": ["-m", "iad.train", "--help"],
    "python -m iad.eval --help": ["-m", "iad.eval", "--help"],
    "python -m iad.prepare --help": ["-m", "iad.prepare", "--help"],
    "python -m iad.convert_lynx --help": ["-m", "iad.convert_lynx", "--help"],
}


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for command in COMMANDS.values():   # warm the file cache once
        wall(command)
    times = {name: statistics.median(wall(cmd) for _ in range(args.repeat)) for name, cmd in COMMANDS.items()}
    torch_s = times["python -c 'import torch'"]
    print(f"{'command':38s} {'median s':>9s} {'/ import torch':>15s}")
    for name, seconds in times.items():
        print(f"{name:38s} {seconds:9.3f} {seconds / torch_s:15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
