"""benchmarks/train_flops.py: the arithmetic behind docs/training.md, sections 4.3-4.7 (training FLOPs, the
measured point's rate, the planning and upper-bound time models, GPU-hours per stage). The doc
quotes what it prints; this test keeps the two the same."""

from __future__ import annotations

import re
import sys

import pytest

from harness.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import train_flops  # noqa: E402

DOC = (REPO_ROOT / "docs" / "training.md").read_text(encoding="utf-8")


def test_flops_follow_the_formula_and_the_models_meet_the_measurement():
    flops, share = train_flops.training_flops("1.3B", train_flops.L0, False)
    d, f, blocks = train_flops.SHAPES["1.3B"]
    linear = 1280 * (6 * d * d + 2 * d * f) + 2 * 1280 * 512 * d + 2 * 512 * d * d
    assert flops == pytest.approx((2 * linear * 2 + 2 * 2 * 1280 ** 2 * d * 3.5) * blocks / 1e12)
    assert 0 < share < 1 and train_flops.training_flops("1.3B", 14_040, False)[1] > share   # attention grows with L
    ckpt, _ = train_flops.training_flops("1.3B", train_flops.L0, True)
    assert ckpt > flops                                                                       # one forward more


def test_the_doc_quotes_what_the_script_prints(capsys):
    assert train_flops.main([]) == 0
    out = capsys.readouterr().out
    achieved = re.search(r"ckpt off: ([\d.]+) TF a sample, attention a = ([\d.]+), achieved ([\d.]+) TFLOP/s = ([\d.]+)%", out)
    per_sample, a, rate, percent = achieved.groups()
    assert f"{rate} TFLOP/s = {percent} %" in DOC and f"({per_sample} TF a sample)" in DOC and f"a = {a} " in DOC
    stages = {name.strip(): (int(p.replace(",", "")), int(u.replace(",", "")))
              for name, p, u in re.findall(r"^  (.+?)\s+[\d,]+ samples:\s+([\d,]+) /\s+([\d,]+)$", out, re.M)}
    totals = {"1.3B": [stages["1.3B S1"], stages["1.3B S2, H100"]], "14B": [stages["14B S1"], stages["14B S2"]],
              "A14B": [stages["A14B low-noise, D33"], stages["A14B low-noise, D81"]]}
    planning = {k: sum(p for p, _ in v) for k, v in totals.items()}
    upper = {k: sum(u for _, u in v) for k, v in totals.items()}
    row = (f"{planning['1.3B']} / {planning['14B']} / {planning['A14B']} planning; "
           f"{upper['1.3B']:,} / {upper['14B']:,} / {upper['A14B']:,} upper")
    assert row in DOC, row
    for name in ("1.3B S1", "1.3B S2, H100", "1.3B S2, H200", "14B S1", "14B S2"):     # the stage tables
        assert f"{stages[name][0]} / {stages[name][1]:,}" in DOC, name
    assert f"H200 no ckpt {stages['14B S1, H200 no ckpt'][0]}" in DOC
    low = [stages["A14B low-noise, D33"][0], stages["A14B low-noise, D81"][0]]
    assert f"{low[0]} + {low[1]} = {planning['A14B']} GPU-h planning / {upper['A14B']:,} upper" in DOC
    with pytest.raises(SystemExit):
        train_flops.main(["--mfu", "0"])
