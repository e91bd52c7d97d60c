"""Input validation that runs before anything executes, on every supported ComfyUI.

Why the nodes validate numbers and file choices themselves:
- ComfyUI checks a number against its min/max, but NaN passes both comparisons (as a JSON token or
  the string "NaN"), and so does a start after an end.
- ComfyUI v0.2x checks combo values itself and answers "Value not in list" before a node's code
  runs, so a node's own "put the file in models/iad" could never reach the user; 0.3.75 does not
  check V3 combos at all, so the same mistake surfaced only when the prompt ran.

A node's ``validate_inputs`` names the inputs it checks (ComfyUI then leaves them to it and runs
it at validation, on both versions) and calls ``check_inputs``. ComfyUI passes ``None`` for an
input fed by a link, whose value exists only at run time: ``require_valid`` checks those values
when the node runs, with the same messages. Every message says which node and input, what was
wrong and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from .comfy_api_compat import io

# A node-specific check: takes the values (None for linked ones) and returns problems (strings).
Check = Callable[[dict], Iterable[str]]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def number_problem(node: str, name: str, value, lo=None, hi=None) -> str | None:
    """Why ``value`` is not a usable number for input ``name`` (None when it is)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{node}: {name} = {value!r} is not a number. Enter a number" + (
            f" between {_number(lo)} and {_number(hi)}." if lo is not None and hi is not None else ".")
    span = f"between {_number(lo)} and {_number(hi)}" if lo is not None and hi is not None else "a finite number"
    if math.isnan(number):
        return f"{node}: {name} is NaN (not a number). Set it to a number {span}."
    if math.isinf(number):
        return f"{node}: {name} is {'+' if number > 0 else '-'}infinity. Set it to a number {span}."
    if lo is not None and number < lo:
        return f"{node}: {name} = {_number(number)} is below its minimum {_number(lo)}. Set it {span}."
    if hi is not None and number > hi:
        return f"{node}: {name} = {_number(number)} is above its maximum {_number(hi)}. Set it {span}."
    return None


def _schema_problems(schema, node: str, values: dict) -> list[str]:
    """Numbers: finite and inside the schema's range. Plain combos: one of the options."""
    inputs = {item.id: item for item in schema.inputs}
    problems = []
    for name, value in values.items():
        item = inputs.get(name)
        if value is None or item is None:
            continue   # linked: the value exists only when the node runs
        if isinstance(item, (io.Float.Input, io.Int.Input)):
            problem = number_problem(node, name, value, getattr(item, "min", None), getattr(item, "max", None))
            if problem:
                problems.append(problem)
        elif isinstance(item, io.Combo.Input) and item.options and value not in item.options:
            shown = ", ".join(repr(o) for o in item.options[:12]) + (" ..." if len(item.options) > 12 else "")
            problems.append(f"{node}: {name} = {value!r} is not one of the choices ({shown}). Pick one of them.")
    return problems


def problems_of(cls, values: dict, checks: Iterable[Check] = ()) -> list[str]:
    schema = cls.define_schema()
    node = schema.display_name or cls.__name__
    problems = _schema_problems(schema, node, values)
    if not problems:   # cross-input checks only make sense on valid single values
        for check in checks:
            problems.extend(check(values))
    return problems


def check_inputs(cls, values: dict, checks: Iterable[Check] = ()) -> bool | str:
    """For a node's ``validate_inputs``: True, or one message listing every problem."""
    problems = problems_of(cls, values, checks)
    return True if not problems else " ".join(problems)


def require_valid(cls, values: dict, checks: Iterable[Check] = ()) -> None:
    """For a node's ``execute``: the same checks on the values that arrived through links."""
    problems = problems_of(cls, values, checks)
    if problems:
        raise ValueError(" ".join(problems))


def step_range_check(node: str, start_name: str = "start_percent", end_name: str = "end_percent") -> Check:
    """start < end: a reversed or empty range would silently apply nothing."""

    def check(values: dict) -> list[str]:
        start, end = values.get(start_name), values.get(end_name)
        if start is None or end is None:
            return []
        start, end = float(start), float(end)
        if start > end:
            return [f"{node}: {start_name} {_number(start)} is after {end_name} {_number(end)}, so the identity would "
                    f"never be applied. Set {start_name} below {end_name} (the default 0.75 to 1.0 is the last "
                    f"quarter of the steps), or set weight to 0 to turn the identity off."]
        if start == end:
            return [f"{node}: {start_name} and {end_name} are both {_number(start)}: an empty step range, so the "
                    f"identity would never be applied. Give it a range ({start_name} below {end_name}), or set weight "
                    f"to 0 to turn the identity off."]
        return []

    return check
