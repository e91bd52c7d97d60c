"""Generate (or reuse) the tiny deterministic models the demo and the tests use."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import tiny_models  # noqa: E402

if __name__ == "__main__":
    for name, path in tiny_models.ensure_all().items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
