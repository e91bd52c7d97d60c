"""Work units of a preparation run, and the one index (``dataset.json``) assembled from them.

The clips still to prepare, in discovery order, are cut into consecutive *units* of
``clips_per_shard`` clips; a unit becomes one shard, named when the unit is planned. A unit is
finished once its shard's ``.json`` exists (written last, atomically) and names exactly the unit's
clips: those prepared (``clips``) and those skipped, with the reason (``skipped``). A skipped clip
therefore leaves its shard one clip short instead of shifting the clips of later units, so the
shards do not depend on which process prepared which unit, or in which order.

``plan.json`` holds the units not yet in the index. It is written before any unit is started and
removed once all of them are in the index, so an interrupted run, on any number of processes,
finishes exactly the planned units. The index lists finished units in plan order, stopping at the
first unfinished one, which makes it the same whoever finishes first.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .shards import atomic_write_text

PLAN_FILE = "plan.json"
PLAN_FORMAT = "comfyui-iad-prepare-plan"
_SHARD_NAME = re.compile(r"shard-(\d+)$")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def clip_entry(clip, input_dir: str | os.PathLike) -> dict:
    """A clip as the plan stores it: its fields (path relative to the input folder, so machines may
    mount the folder elsewhere) and the fingerprint that marks it done."""
    entry = {name: getattr(clip, name) for name in clip.__dataclass_fields__}
    path = Path(clip.path)
    try:
        entry["path"] = path.relative_to(Path(input_dir)).as_posix()
    except ValueError:   # a clip outside the input folder (a dataset reader's own layout)
        entry["path"] = str(path)
    entry["source"], entry["fingerprint"] = clip.key, clip.fingerprint()
    return entry


def claim_clips(state: dict, entries: dict[str, dict], planned: dict[str, str], input_dir: str | os.PathLike,
                out: Path, prefix: str = "") -> None:
    """Record in the index which input folder each clip comes from, and refuse before anything runs
    a clip whose key a clip of *another* input folder already holds in this dataset (prepared, skipped
    or planned): a dataset knows a clip by its key (a folder's file name; a dataset reader's relative
    path and range), so it would silently replace that one. ``entries``: this run's clips by key;
    ``planned``: key -> fingerprint of an unfinished run's clips.

    ``inputs`` lists the folders and ``clip_prefixes`` their ``clip_prefix``; ``origin`` maps a key to
    its folder's index where it is not 0, so a dataset from one folder stores nothing per clip. A
    dataset indexed before this record has ``None`` as folder 0: its clips' folder is unknown and not
    checked. A clip with the fingerprint of the one held is the same file (a copy); one whose folder no
    longer exists was moved with it. A folder keeps its prefix: another would add its clips again."""
    here = str(Path(input_dir).resolve())
    if "inputs" not in state:
        state["inputs"] = [None] if state["done"] or state["skipped"] or planned else []
    inputs, origin = state["inputs"], state.setdefault("origin", {})
    prefixes = state.setdefault("clip_prefixes", [""] * len(inputs))
    if here not in inputs:
        inputs.append(here)
        prefixes.append(prefix)
    me = inputs.index(here)
    if prefixes[me] != prefix:
        raise ValueError(f"{here} was prepared into {out} with clip_prefix {prefixes[me]!r}, not {prefix!r}: its clips "
                         "would be prepared again under other names. Use the same clip_prefix (--clip-prefix).")
    held = {**{s["source"]: s.get("fingerprint") for s in state["skipped"]}, **state["done"], **planned}
    clashes = []
    for key, entry in entries.items():
        if key not in held or held[key] == entry["fingerprint"]:
            continue
        other = inputs[origin.get(key, 0)]
        if other is not None and other != here and Path(other).is_dir():
            clashes.append(f"{key} (held from {other})")
    if clashes:
        raise ValueError(f"{here} holds {len(clashes)} clip(s) named like clips of another input folder already in {out}: "
                         f"{', '.join(clashes[:5])}{' ...' if len(clashes) > 5 else ''}. The dataset knows a clip by its "
                         "name, so these would replace those. Give this folder's clips a prefix (clip_prefix, --clip-prefix, "
                         "e.g. \"more/\"), rename them, or prepare this folder into its own output folder (if they are "
                         "new versions of those clips, prepare them from the folder named).")
    for key in entries:
        if me:
            origin[key] = me
        else:
            origin.pop(key, None)


def new_units(clips: list, size: int, first_index: int, input_dir: str | os.PathLike) -> list[dict]:
    entries = [clip_entry(c, input_dir) for c in clips]
    return [{"shard": shard_name(first_index + j), "clips": entries[i:i + size]}
            for j, i in enumerate(range(0, len(entries), size))]


def next_shard_index(shards: list[str], units: list[dict]) -> int:
    numbers = [int(m.group(1)) for name in [*shards, *(u["shard"] for u in units)] if (m := _SHARD_NAME.match(name))]
    return max(numbers, default=-1) + 1


def unit_result(folder: Path, unit: dict) -> dict | None:
    """The shard record file of a finished unit; None while it is not finished. A shard file left
    from an older dataset in the same folder (other clips) does not count."""
    try:
        data = json.loads((Path(folder) / f"{unit['shard']}.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    sources = [r["source"] for r in data.get("clips", [])] + [s["source"] for s in data.get("skipped", [])]
    return data if sorted(sources) == sorted(c["source"] for c in unit["clips"]) else None


def merge_finished(folder: Path, state: dict, units: list[dict]) -> list[dict]:
    """Add the finished units at the head of ``units`` to the index ``state``, in plan order, up to
    the first unfinished one; returns the units not yet in the index."""
    listed = set(state["shards"])
    for n, unit in enumerate(units):
        if unit["shard"] in listed:
            continue
        data = unit_result(folder, unit)
        if data is None:
            return units[n:]
        _add_unit(folder, state, unit, data)
    return []


def _add_unit(folder: Path, state: dict, unit: dict, data: dict) -> None:
    prints = {c["source"]: c["fingerprint"] for c in unit["clips"]}
    state["shards"].append(unit["shard"])
    for record in data["clips"]:
        state["done"][record["source"]] = prints[record["source"]]
    changed = set(prints)   # a clip prepared or skipped now replaces an older skip entry for it
    state["skipped"] = [s for s in state["skipped"] if s["source"] not in changed] + list(data.get("skipped", []))
    for key in ("embedder", "text_encoder_name"):
        if data.get(key) is not None:
            state[key] = data[key]
    if state.get("latent_shape") is None and data["clips"]:
        from safetensors import safe_open

        with safe_open(str(Path(folder) / f"{unit['shard']}.safetensors"), "pt") as f:
            state["latent_shape"] = list(f.get_slice(f"{data['clips'][0]['key']}.latents").get_shape())


def read_plan(folder: Path, settings: dict) -> list[dict]:
    """The units of an unfinished run in ``folder`` ([] if none)."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        return []
    plan = json.loads(path.read_text(encoding="utf-8"))
    if plan.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path} is not an iad.prepare plan (format {plan.get('format')!r}); remove it and run again.")
    if plan.get("settings") != settings:
        raise ValueError(f"{path} was planned with other settings than {folder / 'dataset.json'}; resuming would mix "
                         "incompatible clips. Use a new output folder, or the original settings.")
    return plan["units"]


def write_plan(folder: Path, settings: dict, run_id: str, units: list[dict]) -> None:
    atomic_write_text(Path(folder) / PLAN_FILE, json.dumps({"format": PLAN_FORMAT, "run": run_id, "settings": settings,
                                                            "units": units}, indent=1))


def plan_run_id(folder: Path) -> str | None:
    """The run id in ``folder``'s plan.json, None if there is none (yet)."""
    try:
        return json.loads((Path(folder) / PLAN_FILE).read_text(encoding="utf-8")).get("run")
    except (FileNotFoundError, ValueError):
        return None


def remove_plan(folder: Path) -> None:
    try:
        os.unlink(Path(folder) / PLAN_FILE)
    except FileNotFoundError:
        pass
