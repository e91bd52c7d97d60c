"""Regenerate ``workflows/*.json`` (and their thumbnails) from ``scripts/workflow_specs/`` inside the
real frontend.

The shipped files are ComfyUI UI-format graphs. Writing that format by hand is fragile (widget
order, the hidden ``control_after_generate`` value after a seed, slot indices, node sizes), so
this script lets the frontend itself produce them: it starts ComfyUI with this pack (and no
models), opens the UI in headless Chromium, creates each node with ``LiteGraph.createNode``, sets
widgets and links *by name*, adds the Note nodes, groups and model download metadata
(``properties.models``, which the frontend's "Missing Models" dialog turns into download buttons),
and saves ``app.graph.serialize()``. Then it draws each workflow's thumbnail (``<name>.jpg``, the
template browser's card) on a second server that has every file the workflows name, as a user sees
the workflow once the files are there: it refuses to draw one in which the frontend flags a node.

    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python scripts/build_workflows.py          # all
    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python scripts/build_workflows.py wan2.2_14B_s2v_lynx_iad

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
from harness.paths import PACK_DIR_NAME, comfyui_dir, comfyui_version, frontend_version  # noqa: E402

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

# A template workflow: the official template as shipped, the template nodes of custom node packs left
# out (their links taken over by the spec's replacements), the subgraphs that hold the model unpacked
# (so the IaD nodes sit next to the model they patch), the spec's nodes added below it, and an IaD Apply
# between every active anchor loader's output and everything that output fed (copies of the spec's
# IaD Apply, sharing its adapter and identity, for the second and later loaders), then the spec's chain
# of core model patches (a context-windows node) between each IaD Apply and what the loader fed; the
# template widgets the spec sets (a long video's length) get their values.
_BUILD_TEMPLATE_JS = "async ({template, spec}) => {" + _ADD_SPEC_JS + """
    const app = window.app, LG = window.LiteGraph, anchor = spec.anchor;
    const fail = (msg) => { throw new Error(spec.name + ': ' + msg); };
    await app.loadGraphData(template, true, false, null, {showMissingNodesDialog: false, showMissingModelsDialog: false});
    const graph = app.graph;
    const link = (id) => graph.links instanceof Map ? graph.links.get(id) : graph.links[id];
    const consumersOf = (node, slot) => (node.outputs[slot].links || []).map(link).filter((l) => l)
        .map((l) => [graph.getNodeById(l.target_id), l.target_slot]);
    const fed = {};
    for (const id of spec.remove) {
        const n = graph.getNodeById(id);
        if (!n) fail(`the template has no node ${id} to leave out`);
        fed[id] = (n.outputs || []).map((o, slot) => consumersOf(n, slot));
        graph.remove(n);
    }
    const isAnchor = (n) => n.type === anchor.type && (n.mode ?? 0) === 0 && (!anchor.widget ||
        (n.widgets || []).some((w) => w.name === anchor.widget[0] && anchor.widget[1].includes(w.value)));
    for (const n of [...graph.nodes]) {
        if (!(n.isSubgraphNode?.() && (n.mode ?? 0) === 0 && (n.subgraph?.nodes || []).some(isAnchor))) continue;
        const sg = n.subgraph, sgLink = (id) => sg.links instanceof Map ? sg.links.get(id) : sg.links[id];
        // Unpacking resets some widgets (a CustomCombo's choice): give the unpacked nodes the values they had.
        const recorded = sg.nodes.map((x) => ({type: x.type, values: x.serialize().widgets_values}));
        // A subgraph input promoted from a widget (no link from outside) that also feeds a socket: unpacking
        // keeps the widget's value but drops the socket's link (SCAIL-2's length -> ComfyMathExpression).
        const promoted = sg.inputs.filter((inp) => (n.inputs.find((x) => x.name === inp.name)?.link ?? null) === null)
            .map((inp) => ({name: inp.name, targets: (inp.linkIds || []).map(sgLink).filter(Boolean).map((l) => {
                const t = sg.getNodeById(l.target_id);
                return {index: sg.nodes.indexOf(t), slot: t.inputs[l.target_slot].name, widget: !!t.inputs[l.target_slot].widget};
            })})).filter((g) => g.targets.some((t) => t.widget) && g.targets.some((t) => !t.widget));
        const before = new Set(graph.nodes.map((x) => x.id));
        graph.unpackSubgraph(n);
        const fresh = graph.nodes.filter((x) => !before.has(x.id));
        fresh.forEach((x, i) => {
            const r = recorded[i];
            if (r && r.type === x.type && r.values?.length && JSON.stringify(x.serialize().widgets_values) !== JSON.stringify(r.values))
                x.configure({widgets_values: r.values});
        });
        // ... so one primitive node holds the value and feeds every input the subgraph input fed, as before.
        for (const g of promoted) {
            const holder = g.targets.find((t) => t.widget);
            const hnode = fresh[holder.index], value = hnode.widgets.find((w) => w.name === holder.slot).value;
            const type = {boolean: 'PrimitiveBoolean', string: 'PrimitiveString'}[typeof value]
                ?? (Number.isInteger(value) ? 'PrimitiveInt' : 'PrimitiveFloat');
            const prim = LG.createNode(type);
            graph.add(prim);
            prim.pos = [hnode.pos[0] - 280, hnode.pos[1]];
            prim.title = g.name;
            prim.widgets.find((w) => w.name === 'value').value = value;
            for (const t of g.targets) {
                const node = fresh[t.index], slotIndex = node.inputs.findIndex((x) => x.name === t.slot);
                if (slotIndex < 0 || !prim.connect(0, node, slotIndex)) fail(`could not reconnect subgraph input ${g.name} to ${node.type}.${t.slot}`);
            }
        }
    }
    // Template widgets the spec gives other values (a long video's length): the one node of that type and title.
    for (const s of spec.settings) {
        const hits = graph.nodes.filter((n) => n.type === s.type && n.title === s.title);
        if (hits.length !== 1) fail(`the template has ${hits.length} ${s.type} titled '${s.title}' to set, not one`);
        for (const [name, value] of Object.entries(s.widgets)) {
            const w = (hits[0].widgets || []).find((x) => x.name === name);
            if (!w) fail(`template node ${s.type} '${s.title}' has no widget ${name}`);
            w.value = value;
        }
    }
    const anchors = graph.nodes.filter(isAnchor);
    if (!anchors.length) fail(`the template has no active ${anchor.type} with ${anchor.widget}`);
    let x0 = Infinity, y1 = -Infinity;
    for (const n of graph.nodes) { x0 = Math.min(x0, n.pos[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
    app.canvas.deselectAll?.();   // unpacking leaves the unpacked nodes selected
    const byKey = {'@anchor': anchors[0]};
    addSpec(graph, spec, [x0, y1 + 200], byKey);
    const first = byKey[spec.apply];
    const slot = (node, name, side) => node[side].findIndex((x) => x.name === name);
    // The i-th copy of a spec node (for the i-th loader), its widgets' values, right of the first IaD Apply's.
    const copyOf = (proto, i) => {
        const node = LG.createNode(proto.type);
        graph.add(node);
        node.pos = [proto.pos[0] + i * (first.size[0] + 60), proto.pos[1]];
        Object.assign(node, {title: `${proto.title} (${i + 1})`, color: proto.color, bgcolor: proto.bgcolor});
        for (const w of proto.widgets || []) node.widgets.find((x) => x.name === w.name).value = w.value;
        node.setSize([...proto.size]);
        return node;
    };
    anchors.forEach((a, i) => {
        const out = slot(a, anchor.output, 'outputs');
        if (out < 0) fail(`${anchor.type} has no output ${anchor.output}`);
        let apply = first;
        if (i > 0) {   // another loader of the model (a second subgraph, a second model): its own IaD Apply
            apply = copyOf(first, i);
            for (const name of ['iad_model', 'identity']) {
                const l = link(first.inputs[slot(first, name, 'inputs')].link);
                graph.getNodeById(l.origin_id).connect(l.origin_slot, apply, slot(apply, name, 'inputs'));
            }
            a.connect(out, apply, slot(apply, 'model', 'inputs'));
        }
        const consumers = consumersOf(a, out).filter(([n]) => n !== apply);
        if (!consumers.length) fail(`nothing takes ${anchor.type}.${anchor.output} in the template`);
        // The chain of core model patches after IaD Apply (a context-windows node), each loader's own.
        let tail = apply;
        for (const key of spec.chain) {
            const node = i === 0 ? byKey[key] : copyOf(byKey[key], i);
            if (!node) fail(`chain node ${key} is not in the spec`);
            const input = slot(node, 'model', 'inputs');
            if (input < 0 || !tail.connect(0, node, input)) fail(`could not link ${tail.type} -> ${key} (${node.type}).model`);
            tail = node;
        }
        for (const [node, s] of consumers) if (!tail.connect(0, node, s)) fail(`could not link ${tail.type} -> ${node.type}`);
    });
    for (const [id, [key, outName]] of Object.entries(spec.replace)) {
        const src = byKey[key], out = src ? slot(src, outName, 'outputs') : -1;
        if (out < 0) fail(`replacement ${key}.${outName} for template node ${id} does not exist`);
        for (const consumers of fed[id] || []) {
            for (const [node, s] of consumers) if (graph.getNodeById(node.id) && !src.connect(out, node, s)) fail(`could not link ${key} -> ${node.type}`);
        }
    }
    graph.setDirtyCanvas(true, true);
    return JSON.parse(JSON.stringify(graph.serialize()));
}"""


def build_graph(page, spec: workflow_specs.Workflow) -> dict:
    """The UI-format graph of ``spec``, made by the frontend in ``page`` (a harness.frontend.ComfyPage)."""
    if isinstance(spec, workflow_specs.TemplateWorkflow):
        template = workflow_specs.official_template(spec.template)
        graph = page.evaluate(_BUILD_TEMPLATE_JS, {"template": template.graph, "spec": spec.to_js()})
        # Where it was built: the graph's widget values follow that ComfyUI's node schemas, and how the
        # template's older subgraph promotions and dynamic inputs are unpacked follows the frontend's version.
        graph["extra"] = {**graph.get("extra", {}), "iad_template": {**template.provenance(),
                                                                     "built_with": f"ComfyUI {comfyui_version()}",
                                                                     "frontend": frontend_version()}}
    else:
        graph = page.evaluate(_BUILD_JS, spec.to_js())
    # A stable id: rebuilding an unchanged spec gives a byte-identical file.
    graph["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/comfyui-iad/ComfyUI-IaD/workflows/{spec.name}"))
    graph["extra"] = {"ds": {"scale": 0.6, "offset": [40, 40]}, "iad_workflow": spec.name,
                      **({"iad_template": graph["extra"]["iad_template"]} if "iad_template" in graph.get("extra", {}) else {})}
    return graph


# Around the fitted graph, room for the frontend's own overlays (side bar, tabs, run and zoom
# controls), so that the picture shows the graph only, whatever the frontend draws where.
THUMBNAIL_MARGINS = {"left": 110, "top": 120, "right": 70, "bottom": 90}
THUMBNAIL_MARK = "iad-thumbnail"


def save_thumbnail(page, workflow: Path, target: Path, width: int = 640) -> Path:
    """The template browser shows ``<name>.jpg`` next to ``<name>.json`` as the card's picture: the
    workflow as a user opens it once its files are there (a server with every file it names), fitted
    to the canvas. Refuses to draw a workflow in which the frontend flags a node (a missing file or
    node type outlines it in red); the JPEG's comment says what it was drawn on."""
    import io

    from PIL import Image

    report = page.load_workflow(workflow)
    flagged = [f"{n['id']} {n['type']}" for n in report.error_nodes]
    if flagged or report.missing_node_types or report.missing_models:
        raise RuntimeError(f"{workflow.name}: the frontend flags {flagged}, misses node types {report.missing_node_types} "
                           f"and model files {[m['name'] for m in report.missing_models]}: its thumbnail would look broken")
    page.close_dialogs()
    page.dismiss_toasts()
    # Fit the nodes (not whatever else the canvas holds) into the canvas by setting its transform.
    box = page.evaluate("""(m) => {
        const canvas = window.app.canvas, ds = canvas.ds, el = document.querySelector('#graph-canvas');
        const rect = el.getBoundingClientRect(), title = window.LiteGraph.NODE_TITLE_HEIGHT || 30;
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of window.app.graph.nodes) {
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        const w = rect.width - m.left - m.right, h = rect.height - m.top - m.bottom;
        ds.scale = Math.min(w / (x1 - x0), h / (y1 - y0));
        ds.offset[0] = m.left / ds.scale - x0;
        ds.offset[1] = m.top / ds.scale - y0;
        canvas.setDirty(true, true);
        const left = rect.left + m.left - 8, top = rect.top + m.top - 8;
        return {x: left, y: top, width: (x1 - x0) * ds.scale + 16, height: (y1 - y0) * ds.scale + 16};
    }""", THUMBNAIL_MARGINS)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    if box["height"] <= 0 or box["width"] <= 0:
        raise RuntimeError(f"{target.name}: the fitted graph is not on the canvas: {box}")
    png = page.page.screenshot(clip=box)
    mark = f"{THUMBNAIL_MARK}: frontend {frontend_version()}, every file the workflow names present, 0 nodes flagged"
    with Image.open(io.BytesIO(png)) as img:
        img = img.convert("RGB")
        img.thumbnail((width, width))
        img.save(target, "JPEG", quality=82, optimize=True, comment=mark.encode())
    return target


def build(names: list[str] | None = None, out_dir: Path = WORKFLOWS_DIR) -> list[Path]:
    specs = [s for s in workflow_specs.all_workflows() if not names or s.name in names]
    if names and len(specs) != len(names):
        known = [s.name for s in workflow_specs.all_workflows()]
        raise SystemExit(f"unknown workflow name(s) {sorted(set(names) - {s.name for s in specs})}; known: {known}")
    from harness import tiny_models
    from harness.workflow_fixtures import install_every_named_file

    written, built = [], []
    with tempfile.TemporaryDirectory(prefix="iad-build-workflows-") as base, Browser() as browser:
        # The graphs: made by the frontend on a server with this pack and no model files.
        with ComfyServer(comfy_dir=comfyui_dir(), base_dir=Path(base) / "build", custom_nodes={PACK_DIR_NAME: REPO}) as server:
            page = browser.new_page(server.url)
            try:
                for spec in specs:
                    graph = build_graph(page, spec)
                    target = out_dir / f"{spec.name}.json"
                    target.write_text(json.dumps(graph, indent=2) + "\n")
                    written.append(target)
                    built.append((spec, target, graph))
                    print(f"wrote {target} ({len(graph['nodes'])} nodes, {len(graph['links'])} links)")
            finally:
                page.close()
        # The pictures: drawn where every file the workflows name exists, as a user sees them then.
        with ComfyServer(comfy_dir=comfyui_dir(), base_dir=Path(base) / "files", custom_nodes={PACK_DIR_NAME: REPO}) as server:
            install_every_named_file(server, [graph for _, _, graph in built], tiny_models.ensure(tiny_models.WAN21_T2V))
            page = browser.new_page(server.url)   # after the files: the UI reads the lists when it opens
            # Thumbnails show the graph only, not the minimap overlay.
            page.evaluate("() => window.app.extensionManager.setting.set('Comfy.Minimap.Visible', false)")
            try:
                for spec, target, _ in built:
                    written.append(save_thumbnail(page, target, out_dir / f"{spec.name}.jpg"))
                    print(f"drew {spec.name}.jpg")
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
