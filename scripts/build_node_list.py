"""Regenerate ``node_list.json``: the pack's node ids with their descriptions.

ComfyUI-Manager's node scanner (the "install missing nodes" lookup) finds a pack's nodes by reading
``NODE_CLASS_MAPPINGS`` in its source. This pack registers V3 nodes through ``comfy_entrypoint``,
which that scanner cannot see; it also reads a ``node_list.json`` at the pack's root, so that file
lists them. Only the nodes a user's menu shows (not the synthetic world's developer nodes).

    .venv/bin/python scripts/lanes.py run "" -- .venv/bin/python scripts/build_node_list.py

tests/test_packaging.py checks that the file matches what the pack registers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
NODE_LIST = REPO / "node_list.json"


def user_node_list(pack) -> dict[str, str]:
    """{node id: display name - description} of the nodes a user's menu shows."""
    schemas = [cls.GET_SCHEMA() for cls in pack.nodes.user_nodes()]
    return {s.node_id: f"{s.display_name}: {s.description}" for s in sorted(schemas, key=lambda s: s.node_id)}


def render(nodes: dict[str, str]) -> str:
    return json.dumps(nodes, indent=2, ensure_ascii=True) + "\n"


def main() -> int:
    from harness.comfy_env import import_pack

    NODE_LIST.write_text(render(user_node_list(import_pack())))
    print(f"wrote {NODE_LIST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
