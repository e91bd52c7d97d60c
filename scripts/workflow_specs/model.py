"""The shipped workflows' data model: model files, nodes, groups, workflows, official templates.

``scripts/build_workflows.py`` turns each workflow into the UI-format JSON in ``workflows/`` inside
the real frontend. Model file names are those of ComfyUI's official repackaged releases, so a
workflow works as downloaded; each loader carries ``properties.models`` (name, folder, URL), which
the frontend's "Missing Models" dialog offers as download buttons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HF = "https://huggingface.co"
NOTE_COLOR, NOTE_BG = "#432", "#653"
IAD_COLOR, IAD_BG = "#223", "#335"


@dataclass(frozen=True)
class ModelFile:
    name: str
    directory: str  # the ComfyUI models/ sub-folder
    url: str | None = None  # None: no public download (e.g. adapters you train yourself)

    def meta(self) -> dict:
        entry = {"name": self.name, "directory": self.directory}
        if self.url:
            entry["url"] = self.url
        return entry


@dataclass
class Node:
    key: str
    type: str
    pos: int | tuple[int, int]  # a column x (stacked below the column's previous node) or (x, y)
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (node key, output name or index)
    title: str | None = None
    models: tuple[ModelFile, ...] = ()
    size: tuple[int, int] | None = None
    color: str | None = None
    bgcolor: str | None = None

    def to_js(self) -> dict:
        return {
            "key": self.key, "type": self.type, "pos": [self.pos, None] if isinstance(self.pos, int) else list(self.pos), "widgets": self.widgets,
            "links": {k: [v[0], v[1]] for k, v in self.links.items()}, "title": self.title,
            "models": [m.meta() for m in self.models], "size": list(self.size) if self.size else None,
            "color": self.color, "bgcolor": self.bgcolor,
        }


def note(key: str, text: str, pos, size=(420, 300), title: str = "Read me") -> Node:
    return Node(key, "Note", pos, widgets={"text": text.strip() + "\n"}, title=title, size=size,
                color=NOTE_COLOR, bgcolor=NOTE_BG)


@dataclass
class Group:
    title: str
    members: list[str]
    color: str | None = None


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    groups: list[Group] = field(default_factory=list)

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)

    def model_files(self) -> list[ModelFile]:
        seen: dict[str, ModelFile] = {}
        for n in self.nodes:
            for m in n.models:
                seen.setdefault(m.name, m)
        return list(seen.values())

    def to_js(self) -> dict:
        return {"name": self.name, "nodes": [n.to_js() for n in self.nodes],
                "groups": [{"title": g.title, "members": g.members, "color": g.color} for g in self.groups]}


@dataclass
class TemplateWorkflow(Workflow):
    """A shipped workflow built from ComfyUI's own official template for a model (the
    comfyui-workflow-templates package ComfyUI pins): the template as shipped, the subgraphs that
    hold its model unpacked, plus ``nodes`` (the IaD part, placed below it) and an IaD Apply between
    each ``anchor`` loader's output and everything that output fed (the spec's ``apply`` node for the
    first, copies of it for the others: a template may load the model in several subgraphs, or two
    models). ``@anchor`` in a link names the first loader. ``remove`` lists template nodes left out
    (nodes of custom node packs that core lacks); ``replace`` gives what takes over their links.
    ``chain`` names spec nodes (core model patches, e.g. a context-windows node) that go between each
    IaD Apply and what its loader fed, in that order (each takes ``model`` and gives output 0; copies
    of them follow the copies of IaD Apply). ``settings`` gives template widgets other values (the
    length of a long video): ``((node type, node title), {widget: value})``, the one template node of
    that type and title, after the subgraphs that hold the model are unpacked."""

    template: str = ""           # file name in the templates package, e.g. video_ltx2_t2v.json
    # {"type", "widget": [name, value or [values]], "output"}: the loaders (active ones) whose model gets IaD
    anchor: dict = field(default_factory=dict)
    apply: str = "apply"         # the key of the IaD Apply node in ``nodes``
    requires: str = ""           # what the running ComfyUI must have (said in the README and tests)
    remove: tuple[int, ...] = ()  # template node ids left out
    replace: dict = field(default_factory=dict)   # removed node id -> (spec node key, its output name)
    chain: tuple[str, ...] = ()  # spec node keys between IaD Apply and what the loader fed (model in, output 0 out)
    settings: tuple = ()         # ((template node type, title), {widget: value}): template widgets set to other values

    def anchor_values(self) -> list:
        value = self.anchor.get("widget", [None, None])[1]
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def to_js(self) -> dict:
        anchor = {**self.anchor, "widget": [self.anchor["widget"][0], self.anchor_values()]} if "widget" in self.anchor \
            else self.anchor
        return {**super().to_js(), "apply": self.apply, "anchor": anchor, "remove": list(self.remove),
                "replace": {str(k): list(v) for k, v in self.replace.items()}, "chain": list(self.chain),
                "settings": [{"type": t, "title": title, "widgets": dict(w)} for (t, title), w in self.settings]}

    def chain_nodes(self) -> list[Node]:
        return [self.node(key) for key in self.chain]

    def setting(self, node_type: str, title: str | None) -> dict:
        """The widget values the spec gives the template node of this type and title ({} if none)."""
        return next((dict(w) for (t, name), w in self.settings if t == node_type and name == title), {})


@dataclass(frozen=True)
class OfficialTemplate:
    graph: dict
    package: str
    version: str
    file: str
    sha256: str

    def provenance(self) -> dict:
        return {"package": self.package, "version": self.version, "file": self.file, "sha256": self.sha256}


# Official templates kept in the repository (unchanged, with where they come from), for templates the
# package this ComfyUI pins no longer ships (scripts/templates/SOURCES.json says which and why).
VENDORED = Path(__file__).resolve().parents[1] / "templates"


def official_template(file: str) -> OfficialTemplate:
    """An official template from the installed comfyui-workflow-templates packages (the one this
    ComfyUI pins), else from ``scripts/templates`` (a template an older pin shipped); raises
    FileNotFoundError when neither has ``file``."""
    import hashlib
    import json
    from importlib import metadata

    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if not name.lower().replace("_", "-").startswith("comfyui-workflow-templates"):
            continue
        for entry in dist.files or []:
            if entry.name == file and entry.parent.name == "templates":
                path = entry.locate()
                data = path.read_bytes()
                return OfficialTemplate(json.loads(data), name, dist.version, file, hashlib.sha256(data).hexdigest())
    sources = json.loads((VENDORED / "SOURCES.json").read_text())
    if file in sources:
        data = (VENDORED / file).read_bytes()
        return OfficialTemplate(json.loads(data), sources[file]["package"], sources[file]["version"], file,
                                hashlib.sha256(data).hexdigest())
    raise FileNotFoundError(f"no installed comfyui-workflow-templates package has {file} (run in the lane of the "
                            "ComfyUI whose templates the workflow is built from: scripts/lanes.py run v0.28.2 -- ...)")


def download_list(files) -> str:
    return "\n".join(f"- models/{m.directory}/{m.name}" + (f"\n    {m.url}" if m.url else "") for m in files)
