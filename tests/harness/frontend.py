"""The real ComfyUI frontend (``comfyui-frontend-package``) in headless Chromium, driven by Playwright.

Used by the workflow tests to do what a user does: open the UI served by a real ComfyUI server,
load a workflow file through Workflow > Open (the hidden ``#comfy-file-input``), see what the
frontend reports (missing node types, missing model files, invalid widget values), run it with
Ctrl+Enter (the Run shortcut) and read back the ``POST /prompt`` the frontend made.

Rules that keep it robust on a 2-core machine with no internet:
- the system Chromium (``/usr/bin/chromium``) is used, never a downloaded browser;
- every request that is not to loopback is aborted (the UI calls out for release notes, registry
  look-ups, fonts) and recorded;
- no fixed sleeps: every wait is a condition with a timeout;
- console messages, page errors and blocked requests are kept and can be attached to a failing
  test (``log_text()``), and ``screenshot()`` writes PNGs under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .paths import ARTIFACTS_DIR

CHROMIUM = Path(os.environ.get("IAD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

# The UI is usable once the app object, the node definitions from /object_info and the canvas
# exist and the start-up spinner is gone (checked on 1.32.9).
_UI_READY_JS = """() => !!(window.app && window.app.graph && window.LiteGraph
    && window.app.extensionManager && window.app.extensionManager.spinner === false
    && Object.keys(window.LiteGraph.registered_node_types).length > 100
    && document.querySelector('#graph-canvas'))"""

# Registered before any workflow is loaded: afterConfigureGraph receives the node types the
# frontend could not find (strings, or {type, hint} inside subgraphs); every frontend from 1.32 to
# 1.58 calls it. Where the frontend has app.showMissingModelsError (1.32; 1.45 removed it), it is
# wrapped to record which model files the frontend found missing; elsewhere the same facts come
# from the loaded nodes' properties.models (what every frontend builds its missing-models list from).
_INSTALL_PROBES_JS = """() => {
    if (window.__iad) return;
    window.__iad = {missing: [], missingModels: [], loads: 0};
    window.app.registerExtension({
        name: 'iad.test.load-probe',
        async afterConfigureGraph(missing) {
            for (const m of (missing || [])) window.__iad.missing.push(typeof m === 'string' ? m : m.type);
            window.__iad.loads += 1;
        },
    });
    if (typeof window.app.showMissingModelsError === 'function') {
        const original = window.app.showMissingModelsError.bind(window.app);
        window.app.showMissingModelsError = (models, paths) => {
            for (const m of (models || [])) window.__iad.missingModels.push(
                {name: m.name, url: m.url || null, directory: m.directory || null, directory_invalid: !!m.directory_invalid});
            return original(models, paths);
        };
        window.__iad.modelsDialog = true;
    }
}"""

# The missing-model facts every frontend works from: each loaded node's properties.models entries
# whose file is not among the node's current combo options (i.e. absent on this server).
_MODELS_FROM_GRAPH_JS = """() => {
    const out = [];
    for (const node of window.app.graph.nodes) {
        const values = new Set();
        for (const w of (node.widgets || [])) {
            if (w.type !== 'combo') continue;
            const o = w.options || {};
            const opts = typeof o.values === 'function' ? o.values(w, node) : o.values;
            if (Array.isArray(opts) && !opts.includes(w.value)) values.add(w.value);
        }
        for (const m of ((node.properties || {}).models || []))
            if (values.has(m.name)) out.push({name: m.name, url: m.url || null, directory: m.directory || null, directory_invalid: false});
    }
    return out;
}"""

# What a user sees about missing node types, on any frontend: 1.32's dialog lists each type
# (.comfy-missing-nodes span), 1.45 shows an errors panel ("Some nodes are missing ..."), 1.58 a
# "Missing node: <type>" card, or "N issues found" (with "View details") when a workflow has other
# problems too. Returns the visible text that tells it, or null while none shows.
_MISSING_NODES_NOTICE_JS = r"""(types) => {
    const dialog = document.querySelector('.comfy-missing-nodes');
    if (dialog && types.every((t) => dialog.innerText.includes(t))) return dialog.innerText;
    const text = document.body.innerText || '';
    const lines = text.split('\n').filter((l) => types.some((t) => l.includes(t)) || /nodes? (are|is) missing|missing node|\d+ issues? found/i.test(l));
    return lines.length ? lines.join('\n') : null;
}"""

# What the loaded graph looks like to the frontend: per node its type, whether the frontend
# flagged it (has_errors: unknown type), and every widget with its value and, for combos, the
# allowed values; number widgets carry their min/max.
_GRAPH_REPORT_JS = """() => {
    const nodes = [];
    for (const node of window.app.graph.nodes) {
        const widgets = [];
        for (const w of (node.widgets || [])) {
            const entry = {name: w.name, type: w.type, value: w.value};
            const o = w.options || {};
            if (w.type === 'combo') {
                const values = typeof o.values === 'function' ? o.values(w, node) : o.values;
                entry.options = Array.isArray(values) ? values : null;
            }
            if (w.type === 'number' || w.type === 'slider') { entry.min = o.min; entry.max = o.max; }
            widgets.push(entry);
        }
        nodes.push({id: node.id, type: node.type, title: node.title, has_errors: !!node.has_errors,
                    registered: node.type in window.LiteGraph.registered_node_types, widgets});
    }
    return nodes;
}"""


class FrontendError(AssertionError):
    """The frontend did not reach a state in time; the message carries the browser log."""


@dataclass
class InvalidWidget:
    node_id: int
    node_type: str
    widget: str
    value: object
    reason: str


@dataclass
class LoadReport:
    """What the frontend reported after loading one workflow file."""

    workflow: Path
    missing_node_types: list[str]
    missing_models: list[dict]
    nodes: list[dict]
    missing_nodes_notice: str = ""  # what the frontend shows the user about missing node types
    warnings: list[str] = field(default_factory=list)  # warning/error toasts (schema, links)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions while loading

    @property
    def node_types(self) -> list[str]:
        return [n["type"] for n in self.nodes]

    @property
    def error_nodes(self) -> list[dict]:
        return [n for n in self.nodes if n["has_errors"] or not n["registered"]]

    def unexplained_error_nodes(self, absent_files: set[str]) -> list[dict]:
        """Flagged nodes that are not explained by a file this server lacks: frontends from 1.45 on
        flag a loader whose model file (or LoadImage's photo) is not on the server, which is the
        user's cue to download it; any other flag is a real problem."""
        def explained(node):
            return node["registered"] and any(w["type"] == "combo" and w["value"] in absent_files
                                              and w["value"] not in (w.get("options") or []) for w in node["widgets"])
        return [n for n in self.error_nodes if not explained(n)]

    def invalid_widgets(self, allowed_missing_files: set[str] = frozenset()) -> list[InvalidWidget]:
        """Combo values that are not among the server's choices and numbers outside their range.
        A model-file combo whose value is one of ``allowed_missing_files`` (files the user is
        told to download, absent on the test server) is not counted."""
        problems = []
        for node in self.nodes:
            for w in node["widgets"]:
                value = w["value"]
                if w["type"] == "combo" and w.get("options") is not None:
                    if value not in w["options"] and value not in allowed_missing_files:
                        problems.append(InvalidWidget(node["id"], node["type"], w["name"], value,
                                                      f"not one of {w['options'][:12]}"))
                elif w["type"] in ("number", "slider") and isinstance(value, (int, float)):
                    lo, hi = w.get("min"), w.get("max")
                    if (lo is not None and value < lo) or (hi is not None and value > hi):
                        problems.append(InvalidWidget(node["id"], node["type"], w["name"], value,
                                                      f"outside [{lo}, {hi}]"))
        return problems


@dataclass
class QueuedPrompt:
    """The ``POST /prompt`` the frontend sent and the server's answer."""

    request: dict
    status: int
    response: dict

    @property
    def prompt(self) -> dict:
        return self.request["prompt"]

    @property
    def prompt_id(self) -> str | None:
        return self.response.get("prompt_id")


def _is_loopback(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("data", "blob", "about"):
        return True
    return (parsed.hostname or "") in LOOPBACK_HOSTS


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120] or "page"


class Browser:
    """One headless Chromium for a test session; ``new_page(url)`` opens the UI in a fresh context."""

    def __init__(self, executable: Path = CHROMIUM):
        if not Path(executable).exists():
            raise FileNotFoundError(
                f"Chromium not found at {executable}: run `bash scripts/setup.sh` (installs Debian's "
                "chromium) or set IAD_CHROMIUM to a Chromium binary. Never `playwright install`."
            )
        self.executable = Path(executable)
        self._playwright = None
        self._browser = None

    def start(self) -> "Browser":
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=str(self.executable), headless=True, args=list(CHROMIUM_ARGS),
        )
        return self

    def stop(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None

    def __enter__(self) -> "Browser":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def new_page(self, server_url: str, timeout: float = 90.0) -> "ComfyPage":
        return ComfyPage(self._browser, server_url, timeout=timeout).open()


class ComfyPage:
    """The ComfyUI frontend in one browser context (its own storage, its own logs)."""

    def __init__(self, browser, server_url: str, timeout: float = 90.0):
        self.server_url = server_url.rstrip("/")
        self.timeout_ms = int(timeout * 1000)
        self.console: list[str] = []
        self.blocked: list[str] = []
        self.context = browser.new_context(viewport={"width": 1600, "height": 1000})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(self.timeout_ms)
        self.page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))
        self.page.on("requestfailed", lambda r: self.console.append(f"[requestfailed] {r.method} {r.url} {r.failure}"))

    def _route(self, route) -> None:
        if _is_loopback(route.request.url):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> "ComfyPage":
        started = time.monotonic()
        self.page.goto(self.server_url + "/", wait_until="domcontentloaded")
        self.wait_for(_UI_READY_JS, "the UI to be ready (app, node definitions, canvas, no spinner)")
        self.page.evaluate(_INSTALL_PROBES_JS)
        # What a careful user turns on, where the frontend has it: the missing-models warning (how
        # the frontend says which files to download) and workflow validation (1.45 has it off by
        # default; with it on, a workflow that breaks the frontend's schema gets a warning).
        self.page.evaluate("""() => {
            for (const id of ['Comfy.Workflow.ShowMissingModelsWarning', 'Comfy.Validation.Workflows'])
                try { window.app.extensionManager.setting.set(id, true); } catch (e) { /* not in this frontend */ }
        }""")
        self.ready_seconds = time.monotonic() - started
        return self

    def close(self) -> None:
        try:
            self.context.close()
        except Exception:  # noqa: BLE001 - the browser may already be gone after a crash
            pass

    def wait_for(self, js: str, what: str, arg=None, timeout: float | None = None):
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            return self.page.wait_for_function(js, arg=arg, timeout=self.timeout_ms if timeout is None else timeout * 1000)
        except PlaywrightTimeout as exc:
            raise FrontendError(f"timed out waiting for {what}\n--- browser log ---\n{self.log_text()}") from exc

    def evaluate(self, js: str, arg=None):
        return self.page.evaluate(js, arg)

    # -- workflows ------------------------------------------------------------------------------
    def load_workflow(self, path: Path) -> LoadReport:
        """Open ``path`` through Workflow > Open (the hidden file input), wait until the frontend
        finished configuring the graph, and report what it found."""
        path = Path(path)
        self.dismiss_toasts()
        console_start = len(self.console)
        before = self.evaluate("() => { window.__iad.missing = []; window.__iad.missingModels = []; return window.__iad.loads; }")
        self.page.set_input_files("#comfy-file-input", str(path))
        self.wait_for("(n) => window.__iad.loads > n", f"the frontend to load {path.name}", arg=before)
        # Newer frontends check model files and flag nodes asynchronously (HEAD requests, which
        # the router answers at once): let that settle before looking.
        self.page.wait_for_load_state("networkidle")
        probe = self.evaluate("() => window.__iad")
        # Schema/link problems are reported as warning/error toasts (validateWorkflow), before
        # the graph is configured; let two frames render them.
        self.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        toasts = self.page.locator(".p-toast-message-warn, .p-toast-message-error").all_inner_texts()
        notice = None
        if probe["missing"]:
            # The user-facing signal, whatever form this frontend gives it.
            notice = self.wait_for(_MISSING_NODES_NOTICE_JS, "the frontend to tell the user about missing nodes",
                                   arg=sorted(set(probe["missing"])), timeout=30).json_value()
        missing_models = probe["missingModels"] if probe.get("modelsDialog") else self.evaluate(_MODELS_FROM_GRAPH_JS)
        return LoadReport(
            workflow=path,
            missing_node_types=sorted(set(probe["missing"])),
            missing_models=missing_models,
            nodes=self.evaluate(_GRAPH_REPORT_JS),
            missing_nodes_notice=notice or "",
            warnings=[" ".join(t.split()) for t in toasts],
            page_errors=[line for line in self.console[console_start:] if line.startswith("[pageerror]")],
        )

    def dismiss_toasts(self) -> None:
        """Close the notifications of an earlier load (alerts stay until closed)."""
        toasts = self.page.locator(".p-toast-message")
        for button in self.page.locator(".p-toast-message .p-toast-close-button").all():
            try:
                button.click(timeout=2000)
            except Exception:  # noqa: BLE001 - it may have closed itself meanwhile
                pass
        if toasts.count():
            self.wait_for("() => document.querySelectorAll('.p-toast-message').length === 0",
                          "earlier notifications to close", timeout=15)

    def close_dialogs(self) -> None:
        """Dismiss the missing-nodes/missing-models dialogs so the canvas gets the keyboard."""
        for _ in range(5):
            if not self.page.locator(".p-dialog-mask").count():
                return
            self.page.keyboard.press("Escape")
            try:
                self.page.wait_for_selector(".p-dialog-mask", state="detached", timeout=5000)
            except Exception:  # noqa: BLE001 - another dialog may be stacked: loop again
                pass

    # -- editing the loaded graph as a user would (for running shipped workflows on tiny models) ---
    def rename_widget_values(self, mapping: dict[str, str]) -> int:
        """Every widget whose value is a key of ``mapping`` gets the mapped value (model file names
        to the tiny test models). Returns how many widgets changed."""
        return self.evaluate("""(mapping) => {
            let changed = 0;
            for (const node of window.app.graph.nodes)
                for (const w of (node.widgets || []))
                    if (typeof w.value === 'string' && w.value in mapping) { w.value = mapping[w.value]; changed += 1; }
            window.app.graph.setDirtyCanvas(true, true);
            return changed;
        }""", mapping)

    def set_widgets(self, node_type: str, values: dict, title_contains: str = "") -> int:
        """Set widgets by name on every node of ``node_type`` (whose title contains
        ``title_contains``), in the graph and its subgraphs. Returns the number of nodes changed."""
        return self.evaluate("""([type, values, titlePart]) => {
            let count = 0;
            // the graph's nodes and those of its subgraphs (a template's sampling may sit in one)
            const graphs = [window.app.graph, ...(window.app.graph.subgraphs?.values?.() ?? [])];
            const nodes = graphs.flatMap((g) => g.nodes);
            for (const node of nodes.filter((n) => n.type === type && (n.title || '').includes(titlePart))) {
                for (const [name, value] of Object.entries(values)) {
                    const w = (node.widgets || []).find((x) => x.name === name);
                    if (!w) throw new Error(`${type} #${node.id} has no widget ${name}`);
                    w.value = value;
                }
                count += 1;
            }
            return count;
        }""", [node_type, values, title_contains])

    def replace_node(self, node_type: str, new_type: str, widgets: dict, outputs: dict[int, int],
                     inputs: dict[str, str] | None = None) -> int:
        """Replace every ``node_type`` node by a new ``new_type`` node with ``widgets``; the consumers
        of old output i are fed from new output ``outputs[i]``; consumers of unmapped outputs are
        left unconnected (mute them); what fed old input ``k`` feeds new input ``inputs[k]``.
        Returns the number of nodes replaced."""
        return self.evaluate("""([type, newType, widgets, outputs, inputs]) => {
            const graph = window.app.graph;
            const old = graph.nodes.filter((n) => n.type === type);
            for (const node of old) {
                const repl = window.LiteGraph.createNode(newType);
                if (!repl) throw new Error(`${newType} is not registered`);
                graph.add(repl);
                repl.pos = [node.pos[0], node.pos[1]];
                for (const [name, value] of Object.entries(widgets)) repl.widgets.find((w) => w.name === name).value = value;
                for (const [from, to] of Object.entries(outputs)) {
                    const targets = (node.outputs[Number(from)].links || []).map((id) => graph.links[id] ?? graph.links.get?.(id))
                        .filter(Boolean).map((l) => [graph.getNodeById(l.target_id), l.target_slot]);
                    for (const [target, slot] of targets) repl.connect(to, target, slot);
                }
                for (const [from, to] of Object.entries(inputs)) {
                    const id = node.inputs.find((i) => i.name === from)?.link;
                    const l = id == null ? null : (graph.links[id] ?? graph.links.get?.(id));
                    if (l) graph.getNodeById(l.origin_id).connect(l.origin_slot, repl, repl.inputs.findIndex((i) => i.name === to));
                }
                graph.remove(node);
            }
            return old.length;
        }""", [node_type, new_type, widgets, {str(k): v for k, v in outputs.items()}, inputs or {}])

    def mute(self, node_types: list[str]) -> int:
        """Set every node of these types to 'never' (mode 2): the Run button leaves them out."""
        return self.evaluate("""(types) => {
            const nodes = window.app.graph.nodes.filter((n) => types.includes(n.type));
            for (const n of nodes) n.mode = 2;
            return nodes.length;
        }""", node_types)

    def add_save_latent(self, source_type: str, output: int = 0, prefix: str = "iad_workflow_test") -> int:
        """Add a SaveLatent fed by output ``output`` of every active ``source_type`` node (the result
        of a graph whose decoder has no tiny stand-in)."""
        return self.evaluate("""([type, output, prefix]) => {
            const sources = window.app.graph.nodes.filter((n) => n.type === type && (n.mode ?? 0) === 0);   // not bypassed ones
            for (const src of sources) {
                const save = window.LiteGraph.createNode('SaveLatent');
                window.app.graph.add(save);
                save.pos = [src.pos[0], src.pos[1] + 400];
                save.widgets.find((w) => w.name === 'filename_prefix').value = prefix;
                src.connect(output, save, 0);
            }
            return sources.length;
        }""", [source_type, output, prefix])

    def replace_text_encoding(self, replacement_type: str = "IaDTestWanConditioning", length: int = 16,
                              extra_widgets: dict | None = None) -> int:
        """Replace every CLIPTextEncode by ``replacement_type`` (same text, same consumers) and drop
        the text-encoder loaders left without consumers: umt5-xxl has a fixed 5B config, so no tiny
        one exists. Returns the number of encoders replaced."""
        return self.evaluate("""([replacementType, length, extra]) => {
            const graph = window.app.graph;
            const encoders = graph.nodes.filter((n) => n.type === 'CLIPTextEncode');
            for (const enc of encoders) {
                const repl = window.LiteGraph.createNode(replacementType);
                if (!repl) throw new Error(`${replacementType} is not registered`);
                graph.add(repl);
                repl.pos = [enc.pos[0], enc.pos[1]];
                repl.title = `${enc.title} (test conditioning)`;
                repl.widgets.find((w) => w.name === 'text').value = enc.widgets.find((w) => w.name === 'text').value;
                repl.widgets.find((w) => w.name === 'length').value = length;
                for (const [name, value] of Object.entries(extra)) repl.widgets.find((w) => w.name === name).value = value;
                const targets = (enc.outputs[0].links || []).map((id) => graph.links[id] ?? graph.links.get?.(id)).filter(Boolean)
                    .map((l) => [graph.getNodeById(l.target_id), l.target_slot]);
                for (const [node, slot] of targets) repl.connect(0, node, slot);
                graph.remove(enc);
            }
            for (const loader of graph.nodes.filter((n) => ['CLIPLoader', 'DualCLIPLoader'].includes(n.type)))
                if (!(loader.outputs || []).some((o) => (o.links || []).length)) graph.remove(loader);
            graph.setDirtyCanvas(true, true);
            return encoders.length;
        }""", [replacement_type, length, extra_widgets or {}])

    def graph_to_prompt(self) -> dict:
        """``app.graphToPrompt()``: the conversion the Run button performs ({output, workflow})."""
        return self.evaluate("async () => JSON.parse(JSON.stringify(await window.app.graphToPrompt()))")

    def queue_with_keyboard(self) -> QueuedPrompt:
        """Press Ctrl+Enter (Run) and return the POST /prompt body the frontend sent and the answer."""
        self.close_dialogs()
        self.page.locator("#graph-canvas").focus()
        with self.page.expect_response(
            lambda r: r.request.method == "POST" and urlparse(r.url).path in ("/api/prompt", "/prompt"),
            timeout=self.timeout_ms,
        ) as caught:
            self.page.keyboard.press("Control+Enter")
        response = caught.value
        try:
            body = response.json()
        except Exception:  # noqa: BLE001
            body = {"raw": response.text()}
        return QueuedPrompt(request=json.loads(response.request.post_data or "{}"), status=response.status, response=body)

    # -- diagnostics ----------------------------------------------------------------------------
    def screenshot(self, name: str, directory: Path | None = None) -> Path:
        directory = Path(directory or ARTIFACTS_DIR / "screenshots")
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{_safe_name(name)}.png"
        self.page.screenshot(path=str(target), full_page=False)
        return target

    def log_text(self, limit: int = 12000) -> str:
        lines = list(self.console)
        if self.blocked:
            lines.append(f"[blocked {len(self.blocked)} non-loopback requests] " + " ".join(sorted(set(self.blocked))[:20]))
        return "\n".join(lines)[-limit:]
