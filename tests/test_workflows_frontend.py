"""The shipped workflows in the real ComfyUI frontend (comfyui-frontend-package, headless Chromium):
they are listed by the template browser, open with no missing node types and no invalid widget
values, tell the user which model files to download, and convert to a prompt the server accepts
the way the Run button converts them.

Screenshots of every loaded workflow go to test-artifacts/workflows/.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from harness.workflow_fixtures import (  # noqa: F401  (fixtures)
    SCREENSHOTS_DIR, _module_page, comfy_page, load_json, shipped_workflows, workflow_assets,
)
from harness.paths import PACK_DIR_NAME, frontend_version

pytestmark = [pytest.mark.server, pytest.mark.browser]

WORKFLOWS = shipped_workflows()
VIRTUAL_NODES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")


def _missing_here(path, server) -> set[str]:
    """The node types ``path`` needs that this ComfyUI cannot have: core nodes that came after it
    (LTX-2's with ComfyUI 0.7; SCAIL's, Dancer's, InfiniteTalk's and the causal model's after 0.3.75),
    never one of the pack's own. On ComfyUI v0.28 and newer: none (the shipped workflows' own
    ComfyUI), which the tests then require of every frontend."""
    from harness.paths import comfyui_at_least
    from harness.workflow_fixtures import graph_parts

    if comfyui_at_least("0.28"):
        return set()
    graph = load_json(path)
    subgraphs = {part.get("id") for part in graph_parts(graph)[1:]}
    known = set(_registered_types(server)) | set(VIRTUAL_NODES) | subgraphs
    return {n["type"] for part in graph_parts(graph) for n in part["nodes"]
            if n["type"] not in known and not n["type"].startswith("IaD")}


_TYPES: dict = {}


def _registered_types(server) -> list[str]:
    if server.url not in _TYPES:
        _TYPES[server.url] = list(server.object_info())
    return _TYPES[server.url]


# Inputs of core loaders that name a model file; their value must be documented for download.
MODEL_FILE_WIDGETS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "lora_name", "text_encoder",
                      "audio_encoder_name", "name",
                      "model_name", "adapter_name", "iad_model", "model_pack", "pack", "weights", "ref_layers"}


def _ids(paths):
    return [p.stem for p in paths]


def test_there_are_shipped_workflows():
    names = {p.stem for p in WORKFLOWS}
    assert any("1.3B" in n for n in names), f"the smallest Wan 2.1 1.3B workflow is missing: {sorted(names)}"
    assert any("14B" in n for n in names), f"the 14B multi-reference workflow is missing: {sorted(names)}"
    assert any("ab" in n.split("_") for n in names), f"the A/B comparison workflow is missing: {sorted(names)}"
    assert any(n.startswith("ltxv") for n in names) and any(n.startswith("hunyuan_video") for n in names), sorted(names)


def test_template_browser_endpoint_lists_every_shipped_workflow(comfy_server):
    listing = comfy_server.get_json("/api/workflow_templates")
    assert sorted(listing.get(PACK_DIR_NAME, [])) == sorted(p.stem for p in WORKFLOWS), listing
    for path in WORKFLOWS:
        quoted = urllib.parse.quote(path.name)
        served = comfy_server.get_json(f"/api/workflow_templates/{PACK_DIR_NAME}/{quoted}")
        assert served == load_json(path), f"{path.name} served by the template browser differs from the file"
        # The card's picture: the frontend asks for <name>.jpg next to the workflow.
        status, body = comfy_server.request("GET", f"/api/workflow_templates/{PACK_DIR_NAME}/{urllib.parse.quote(path.stem)}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", f"no thumbnail {path.stem}.jpg for the template browser"


def test_template_browser_dialog_shows_the_pack_and_opens_a_workflow(comfy_page):
    """Workflow > Browse Templates: the pack has its own entry listing our workflows, and
    clicking one loads it into the canvas with no missing nodes."""
    page = comfy_page.page
    comfy_page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACK_DIR_NAME, exact=True).first.click()
    first = WORKFLOWS[0]
    card = page.get_by_text(first.stem, exact=True).first
    card.wait_for(state="visible")
    for path in WORKFLOWS:
        assert page.get_by_text(path.stem, exact=True).count() >= 1, f"{path.stem} not shown in the template browser"
    comfy_page.screenshot("template_browser", SCREENSHOTS_DIR)
    before = comfy_page.evaluate("() => window.__iad.loads")
    card.click()
    comfy_page.wait_for("(n) => window.__iad.loads > n", "the template to load", arg=before)
    types = comfy_page.evaluate("() => window.app.graph.nodes.map((n) => n.type)")
    assert sorted(types) == sorted(n["type"] for n in load_json(first)["nodes"])
    assert comfy_page.evaluate("() => window.__iad.missing") == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=_ids(WORKFLOWS))
def test_workflow_opens_in_the_frontend_without_missing_nodes_or_invalid_values(comfy_page, comfy_server, path):
    report = comfy_page.load_workflow(path)
    comfy_page.screenshot(f"{path.stem}-on-load", SCREENSHOTS_DIR)
    comfy_page.close_dialogs()
    comfy_page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    comfy_page.screenshot(path.stem, SCREENSHOTS_DIR)

    unavailable = _missing_here(path, comfy_server)
    if unavailable:   # this ComfyUI predates the model: the frontend names exactly its core nodes, no IaD node
        assert report.missing_node_types and set(report.missing_node_types) <= unavailable, report.missing_node_types
        return
    assert report.missing_node_types == [], f"{path.name}: node types missing in the frontend: {report.missing_node_types}"
    assert report.warnings == [], f"{path.name}: the frontend warned on load (schema/links): {report.warnings}"
    assert report.page_errors == [], f"{path.name}: uncaught errors in the page while loading: {report.page_errors}"
    assert len(report.nodes) == len(load_json(path)["nodes"])

    # Every model file a loader names must be one the frontend can offer to download (name, folder,
    # URL from properties.models) and one the Read-me note names; everything else must be valid.
    notes = "\n".join(str(v) for n in load_json(path)["nodes"] if n["type"] in ("Note", "MarkdownNote")
                      for v in n.get("widgets_values", []))
    missing_models = {m["name"]: m for m in report.missing_models}
    model_values = {w["value"] for n in report.nodes for w in n["widgets"]
                    if w["name"] in MODEL_FILE_WIDGETS and w["type"] == "combo"}
    # Frontends from 1.45 on flag a loader whose file this server lacks (the user's cue to download
    # it); nothing else may be flagged. test_workflows_open_clean_once_the_model_files_are_there
    # shows that with the files in place no node is flagged at all.
    unexplained = report.unexplained_error_nodes(set(missing_models) | model_values)
    assert unexplained == [], f"{path.name}: nodes flagged by the frontend: {unexplained}"
    invalid = report.invalid_widgets(allowed_missing_files=set(missing_models) | model_values)
    assert invalid == [], f"{path.name}: invalid widget values: {invalid}"
    for value in model_values:
        assert value in notes, f"{path.name}: the notes never say where to get {value}"
    for name, meta in missing_models.items():
        assert not meta["directory_invalid"], f"{path.name}: {name} points at an unknown model folder {meta['directory']}"
        assert name in notes, f"{path.name}: the notes never mention {name}"
        assert re.search(rf"models/{re.escape(meta['directory'])}/", notes), f"{path.name}: notes never name models/{meta['directory']}/"

    # The Run button's conversion keeps every executable node (notes are virtual) and the server
    # accepts its structure: only the absent model files may be reported.
    converted = comfy_page.graph_to_prompt()
    # Notes, reroutes and primitives (official templates use them) live in the frontend only; the
    # nodes of a subgraph run where it stands.
    executable = [n for n in _active_flat_nodes(load_json(path)) if n["type"] not in VIRTUAL_NODES]
    from collections import Counter

    sent, kept = Counter(v["class_type"] for v in converted["output"].values()), Counter(n["type"] for n in executable)
    assert sent == kept, f"{path.name}: sent but not in the graph {sent - kept}, in the graph but not sent {kept - sent}"
    status, body = comfy_server.request("POST", "/prompt", {"prompt": converted["output"], "client_id": "iad-validate"})
    answer = json.loads(body)
    errors = answer.get("node_errors", {})
    assert errors, f"{path.name}: the server accepted model files this test server does not have: {answer}"
    for node_id, entry in errors.items():
        for err in entry["errors"]:
            bad = err.get("extra_info", {}).get("received_value")
            # Core's loaders: "Value not in list". The pack's loaders say it themselves, naming the
            # file and the folder to put it in.
            ours = (entry["class_type"].startswith("IaD") and err["type"] == "custom_validation_failed"
                    and any(str(v) in err["details"] for v in model_values) and "models" in err["details"])
            assert (err["type"] == "value_not_in_list" and bad in model_values) or ours, (
                f"{path.name}: node {node_id} ({entry['class_type']}) rejected for something other than an absent model file: {err}")
    if status == 200:
        # ComfyUI queues the outputs that do not depend on a failing node (here the face
        # preview): they must run cleanly on the photo and face pack the user provides.
        # A node whose file list always offers the official name (IR-SE50 weights) may only fail
        # by naming that absent file.
        result = comfy_server.wait(answer["prompt_id"], timeout=180)
        if not result.ok:
            message = (result.error or {}).get("exception_message", "")
            assert any(name in message for name in model_values), (
                f"{path.name}: the part that needs no video model failed: {result.error}")
    assert comfy_server.is_alive()


@pytest.fixture(scope="module")
def server_with_every_file(tmp_path_factory, tiny_models, browser):
    """A server that has every file the shipped workflows name (stand-ins under the real names, as a
    user has them after following the Read-me notes), and a page on it."""
    from conftest import make_server
    from harness.workflow_fixtures import install_every_named_file

    server = make_server(tmp_path_factory.mktemp("every-file"), tiny_models).start()
    install_every_named_file(server, [load_json(path) for path in WORKFLOWS], tiny_models[next(iter(tiny_models))])
    page = browser.new_page(server.url)   # after the files: the UI reads the lists when it opens
    try:
        yield server, page
    finally:
        page.close()
        server.stop()


def test_workflows_open_clean_once_the_model_files_are_there(server_with_every_file):
    """What a user sees after downloading what the notes list: on every frontend, no node flagged,
    no missing model, no missing node, no warning."""
    server, page = server_with_every_file
    for path in WORKFLOWS:
        report = page.load_workflow(path)
        if _missing_here(path, server):
            assert set(report.missing_node_types) <= _missing_here(path, server) and report.missing_models == [], path.name
            page.close_dialogs()
            continue
        assert report.missing_node_types == [] and report.missing_models == [], (path.name, report.missing_models)
        assert report.error_nodes == [], f"{path.name}: nodes flagged by the frontend: {report.error_nodes}"
        assert report.warnings == [] and report.page_errors == [], (path.name, report.warnings, report.page_errors)
        page.close_dialogs()


def test_thumbnails_are_drawn_with_every_file_there_and_no_node_flagged(server_with_every_file, tmp_path):
    """The template browser's picture of each workflow (``<name>.jpg``): scripts/build_workflows.py draws
    it on a server that has every file the workflow names, and refuses to draw one in which the
    frontend flags a node (a missing file outlines its loader in red from frontend 1.45 on). Each
    shipped picture says so in its JPEG comment, drawn by a frontend that flags missing files; and
    drawing it again here, the same way, finds no flagged node."""
    import importlib.util

    from PIL import Image

    from harness.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("build_workflows", REPO_ROOT / "scripts" / "build_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    server, page = server_with_every_file
    for path in WORKFLOWS:
        with Image.open(path.with_suffix(".jpg")) as shipped:
            mark = shipped.info.get("comment", b"").decode()
        assert mark.startswith(builder.THUMBNAIL_MARK) and "0 nodes flagged" in mark, (path.name, mark)
        drawn_by = re.search(r"frontend (\d+\.\d+)", mark)
        assert drawn_by and _version(drawn_by.group(1)) >= (1, 45), f"{path.name}: drawn by a frontend that flags nothing"
        if _missing_here(path, server):
            continue   # this ComfyUI lacks the model's own nodes: nothing to draw here
        redrawn = builder.save_thumbnail(page, path, tmp_path / f"{path.stem}.jpg")   # raises on a flagged node
        with Image.open(redrawn) as image:
            assert image.info["comment"].decode().endswith("0 nodes flagged") and max(image.size) == 640
        page.close_dialogs()


def test_a_missing_node_type_is_detected_and_shown_to_the_user(comfy_page, tmp_path):
    """Proves the check above can fail: the same workflow with one node type renamed to one
    nobody registers must be reported missing by the frontend and shown in its dialog."""
    source = load_json(WORKFLOWS[0])
    broken = next(n for n in source["nodes"] if n["type"].startswith("IaD"))
    original_type = broken["type"]
    broken["type"] = "IaDDeliberatelyMissingNode"
    path = tmp_path / "deliberately_broken.json"
    path.write_text(json.dumps(source))

    report = comfy_page.load_workflow(path)
    comfy_page.screenshot("deliberately_missing_node", SCREENSHOTS_DIR)
    assert report.missing_node_types == ["IaDDeliberatelyMissingNode"], (original_type, report.missing_node_types)
    assert report.missing_nodes_notice, "the user was not told that a node type is missing"
    assert [str(n["id"]) for n in report.error_nodes if not n["registered"]] == [str(broken["id"])]


def _essentials(graph: dict) -> dict:
    """What a workflow means, without layout (positions, sizes) or ids that change on every build,
    and without what differs between the supported ComfyUI versions' schemas but changes nothing:
    output slots nobody connects (v0.28.2's PreviewImage, PreviewAny and SaveAnimatedWEBP have an
    output that 0.3.75's lack) and the type a link records (PreviewAny's any-type input records '*'
    on 0.3.75 and the source's type on v0.28.2); a link's endpoints are what it means."""
    nodes = {}
    for n in graph["nodes"]:
        nodes[n["id"]] = {
            "type": n["type"], "title": n.get("title"), "mode": n.get("mode", 0),
            "widgets_values": n.get("widgets_values"), "models": n.get("properties", {}).get("models"),
            "inputs": [(i["name"], i.get("link")) for i in n.get("inputs", [])],
            "outputs": [(o["name"], sorted(o["links"])) for o in n.get("outputs", []) if o.get("links")],
        }
    links = sorted(tuple(link[:5]) for link in graph["links"])
    return {"nodes": nodes, "links": links, "groups": sorted(g["title"] for g in graph.get("groups", []))}


def _installed_template(name: str):
    import sys

    from harness.paths import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import workflow_specs

    try:
        return workflow_specs.official_template(name)
    except FileNotFoundError:
        return None


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _widget_names(node_info: dict) -> list[str]:
    """A node type's widgets_values layout from /object_info: its widget inputs in order, each seed
    that has a control_after_generate followed by that control's slot."""
    names = []
    for section in ("required", "optional"):
        for name, spec in node_info.get("input", {}).get(section, {}).items():
            kind = spec[0] if isinstance(spec, (list, tuple)) else spec
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                names.append(name)
                options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
                if options.get("control_after_generate"):
                    names.append("control_after_generate")
    return names


def _subgraph_widget_values(graph: dict, node: dict, object_info: dict):
    """The values a subgraph instance's own widgets run with, by name, however the frontend wrote
    them: 1.45 promotes inner widgets (properties.proxyWidgets, their values on the inner nodes,
    the instance's widgets_values empty); 1.58 turns the template's older promotions into widget
    inputs of the instance with their values on it (widgets_values, widgets_values_named). None if
    the node is no subgraph instance or a promoted value cannot be found."""
    from harness.workflow_fixtures import graph_parts

    definition = next((part for part in graph_parts(graph)[1:] if part.get("id") == node["type"]), None)
    if definition is None:
        return None
    if node.get("widgets_values_named"):
        return sorted(node["widgets_values_named"].items())
    proxies = node.get("properties", {}).get("proxyWidgets") or []
    inner = {str(n["id"]): n for n in definition["nodes"]}
    out = []
    for inner_id, name in proxies:
        target = inner.get(str(inner_id))
        if target is None or target["type"] not in object_info:
            return None
        names = _widget_names(object_info[target["type"]])
        own = target.get("widgets_values") or []
        if name not in names or names.index(name) >= len(own):
            return None
        out.append((name, own[names.index(name)]))
    return sorted(out) if out else None


def _content(graph: dict, object_info: dict) -> dict:
    """A graph's content without any id: its nodes (type, title, mode, widget values, model
    entries) and its links between them (by node content and slot name), as multisets. A subgraph
    instance's widgets count by name and value, as each frontend writes them (_subgraph_widget_values)."""
    from collections import Counter

    def sig(n):
        values = _subgraph_widget_values(graph, n, object_info) or list(n.get("widgets_values") or [])   # null or []: frontends differ
        while values and values[-1] is None:   # UI-only widgets (upload button, audio player): 1.45 writes a null, 1.58 not
            values.pop()
        if n["type"] == "CustomCombo" and len(values) > 1:   # its index follows the choice: 1.58 saves -1 and
            values[1] = None                                   # queues the right index (checked: 0 and 3 in WanDancer's)
        return json.dumps([n["type"], n.get("title"), n.get("mode", 0), values,
                           n.get("properties", {}).get("models")], sort_keys=True)

    nodes = {n["id"]: n for n in graph["nodes"]}
    links = Counter()
    for link_id, src, src_slot, dst, dst_slot, _type in graph["links"]:
        links[(sig(nodes[src]), nodes[src]["outputs"][src_slot]["name"], sig(nodes[dst]), nodes[dst]["inputs"][dst_slot]["name"])] += 1
    return {"nodes": Counter(sig(n) for n in graph["nodes"]), "links": links,
            "groups": sorted(g["title"] for g in graph.get("groups", []))}


def test_shipped_workflows_match_their_specs_built_against_the_current_nodes(comfy_page, comfy_server):
    """A node that gains, loses or reorders an input shifts the positional widgets_values of every
    saved workflow - sometimes into values that are still valid but mean something else. Rebuilding
    each workflow from scripts/workflow_specs/ (widgets set by name) in the frontend must give
    exactly the shipped file; if not, run `python scripts/build_workflows.py`. A workflow built from
    an official template is rebuilt with the frontend that built it, and in any other frontend it
    must load and save with the same content."""
    import importlib.util

    from harness.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("build_workflows", REPO_ROOT / "scripts" / "build_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    specs = builder.workflow_specs.all_workflows()
    assert sorted(s.name for s in specs) == sorted(p.stem for p in WORKFLOWS)
    rebuilt = []
    for wf in specs:
        shipped = load_json(next(p for p in WORKFLOWS if p.stem == wf.name))
        if isinstance(wf, builder.workflow_specs.TemplateWorkflow):
            # Built from an official template: rebuilt with the ComfyUI and frontend it was built with
            # (the node schemas decide the widget values; the frontend how the template's older subgraph
            # promotions and dynamic inputs unpack: 1.58 drops InfiniteTalk's mode.* links when it
            # unpacks the template, though it keeps them in the shipped file) and that very template
            # at hand (test_template_workflows_are_the_official_template_plus_iad checks the rest
            # everywhere). With another frontend, the shipped file must survive loading and saving
            # unchanged in content. Unpacking numbers nodes and links its own way: compared by content.
            from harness.paths import comfyui_version, frontend_version

            provenance = shipped["extra"]["iad_template"]
            template = _installed_template(wf.template)
            if (template is None or template.sha256 != provenance["sha256"]
                    or provenance.get("built_with") != f"ComfyUI {comfyui_version().lstrip('v')}"):
                continue
            object_info = comfy_server.object_info()
            if provenance.get("frontend") == frontend_version():
                fresh = builder.build_graph(comfy_page, wf)
                assert _content(fresh, object_info) == _content(shipped, object_info), (
                    f"workflows/{wf.name}.json is stale: run `python scripts/build_workflows.py`")
            else:
                comfy_page.load_workflow(next(p for p in WORKFLOWS if p.stem == wf.name))
                saved = comfy_page.evaluate("() => JSON.parse(JSON.stringify(app.graph.serialize()))")
                assert _content(saved, object_info) == _content(shipped, object_info), (
                    f"workflows/{wf.name}.json changes when frontend {frontend_version()} loads and saves it")
        else:
            fresh = builder.build_graph(comfy_page, wf)
            assert _essentials(fresh) == _essentials(shipped), (
                f"workflows/{wf.name}.json is stale against the current node schemas: run `python scripts/build_workflows.py`")
        rebuilt.append(wf.name)
    assert rebuilt, "no workflow was rebuilt"


def test_a_workflow_the_frontend_finds_malformed_is_reported(comfy_page, tmp_path):
    """Proves the warning check can fail where the frontend validates workflows: a node whose
    position is not a position breaks the frontend's workflow schema. 1.32 reports it in an alert;
    1.45 does once workflow validation is on (the harness turns it on, as the setting allows); 1.58
    no longer validates on load, and there the shipped files are checked against the same rule
    here (every node has a numeric [x, y] position, every model entry a name, folder and URL)."""
    source = load_json(WORKFLOWS[0])
    source["nodes"][1]["pos"] = "not a position"
    path = tmp_path / "malformed.json"
    path.write_text(json.dumps(source))
    report = comfy_page.load_workflow(path)
    alerted = any("schema" in w for w in report.warnings)
    # Frontends up to 1.45 validate on load (the harness turns 1.45's validation on, as a user
    # can); 1.58 stays silent by design, and the static check below stands in for it.
    validates = _version(frontend_version())[:2] <= (1, 45)
    assert alerted == validates, (frontend_version(), report.warnings)
    assert _static_schema_problems(source), "the static check misses the broken position"
    for shipped in WORKFLOWS:
        assert _static_schema_problems(load_json(shipped)) == [], shipped.name


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _static_schema_problems(graph: dict) -> list[str]:
    problems = []
    for node in graph["nodes"]:
        pos = node.get("pos")
        if not (isinstance(pos, (list, tuple)) and len(pos) == 2 and all(isinstance(v, (int, float)) for v in pos)):
            problems.append(f"node {node.get('id')}: pos {pos!r}")
        for model in node.get("properties", {}).get("models", []) or []:
            if not all(model.get(k) for k in ("name", "url", "directory")):
                problems.append(f"node {node.get('id')}: model entry {model}")
    for link in graph.get("links", []):
        if not (isinstance(link, list) and len(link) == 6):
            problems.append(f"link {link!r}")
    return problems


TEMPLATE_WORKFLOWS = [p for p in WORKFLOWS if "iad_template" in load_json(p).get("extra", {})]


def _links(graph: dict) -> list[tuple]:
    """(id, origin node, origin slot, target node, target slot) of a graph's or subgraph's links
    (lists at the top level, objects inside subgraph definitions)."""
    out = []
    for link in graph.get("links", []):
        if isinstance(link, dict):
            out.append((link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"]))
        else:
            out.append(tuple(link[:5]))
    return out


def _active_flat_nodes(graph: dict) -> list[dict]:
    """The nodes the Run button sends: active ones, active subgraph instances expanded. Frontends
    before 1.45 (1.32, ComfyUI 0.3.75's) expand a bypassed subgraph instance too and send its
    inner nodes by their own modes (the S2V template's bypassed extension chunks)."""
    definitions = {s["id"]: s for s in graph.get("definitions", {}).get("subgraphs", [])}
    old_frontend = _version(frontend_version())[:2] < (1, 45)

    def expand(nodes):
        for node in nodes:
            if node["type"] in definitions and (node.get("mode", 0) == 0 or old_frontend):
                yield from expand(definitions[node["type"]]["nodes"])
            elif node.get("mode", 0) == 0 and node["type"] not in definitions:
                yield node
    return list(expand(graph["nodes"]))


def _flat_nodes(graph: dict) -> list[dict]:
    """The nodes a graph runs, subgraph instances expanded into their definitions' nodes (recursively)."""
    definitions = {s["id"]: s for s in graph.get("definitions", {}).get("subgraphs", [])}

    def expand(nodes):
        for node in nodes:
            if node["type"] in definitions:
                yield from expand(definitions[node["type"]]["nodes"])
            else:
                yield node
    return list(expand(graph["nodes"]))


def _widgets_not_holding(node: dict, widgets: dict, object_info: dict) -> list[str]:
    """The widgets of ``widgets`` whose value ``node`` (UI format) does not have, by name (positions
    from this ComfyUI's schema of the node). On a ComfyUI older than the workflows' own (0.3.75), a
    widget its node does not have yet (WanContextWindowsManual's freenoise) is not checked: the
    workflows' own ComfyUI (v0.28) checks it."""
    from harness.paths import comfyui_at_least

    names = _widget_names(object_info[node["type"]])
    values = node.get("widgets_values") or []
    return [f"{name}={value!r}" for name, value in widgets.items()
            if (name not in names and comfyui_at_least("0.28"))
            or (name in names and (names.index(name) >= len(values) or values[names.index(name)] != value))]


@pytest.mark.parametrize("path", TEMPLATE_WORKFLOWS, ids=_ids(TEMPLATE_WORKFLOWS))
def test_template_workflows_are_the_official_template_plus_iad(comfy_server, path):
    """A workflow built from ComfyUI's official template: an IaD Apply sits between each active loader
    of the template's model and everything that loader's model fed (all sharing one adapter and one
    identity), and nothing else of the template changed. Where the spec declares a chain of core model
    patches after IaD Apply (the long videos' context-windows node), each IaD Apply feeds exactly its
    own copy of that chain, with the declared widget values, and the chain's end feeds what the loader
    fed. Where the template is at hand (the package this ComfyUI pins, or the repository's copy of one
    an older pin shipped) every template node (subgraphs included) is in the workflow with its mode and
    widget values - those the spec sets (a long video's length) with the values it sets - except the
    nodes of custom node packs the spec leaves out, and the IaD Apply nodes (through the chain) feed
    exactly what the loaders fed."""
    import sys
    from collections import Counter

    from harness.paths import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import workflow_specs

    spec = next(w for w in workflow_specs.all_workflows() if w.name == path.stem)
    shipped = load_json(path)
    provenance = shipped["extra"]["iad_template"]
    assert provenance["file"] == spec.template and provenance["package"].startswith("comfyui-workflow-templates")
    object_info = comfy_server.object_info()
    nodes = {n["id"]: n for n in shipped["nodes"]}
    links = {link[0]: link for link in _links(shipped)}
    applies = [n for n in shipped["nodes"] if n["type"] == "IaDApply"]
    fed, sources, chained = Counter(), set(), []
    for apply in applies:
        inputs = {i["name"]: links[i["link"]] for i in apply["inputs"] if i.get("link") is not None}
        loader = nodes[inputs["model"][1]]
        assert loader["type"] == spec.anchor["type"] and loader.get("mode", 0) == 0
        assert set(spec.anchor_values()) & set(loader["widgets_values"]), loader["widgets_values"]
        assert loader["outputs"][inputs["model"][2]]["links"] == [inputs["model"][0]], "the loader feeds more than IaD Apply"
        sources.add((inputs["iad_model"][1], inputs["identity"][1]))
        tail = apply
        for proto in spec.chain_nodes():   # IaD Apply -> the chain, in order, each node feeding only the next
            out = tail["outputs"][0].get("links") or []
            assert len(out) == 1, f"{path.name}: {tail['type']} {tail['id']} must feed only {proto.type}"
            node = nodes[links[out[0]][3]]
            assert node["type"] == proto.type and node.get("mode", 0) == 0 and all(node is not c for c in chained), node
            assert node["inputs"][links[out[0]][4]]["name"] == "model"
            if node["type"] in object_info:   # else a core node this ComfyUI lacks (LTXVContextWindows on 0.3.75)
                assert not _widgets_not_holding(node, proto.widgets, object_info), (
                    f"{path.name}: {node['type']} {node['id']} lacks {_widgets_not_holding(node, proto.widgets, object_info)}")
            chained.append(node)
            tail = node
        fed += Counter(nodes[links[i][3]]["type"] for i in tail["outputs"][0]["links"])
    assert applies and fed, "no IaD Apply, or it feeds nothing"
    assert len(sources) == 1, "the IaD Apply nodes must share one adapter and one identity"
    assert len(chained) == len(applies) * len(spec.chain)

    template = _installed_template(spec.template)
    if template is None or template.sha256 != provenance["sha256"]:
        return   # this ComfyUI pins other templates: the rewiring above is what can be checked here
    left_out = set(spec.remove)
    unused = _flat_nodes(shipped)
    settings_used = 0
    for node in _flat_nodes(template.graph):
        if node["id"] in left_out and node in template.graph["nodes"]:
            continue
        values = node.get("widgets_values") or []
        if all(v is None for v in values):
            values = []   # display-only widgets (PreviewAny's text): frontends serialize them as nothing
        setting = spec.setting(node["type"], node.get("title"))
        if setting:   # a template widget the spec gives another value: that value, the others unchanged
            names, values = _widget_names(object_info[node["type"]]), list(values)
            for name, value in setting.items():
                assert values[names.index(name)] != value, f"{path.name}: the template already has {name} {value}"
                values[names.index(name)] = value
            settings_used += 1
        match = next((n for n in unused if n["type"] == node["type"] and n.get("mode", 0) == node.get("mode", 0)
                      and (n.get("widgets_values") or [])[:len(values)] == values), None)
        assert match is not None, f"{path.name}: template node {node['id']} ({node['type']}, {values}) is missing or changed"
        unused.remove(match)
    assert settings_used == len(spec.settings), f"{path.name}: a template node the spec sets is not in the template once"
    # the IaD part, and the primitives that carry a subgraph's promoted value where unpacking dropped its link;
    # the chain's nodes only where checked above (after IaD Apply)
    added = {"IaDApply", "IaDIdentity", "IaDModelLoader", "IaDFaceEmbed", "IaDFaceAnalysisLoader", "IaDIRSE50FaceEmbedder",
             "LoadImage", "PreviewImage", "PreviewAny", "Note", "PrimitiveInt", "PrimitiveFloat", "PrimitiveString",
             "PrimitiveBoolean"} | {n.type for n in spec.nodes if n.key not in spec.chain}
    extra = [n for n in unused if all(n is not c for c in chained)]
    assert {n["type"] for n in extra} <= added, [n["type"] for n in extra]
    # What the loaders' MODEL fed in the template is what the IaD Apply nodes feed now.
    template_fed = Counter()
    for part in [template.graph] + list(template.graph.get("definitions", {}).get("subgraphs", [])):
        part_nodes = {n["id"]: n for n in part["nodes"]}
        for anchor in (n for n in part["nodes"] if n["type"] == spec.anchor["type"] and n.get("mode", 0) == 0
                       and set(spec.anchor_values()) & set(n.get("widgets_values") or [])):
            out = next(i for i, o in enumerate(anchor["outputs"]) if o["name"] == spec.anchor["output"])
            template_fed += Counter(part_nodes[t]["type"] for _, o, slot, t, _ in _links(part) if o == anchor["id"] and slot == out)
    assert fed == template_fed, (fed, template_fed)
