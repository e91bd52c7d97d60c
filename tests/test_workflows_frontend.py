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
from harness.paths import PACK_DIR_NAME

pytestmark = [pytest.mark.server, pytest.mark.browser]

WORKFLOWS = shipped_workflows()
# Inputs of core loaders that name a model file; their value must be documented for download.
MODEL_FILE_WIDGETS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "lora_name",
                      "model_name", "adapter_name", "iad_model", "model_pack", "pack", "weights"}


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
    """Workflow ▸ Browse Templates: the pack has its own entry listing our workflows, and
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

    assert report.missing_node_types == [], f"{path.name}: node types missing in the frontend: {report.missing_node_types}"
    assert report.warnings == [], f"{path.name}: the frontend warned on load (schema/links): {report.warnings}"
    assert report.page_errors == [], f"{path.name}: uncaught errors in the page while loading: {report.page_errors}"
    assert report.error_nodes == [], f"{path.name}: nodes flagged by the frontend: {report.error_nodes}"
    assert len(report.nodes) == len(load_json(path)["nodes"])

    # Every model file a loader names must be one the frontend can offer to download (name, folder,
    # URL from properties.models) and one the Read-me note names; everything else must be valid.
    notes = "\n".join(str(v) for n in load_json(path)["nodes"] if n["type"] in ("Note", "MarkdownNote")
                      for v in n.get("widgets_values", []))
    missing_models = {m["name"]: m for m in report.missing_models}
    model_values = {w["value"] for n in report.nodes for w in n["widgets"]
                    if w["name"] in MODEL_FILE_WIDGETS and w["type"] == "combo"}
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
    executable = [n for n in load_json(path)["nodes"] if n["type"] not in ("Note", "MarkdownNote") and n.get("mode", 0) == 0]
    assert sorted(v["class_type"] for v in converted["output"].values()) == sorted(n["type"] for n in executable)
    status, body = comfy_server.request("POST", "/prompt", {"prompt": converted["output"], "client_id": "iad-validate"})
    answer = json.loads(body)
    errors = answer.get("node_errors", {})
    assert errors, f"{path.name}: the server accepted model files this test server does not have: {answer}"
    for node_id, entry in errors.items():
        for err in entry["errors"]:
            bad = err.get("extra_info", {}).get("received_value")
            assert err["type"] == "value_not_in_list" and bad in model_values, (
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
    assert "IaDDeliberatelyMissingNode" in report.dialog_missing_types
    assert [n["id"] for n in report.error_nodes] == [broken["id"]]


def _essentials(graph: dict) -> dict:
    """What a workflow means, without layout (positions, sizes) or ids that change on every build."""
    nodes = {}
    for n in graph["nodes"]:
        nodes[n["id"]] = {
            "type": n["type"], "title": n.get("title"), "mode": n.get("mode", 0),
            "widgets_values": n.get("widgets_values"), "models": n.get("properties", {}).get("models"),
            "inputs": [(i["name"], i.get("link")) for i in n.get("inputs", [])],
            "outputs": [(o["name"], sorted(o.get("links") or [])) for o in n.get("outputs", [])],
        }
    links = sorted(tuple(link[:6]) for link in graph["links"])
    return {"nodes": nodes, "links": links, "groups": sorted(g["title"] for g in graph.get("groups", []))}


def test_shipped_workflows_match_their_specs_built_against_the_current_nodes(comfy_page):
    """A node that gains, loses or reorders an input shifts the positional widgets_values of every
    saved workflow - sometimes into values that are still valid but mean something else. Rebuilding
    each workflow from scripts/workflow_specs.py (widgets set by name) in the frontend must give
    exactly the shipped file; if not, run `python scripts/build_workflows.py`."""
    import importlib.util

    from harness.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("build_workflows", REPO_ROOT / "scripts" / "build_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    specs = builder.workflow_specs.all_workflows()
    assert sorted(s.name for s in specs) == sorted(p.stem for p in WORKFLOWS)
    for wf in specs:
        fresh = builder.build_graph(comfy_page, wf)
        shipped = load_json(next(p for p in WORKFLOWS if p.stem == wf.name))
        assert _essentials(fresh) == _essentials(shipped), (
            f"workflows/{wf.name}.json is stale against the current node schemas: run `python scripts/build_workflows.py`")


def test_a_workflow_the_frontend_finds_malformed_is_reported(comfy_page, tmp_path):
    """Proves the warning check can fail: a model entry without its download URL violates the
    frontend's workflow schema, which it reports in an alert."""
    source = load_json(WORKFLOWS[0])
    loader = next(n for n in source["nodes"] if n["type"] == "IaDModelLoader")
    loader.setdefault("properties", {})["models"] = [{"name": loader["widgets_values"][0], "directory": "iad"}]
    path = tmp_path / "malformed.json"
    path.write_text(json.dumps(source))
    report = comfy_page.load_workflow(path)
    assert any("schema" in w for w in report.warnings), report.warnings
