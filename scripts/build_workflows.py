"""Regenerate ``workflows/*.json`` from ``scripts/workflow_specs/`` inside the real frontend.

The shipped files are ComfyUI UI-format graphs. Writing that format by hand is fragile (widget
order, the hidden ``control_after_generate`` value after a seed, slot indices, node sizes), so
this script lets the frontend itself produce them: it starts ComfyUI with this pack (and no
models), opens the UI in headless Chromium, creates each node with ``LiteGraph.createNode``, sets
widgets and links *by name*, adds the Note nodes, groups and model download metadata
(``properties.models``, which the frontend's "Missing Models" dialog turns into download buttons),
and saves ``app.graph.serialize()``.

    .venv/bin/python scripts/build_workflows.py            # all workflows
    .venv/bin/python scripts/build_workflows.py wan21_t2v_1.3B_iad_single_photo

It fails loudly when a node type, widget, input or output named in a spec does not exist, so a
renamed node input cannot silently produce a broken workflow.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from harness.comfy_server import ComfyServer  # noqa: E402
from harness.frontend import Browser  # noqa: E402
from harness.paths import PACK_DIR_NAME, comfyui_dir  # noqa: E402

import workflow_specs  # noqa: E402

WORKFLOWS_DIR = REPO / "workflows"

# Adds a spec's nodes, links and groups to ``graph``: nodes at their column x (+ origin), stacked
# below the previous node of their column; links by input/output name; "@anchor" names a node of
# an official template (template workflows).
_ADD_SPEC_JS = """
function addSpec(graph, spec, origin, byKey) {
    const LG = window.LiteGraph;
    const fail = (msg) => { throw new Error(spec.name + ': ' + msg); };
    // Nodes without a y are stacked below the previous node of their column, using the real
    // rendered size (title bar included), so nothing overlaps whatever the widgets need.
    const columnBottom = {};
    const TITLE = LG.NODE_TITLE_HEIGHT || 30, GAP = 40;
    for (const n of spec.nodes) {
        const node = LG.createNode(n.type);
        if (!node) fail(`node type ${n.type} is not registered`);
        graph.add(node);
        const x = n.pos[0], y = n.pos[1] === null ? (columnBottom[x] ?? 0) : n.pos[1];
        node.pos = [x + origin[0], y + origin[1]];
        if (n.title) node.title = n.title;
        if (n.color) node.color = n.color;
        if (n.bgcolor) node.bgcolor = n.bgcolor;
        if (n.models && n.models.length) node.properties.models = n.models;
        for (const [name, value] of Object.entries(n.widgets || {})) {
            const w = (node.widgets || []).find((x) => x.name === name);
            if (!w) fail(`${n.key} (${n.type}) has no widget ${name}: ${(node.widgets || []).map((x) => x.name)}`);
            w.value = value;
        }
        const size = node.computeSize();
        node.setSize([Math.max(size[0], n.size ? n.size[0] : 0), Math.max(size[1], n.size ? n.size[1] : 0)]);
        columnBottom[x] = Math.max(columnBottom[x] ?? 0, y + node.size[1] + TITLE + GAP);
        byKey[n.key] = node;
    }
    for (const n of spec.nodes) {
        const dst = byKey[n.key];
        for (const [inputName, [srcKey, outName]] of Object.entries(n.links || {})) {
            const src = byKey[srcKey];
            if (!src) fail(`${n.key}.${inputName} links to unknown node ${srcKey}`);
            const out = typeof outName === 'number' ? outName : src.outputs.findIndex((o) => o.name === outName);
            if (out < 0 || !src.outputs[out]) fail(`${srcKey} (${src.type}) has no output ${outName}: ${src.outputs.map((o) => o.name)}`);
            const inp = dst.inputs.findIndex((i) => i.name === inputName);
            if (inp < 0) fail(`${n.key} (${dst.type}) has no input ${inputName}: ${dst.inputs.map((i) => i.name)}`);
            if (!src.connect(out, dst, inp)) fail(`could not link ${srcKey}.${outName} -> ${n.key}.${inputName} (type mismatch?)`);
        }
    }
    // Groups enclose their members' positions and sizes (a node's bounding rect is only computed
    // when it is drawn, so the group's own resizeTo would see empty rects here).
    for (const g of spec.groups) {
        const group = new LG.LGraphGroup(g.title);
        if (g.color) group.color = g.color;
        graph.add(group);
        const members = g.members.map((k) => byKey[k]), pad = 20, head = group.titleHeight ?? TITLE;
        const x0 = Math.min(...members.map((n) => n.pos[0])) - pad;
        const y0 = Math.min(...members.map((n) => n.pos[1] - TITLE)) - pad - head;
        const x1 = Math.max(...members.map((n) => n.pos[0] + n.size[0])) + pad;
        const y1 = Math.max(...members.map((n) => n.pos[1] + n.size[1])) + pad;
        group.pos = [x0, y0];
        group.size = [x1 - x0, y1 - y0];
    }
}
"""

_BUILD_JS = "async (spec) => {" + _ADD_SPEC_JS + """
    const app = window.app;
    await app.loadGraphData({last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [],
                             config: {}, extra: {}, version: 0.4}, true, false, null,
                            {showMissingNodesDialog: false, showMissingModelsDialog: false});
    addSpec(app.graph, spec, [0, 0], {});
    app.graph.setDirtyCanvas(true, true);
    return JSON.parse(JSON.stringify(app.graph.serialize()));
}"""

# A template workflow: the official template as ComfyUI ships it, its subgraphs unpacked (so the
# IaD nodes sit next to the model they patch), the spec's nodes added below it, and IaD Apply put
# between the anchor loader's MODEL output and everything that output fed.
_BUILD_TEMPLATE_JS = "async ({template, spec, anchor}) => {" + _ADD_SPEC_JS + """
    const app = window.app;
    const fail = (msg) => { throw new Error(spec.name + ': ' + msg); };
    await app.loadGraphData(template, true, false, null, {showMissingNodesDialog: false, showMissingModelsDialog: false});
    const graph = app.graph;
    for (const n of [...graph.nodes]) if (n.isSubgraphNode?.()) graph.unpackSubgraph(n);
    const found = graph.nodes.filter((n) => n.type === anchor.type && (!anchor.widget ||
        (n.widgets || []).some((w) => w.name === anchor.widget[0] && w.value === anchor.widget[1])));
    if (found.length !== 1) fail(`the template has ${found.length} ${anchor.type} nodes with ${anchor.widget}`);
    const a = found[0];
    const out = a.outputs.findIndex((o) => o.name === anchor.output);
    if (out < 0) fail(`${anchor.type} has no output ${anchor.output}`);
    const link = (id) => graph.links instanceof Map ? graph.links.get(id) : graph.links[id];
    const consumers = (a.outputs[out].links || []).map(link).filter((l) => l).map((l) => [graph.getNodeById(l.target_id), l.target_slot]);
    if (!consumers.length) fail(`nothing takes ${anchor.type}.${anchor.output} in the template`);
    let x0 = Infinity, y1 = -Infinity;
    for (const n of graph.nodes) { x0 = Math.min(x0, n.pos[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
    app.canvas.deselectAll?.();   // unpacking leaves the unpacked nodes selected
    const byKey = {'@anchor': a};
    addSpec(graph, spec, [x0, y1 + 200], byKey);
    const apply = byKey[spec.apply];
    for (const [node, slot] of consumers) if (!apply.connect(0, node, slot)) fail(`could not link IaD Apply -> ${node.type}`);
    graph.setDirtyCanvas(true, true);
    return JSON.parse(JSON.stringify(graph.serialize()));
}"""


def build_graph(page, spec: workflow_specs.Workflow) -> dict:
    """The UI-format graph of ``spec``, made by the frontend in ``page`` (a harness.frontend.ComfyPage)."""
    if isinstance(spec, workflow_specs.TemplateWorkflow):
        template = workflow_specs.official_template(spec.template)
        graph = page.evaluate(_BUILD_TEMPLATE_JS, {"template": template.graph, "spec": spec.to_js(), "anchor": spec.anchor})
        graph["extra"] = {**graph.get("extra", {}), "iad_template": template.provenance()}
    else:
        graph = page.evaluate(_BUILD_JS, spec.to_js())
    # A stable id: rebuilding an unchanged spec gives a byte-identical file.
    graph["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/comfyui-iad/ComfyUI-IaD/workflows/{spec.name}"))
    graph["extra"] = {"ds": {"scale": 0.6, "offset": [40, 40]}, "iad_workflow": spec.name,
                      **({"iad_template": graph["extra"]["iad_template"]} if "iad_template" in graph.get("extra", {}) else {})}
    return graph


def save_thumbnail(page, target: Path, width: int = 640) -> Path:
    """The template browser shows ``<name>.jpg`` next to ``<name>.json`` as the card's picture:
    the built graph, fitted to the canvas."""
    import io

    from PIL import Image

    # Fit the nodes (not whatever else the canvas holds) into the canvas by setting its transform.
    page.evaluate("""() => {
        const canvas = window.app.canvas, ds = canvas.ds, el = document.querySelector('#graph-canvas');
        const rect = el.getBoundingClientRect(), title = window.LiteGraph.NODE_TITLE_HEIGHT || 30, margin = 40;
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of window.app.graph.nodes) {
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        ds.scale = Math.min((rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0));
        ds.offset[0] = margin / ds.scale - x0;
        ds.offset[1] = margin / ds.scale - y0;
        canvas.setDirty(true, true);
    }""")
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    # Only the graph: its bounding box in page pixels (canvas transform: (pos + offset) * scale).
    box = page.evaluate("""() => {
        const ds = window.app.canvas.ds, rect = document.querySelector('#graph-canvas').getBoundingClientRect();
        const title = window.LiteGraph.NODE_TITLE_HEIGHT || 30;
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of window.app.graph.nodes) {
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        const sx = (x) => rect.left + (x + ds.offset[0]) * ds.scale, sy = (y) => rect.top + (y + ds.offset[1]) * ds.scale;
        const left = Math.max(rect.left, sx(x0) - 12), top = Math.max(rect.top, sy(y0) - 12);
        return {x: left, y: top, width: Math.min(rect.right, sx(x1) + 12) - left, height: Math.min(rect.bottom, sy(y1) + 12) - top};
    }""")
    if box["height"] <= 0 or box["width"] <= 0:
        raise RuntimeError(f"{target.name}: the fitted graph is not on the canvas: {box}")
    png = page.page.screenshot(clip=box)
    with Image.open(io.BytesIO(png)) as img:
        img = img.convert("RGB")
        img.thumbnail((width, width))
        img.save(target, "JPEG", quality=82, optimize=True)
    return target


def build(names: list[str] | None = None, out_dir: Path = WORKFLOWS_DIR) -> list[Path]:
    specs = [s for s in workflow_specs.all_workflows() if not names or s.name in names]
    if names and len(specs) != len(names):
        known = [s.name for s in workflow_specs.all_workflows()]
        raise SystemExit(f"unknown workflow name(s) {sorted(set(names) - {s.name for s in specs})}; known: {known}")
    written = []
    with tempfile.TemporaryDirectory(prefix="iad-build-workflows-") as base:
        server = ComfyServer(comfy_dir=comfyui_dir(), base_dir=Path(base), custom_nodes={PACK_DIR_NAME: REPO})
        with server, Browser() as browser:
            page = browser.new_page(server.url)
            # Thumbnails show the graph only, not the minimap overlay.
            page.evaluate("() => window.app.extensionManager.setting.set('Comfy.Minimap.Visible', false)")
            try:
                for spec in specs:
                    graph = build_graph(page, spec)
                    target = out_dir / f"{spec.name}.json"
                    target.write_text(json.dumps(graph, indent=2) + "\n")
                    written.append(target)
                    written.append(save_thumbnail(page, out_dir / f"{spec.name}.jpg"))
                    print(f"wrote {target} ({len(graph['nodes'])} nodes, {len(graph['links'])} links) and its thumbnail")
            finally:
                page.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workflow names (default: all)")
    args = parser.parse_args()
    build(args.names or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
