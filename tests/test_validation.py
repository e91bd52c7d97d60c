"""Bad input is refused before anything runs, with a message that says what, where and how to fix
it, on every supported ComfyUI; the server keeps serving and the next good prompt gives exactly
the output it gave before.

- Every float input of every node refuses NaN and +-infinity (a JSON NaN token, the string "NaN").
- IaD Apply refuses start_percent after end_percent, and an empty range, naming both values.
- A missing adapter file or face pack is caught at validation with the folder to put files in; on
  ComfyUI v0.2x this message, not core's generic "Value not in list", reaches the user.
- A number that arrives through a link (known only at run time) gets the same message when the
  node runs.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch

from harness.comfy_server import PromptRejected
from harness.prompts import Prompt, post_raw as _post_raw
from test_apply_server import ADAPTERS, graph, iad_files, run_latent, server  # noqa: F401  (fixtures)

BAD_NUMBERS = [float("nan"), float("inf"), float("-inf")]


def _float_inputs(cls):
    from comfy_api.v0_0_2 import io

    return [item for item in cls.define_schema().inputs if isinstance(item, io.Float.Input)]


def test_every_float_input_of_every_node_refuses_nan_and_infinity_in_validate_inputs(pack):
    checked = 0
    for cls in pack.nodes.collect_nodes():
        floats = _float_inputs(cls)
        if not floats:
            continue
        display = cls.define_schema().display_name
        named = set(inspect.signature(cls.validate_inputs).parameters)
        for item in floats:
            assert item.id in named, f"{display}: validate_inputs does not check float input {item.id}"
            for bad in BAD_NUMBERS:
                answer = cls.validate_inputs(**{item.id: bad})
                assert isinstance(answer, str), f"{display}.{item.id} = {bad} passed validation"
                assert display in answer and item.id in answer, answer
                assert ("NaN" in answer) if math.isnan(bad) else ("infinity" in answer), answer
                assert "Set it to a number between" in answer, answer   # how to fix it
            assert cls.validate_inputs(**{item.id: item.default}) is True
            checked += 1
    assert checked >= 9, checked   # weight, start/end, strength, min_score, threshold, fps, flow_scale, cfg x2


def _apply_node(prompt: Prompt) -> str:
    return next(node_id for node_id, node in prompt.items() if node["class_type"] == "IaDApply")


def _errors_of(answer: dict, node_id: str) -> list[dict]:
    return answer.get("node_errors", {}).get(node_id, {}).get("errors", [])


@pytest.mark.server
def test_iad_apply_refuses_non_finite_numbers_and_bad_ranges_then_serves_the_same_output(server):
    before = run_latent(server, graph(iad=[{"start": 0.5}], prefix="valid-before"))
    cases = [
        ({"weight": float("nan")}, ["weight is NaN"]),
        ({"weight": "NaN"}, ["weight is NaN"]),
        ({"start": float("nan")}, ["start_percent is NaN"]),
        ({"end": float("inf")}, ["end_percent is +infinity"]),
        ({"weight": float("-inf")}, ["weight is -infinity"]),
        ({"start": 0.9, "end": 0.5}, ["start_percent 0.9 is after end_percent 0.5", "Set start_percent below"]),
        ({"start": 0.5, "end": 0.5}, ["both 0.5", "empty step range"]),
    ]
    for values, expected in cases:
        prompt, _ = graph(iad=[values], prefix="valid-refused")
        status, answer = _post_raw(server, prompt)
        assert status == 400, f"{values}: accepted ({answer})"
        errors = _errors_of(answer, _apply_node(prompt))
        assert errors, f"{values}: no error on the IaD Apply node: {answer}"
        text = " ".join(f"{e['message']} {e['details']}" for e in errors)
        assert "IaD Apply" in text and all(part in text for part in expected), (values, text)
    assert server.is_alive()
    after = run_latent(server, graph(iad=[{"start": 0.5}], prefix="valid-after", advanced=True))
    assert torch.equal(after, before)


@pytest.mark.server
def test_a_number_arriving_through_a_link_is_checked_when_the_node_runs(server):
    prompt, _ = graph(iad=[{}], prefix="valid-linked")
    nan = prompt.add("PrimitiveFloat", value=float("nan"))
    prompt[_apply_node(prompt)]["inputs"]["weight"] = nan[0]
    status, answer = _post_raw(server, prompt)
    assert status == 200, answer   # nothing to check before it runs: the value does not exist yet
    result = server.wait(answer["prompt_id"])
    assert not result.ok
    assert result.error["node_type"] == "IaDApply"
    assert "IaD Apply: weight is NaN" in result.error["exception_message"]


@pytest.mark.server
def test_missing_adapter_and_face_pack_are_refused_at_validation_with_the_folder(server):
    prompt, _ = graph(iad=[{"adapter": "no-such-adapter.safetensors"}], prefix="valid-missing")
    loader = next(k for k, v in prompt.items() if v["class_type"] == "IaDModelLoader")
    with pytest.raises(PromptRejected) as caught:
        server.submit(prompt)
    errors = caught.value.node_errors[loader]["errors"]
    text = " ".join(e["details"] for e in errors)
    assert all(e["type"] != "value_not_in_list" for e in errors), errors   # the pack's message, not core's
    assert "no-such-adapter.safetensors" in text and "models/iad" in text and "Put the" in text, text
    assert str(server.models_dir / "iad") in text, text

    p = Prompt()
    face = p.add("IaDFaceAnalysisLoader", model_pack="no_such_pack", provider="auto", det_size=640)
    photo = p.add("EmptyImage", width=64, height=64, batch_size=1, color=0)
    embed = p.add("IaDFaceEmbed", face_analysis=face[0], images=photo[0], policy="largest", face_index=0,
                  min_score=0.5, same_person_threshold=0.3)
    p.add("SaveImage", images=embed[1], filename_prefix="valid-pack")
    with pytest.raises(PromptRejected) as caught:
        server.submit(p)
    errors = caught.value.node_errors[face.id]["errors"]
    text = " ".join(e["details"] for e in errors)
    assert all(e["type"] != "value_not_in_list" for e in errors), errors
    assert "no_such_pack" in text and "not found" in text and "insightface" in text, text
    assert server.is_alive()
    assert run_latent(server, graph(steps=1, prefix="valid-still-serving")).shape == (1, 16, 2, 8, 8)
