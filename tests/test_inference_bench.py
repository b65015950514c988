"""bench/inference.py in its CPU mode (tiny models), and the optional torch.compile's fallback."""

import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import inference  # noqa: E402

from semanticgen_core import compile as sg_compile  # noqa: E402
from semanticgen_core.latent_dit import LatentDiT  # noqa: E402

QUICK = ["--device", "cpu", "--preset", "tiny", "--seconds", "1", "2", "--target-seconds", "1", "--steps", "3",
         "--timed-steps", "1", "--decode-frames", "2", "--text-len", "4"]


def test_cpu_mode_table_has_every_row_and_sane_figures(tmp_path, capsys):
    out_json, out_md = tmp_path / "inf.json", tmp_path / "inf.md"
    assert inference.main([*QUICK, "--max-seconds", "120", "--json", str(out_json), "--md", str(out_md)]) == 0
    rec = json.loads(out_json.read_text())
    rows = {(r["seconds"], r["part"]): r for r in rec["rows"]}
    assert set(rows) == {(s, p) for s in (1.0, 2.0) for p in inference.PARTS}
    for (seconds, part), r in rows.items():
        assert r["error"] is None, r
        assert r["total_s"] > 0 and math.isfinite(r["total_s"])
        assert r["num_frames"] == int(seconds * 8) + 1  # the tiny preset's 8 fps
        if part == "decode":
            assert r["steps"] is None
        else:
            assert r["step_s"] > 0 and r["total_s"] == pytest.approx(3 * r["step_s"])
            assert "extrapolated" in r["how"]  # 1 timed step, 3 in the total
    # tokens: the baseline sees the video, stage 2 video + plan, stage 1 the plan
    r2 = {p: rows[(2.0, p)] for p in inference.PARTS}
    assert r2["stage2"]["tokens"] == r2["baseline"]["tokens"] + r2["stage1"]["tokens"]
    assert r2["decode"]["latent_frames"] == 5 and "extrapolated" in r2["decode"]["how"]  # 2 of 5 timed
    assert "measured (whole video)" not in r2["decode"]["how"]
    for v in rec["summary"]["lengths"].values():
        assert v["ratio"] > 0 and v["analytic_ratio"] > 0 and v["ratio_with_decode"] > 0
    target = rec["summary"]["target"]
    assert target["ratio"] == pytest.approx(rows[(1.0, "stage2")]["step_s"] / rows[(1.0, "baseline")]["step_s"])
    printed = capsys.readouterr().out
    assert printed.strip() == out_md.read_text().strip()
    assert "CPU" in printed and "python bench/inference.py --device cpu --preset tiny" in printed
    assert printed.count("| 1 | ") == 5 and printed.count("| 2 | ") == 5  # 4 parts + the summary row each
    assert "Target: a stage-2 step at 64x64x9 frames within 1.3x" in printed


def test_budget_guard_never_overruns_and_keeps_every_row(tmp_path):
    out = tmp_path / "inf.json"
    assert inference.main([*QUICK, "--max-seconds", "0.001", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert len(rec["rows"]) == 8
    assert all(r["error"] == "stopped: --max-seconds ran out" for r in rec["rows"])
    assert rec["summary"]["target"]["pass"] is None


def test_analytic_ratio_at_wan_scale_matches_the_docs():
    """At 832x480, 16 fps, 60 s: SemanticGen / baseline FLOPs ~ 0.08 (docs/long_video.md: 12.31x)."""
    from semanticgen_core.presets import WAN

    geo = inference.geometry(WAN, 60, 16.0, 480, 832, 8)
    assert geo["video_tokens"] == 375_960 and geo["plan_tokens"] == 24_990
    f = inference.analytic_flops(WAN.stage1, WAN.stage2, geo, 512)
    assert (f["stage1"] + f["stage2"]) * 50 * 2 / 1e12 == pytest.approx(219_535, rel=1e-3)
    assert (f["stage1"] + f["stage2"]) / f["baseline"] == pytest.approx(1 / 12.31, rel=1e-2)


# -- torch.compile: optional, and never breaks a run ----------------------------------------------

CFG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
           text_dim=16, freq_dim=16, ffn_dim=16, num_layers=2, semantic_dim=3, window_frames=2)


def _model_and_inputs():
    torch.manual_seed(0)
    model = LatentDiT(**CFG).eval()
    args = (torch.randn(1, 4, 5, 4, 4), torch.tensor([500.0]), torch.randn(1, 3, 16))
    return model, args, dict(semantic_tokens=torch.randn(1, 2, 1, 1, 3))


def test_compile_unavailable_warns_and_runs_eagerly(monkeypatch, caplog):
    model, args, kwargs = _model_and_inputs()
    with torch.no_grad():
        want = model(*args, **kwargs).sample

    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="semanticgen_core.compile"):
        assert sg_compile.compile_blocks(model) == 0
    assert "not available" in caplog.text and "no compiler here" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(model(*args, **kwargs).sample, want, rtol=0, atol=0)


def test_compile_failing_at_the_first_call_falls_back_once(monkeypatch, caplog):
    model, args, kwargs = _model_and_inputs()
    with torch.no_grad():
        want = model(*args, **kwargs).sample
    calls = []

    def fake_compile(fn, **options):
        def compiled(*a, **k):
            calls.append(1)
            raise RuntimeError("inductor: backend compiler failed")
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert sg_compile.compile_blocks(model) == 2
    assert sg_compile.compile_blocks(model) == 0  # already wrapped
    with caplog.at_level(logging.WARNING, logger="semanticgen_core.compile"), torch.no_grad():
        got = model(*args, **kwargs).sample
        again = model(*args, **kwargs).sample
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(again, want, rtol=0, atol=0)
    assert len(calls) == 2  # one failed try per block, then eager for good
    assert caplog.text.count("runs eagerly from now on") == 2
    sg_compile.uncompile_blocks(model)
    assert all("forward" not in vars(b) for b in model.blocks)
    assert model.state_dict().keys() == LatentDiT(**CFG).state_dict().keys()


def test_compile_keeps_trying_when_the_inputs_are_wrong(monkeypatch):
    """An error the eager forward raises too is the caller's, not compile's: it is raised, compile stays on."""
    model, _, _ = _model_and_inputs()
    monkeypatch.setattr(torch, "compile", lambda fn, **o: (lambda *a, **k: fn(*a, **k)))
    sg_compile.compile_blocks(model)
    with pytest.raises(Exception):
        model.blocks[0](torch.randn(1, 3, 5), None, None, None, None, None, None, None, [], None)
    assert "forward" in vars(model.blocks[0]) and vars(model.blocks[0])["forward"].__name__ == "forward"


def test_compile_only_when_asked(monkeypatch):
    model, _, _ = _model_and_inputs()
    monkeypatch.delenv(sg_compile.ENV, raising=False)
    assert sg_compile.maybe_compile(model) == 0
    monkeypatch.setenv(sg_compile.ENV, "1")
    monkeypatch.setattr(torch, "compile", lambda fn, **o: fn)
    assert sg_compile.maybe_compile(model) == 2
