"""bench/long_video.py: its FLOP formulas against torch's own count, and the measured table end to end."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import long_video as lv  # noqa: E402

from semanticgen_core.latent_dit import LatentDiT  # noqa: E402
from semanticgen_core.model_files import save_model  # noqa: E402
from semanticgen_core.presets import TINY  # noqa: E402
from semanticgen_core.semantic_dit import SemanticDiT  # noqa: E402
from semanticgen_core.vae import VideoVAE, tiny_vae_config  # noqa: E402

STAGE2 = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
              text_dim=24, freq_dim=16, ffn_dim=32, num_layers=3, semantic_dim=8)


def counted_flops(fn) -> int:
    """FLOPs torch counts for ``fn()`` (matmuls, convs; attention through the math kernel so it is seen)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_layer_flops_by_hand():
    # N = 10 tokens in windows of 6 and 4, D = 8, F = 16, L = 3 text tokens
    f = lv.layer_flops([6, 4], dim=8, ffn_dim=16, text_len=3)
    assert f["projections"] == 4 * 2 * 10 * 8 * 8 == 5120
    assert f["attention"] == 2 * 2 * (6 * 6 + 4 * 4) * 8 == 1664
    assert f["cross"] == 2 * 2 * 10 * 64 + 2 * 2 * 3 * 64 + 2 * 2 * 10 * 3 * 8 == 4288
    assert f["ffn"] == 2 * 2 * 10 * 8 * 16 == 5120
    assert f["total"] == 5120 + 1664 + 4288 + 5120
    # one window holding everything is full attention: only the score/value term changes
    full = lv.layer_flops([10], dim=8, ffn_dim=16, text_len=3)
    assert full["attention"] == 2 * 2 * 10 * 10 * 8
    assert full["total"] - full["attention"] == f["total"] - f["attention"]


@pytest.mark.parametrize("window", [2, None])
def test_stage2_flops_match_torch_count(window):
    """6 latent frames of 2x2 patches and a 3-step 2x2 plan; windows of 2 frames give uneven windows
    (the shifted layers split [8, 12, 12, 4] tokens), None is full attention over all 36."""
    torch.manual_seed(0)
    model = LatentDiT(**STAGE2).eval()
    x, plan, text = torch.randn(1, 16, 6, 4, 4), torch.randn(1, 3, 2, 2, 8), torch.randn(1, 5, 24)
    got = counted_flops(lambda: model(x, torch.tensor([500.0]), text, semantic_tokens=plan, window_frames=window))
    windows = lv.stage2_windows(6, 4, 3, 4, window)
    assert windows == ([[12, 12, 12], [8, 12, 12, 4]] if window else [[36], [36]])
    assert lv.forward_flops(lv.DiTShape.of(STAGE2), windows, 24, 12, 5)["total"] == got


def test_baseline_and_stage1_flops_match_torch_count():
    torch.manual_seed(0)
    text, t = torch.randn(1, 5, 24), torch.tensor([500.0])
    baseline = LatentDiT(**STAGE2).eval()
    got = counted_flops(lambda: baseline(torch.randn(1, 16, 6, 4, 4), t, text, window_frames=None))
    assert lv.forward_flops(lv.DiTShape.of(STAGE2), [[24]], 24, 0, 5)["total"] == got
    s1 = {k: v for k, v in STAGE2.items() if k != "semantic_dim"} | dict(patch_size=(1, 1, 1), in_channels=8,
                                                                        out_channels=8, num_layers=2)
    stage1 = SemanticDiT(**s1).eval()
    got = counted_flops(lambda: stage1(torch.randn(1, 8, 3, 2, 2), t, text))
    assert lv.forward_flops(lv.DiTShape.of(s1), [[12]], 12, 0, 5)["total"] == got


def test_wan_scale_windowed_attention_is_linear_full_is_quadratic():
    a, b = lv.wan_flops(30), lv.wan_flops(60)
    frames = b["latent_frames"] / a["latent_frames"]  # 241 / 121
    assert b["stage2"]["attention"] / a["stage2"]["attention"] == pytest.approx(frames, rel=0.03)
    assert b["baseline"]["attention"] / a["baseline"]["attention"] == pytest.approx(frames ** 2, rel=1e-9)
    # at 60 s full attention dominates the baseline, and SemanticGen is far cheaper
    assert b["baseline"]["attention"] > 0.5 * b["baseline"]["total"]
    assert b["baseline"]["total"] > 5 * b["semanticgen"]["total"]
    # Wan2.1-1.3B at 480p: 30 x 52 patches a latent frame, 4k+1 frames; plan 17 x 30 cells
    assert a["video_tokens"] == 121 * 30 * 52 and a["plan_tokens"] % (17 * 30) == 0
    # the 4 s case at 50 steps x CFG: baseline attention = 100 forwards x 30 layers x 4 N^2 D
    c = lv.wan_flops(4)
    n = 17 * 1560
    assert c["baseline"]["attention"] == 100 * 30 * 4 * n * n * 1536


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """Tiny random stage-1, windowed stage-2 and VAE files; the preset asks for CFG (guidance 2)."""
    out = tmp_path_factory.mktemp("bench_models")
    preset = dataclasses.replace(TINY, stage2={**TINY.stage2, "window_frames": 2},
                                 defaults={**TINY.defaults, "guidance": 2.0})
    torch.manual_seed(0)
    m = preset.build()
    save_model(out / "stage1.safetensors", "stage1", {"stage1": m["stage1"]}, preset)
    save_model(out / "stage2.safetensors", "stage2", {"compressor": m["compressor"], "stage2": m["stage2"]}, preset)
    VideoVAE.from_config(tiny_vae_config()).save(out / "vae.safetensors")
    return lv.ModelPaths(str(out / "stage1.safetensors"), str(out / "stage2.safetensors"),
                         str(out / "vae.safetensors"), None)


def test_measured_table_end_to_end(tiny_files, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert lv.main(["--seconds", "1", "2", "--steps", "1", "--threads", "1", "--in-process", "--json", str(out),
                    "--stage1", tiny_files.stage1, "--stage2", tiny_files.stage2, "--vae", tiny_files.vae]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["measured"]
    assert sorted((r["part"], r["seconds"]) for r in rows) == sorted((p, s) for p in lv.PARTS for s in (1.0, 2.0))
    for r in rows:
        assert r["error"] is None and r["wall_s"] > 0 and r["peak_rss_bytes"] > 0 and r["peak_tensor_bytes"] > 0
        assert f"| {r['seconds']:g} | {r['part']} | {r['num_frames']} |" in text
    by = {(r["part"], r["seconds"]): r for r in rows}
    assert by["stage2", 2.0]["num_frames"] == 17 and by["stage2", 2.0]["latent_frames"] == 5
    assert "untrained" in by["baseline", 1.0]["note"] and "windows of 2" in by["stage2", 1.0]["note"]
    # the baseline's live tensors grow with the video (full attention holds every token)
    assert by["baseline", 2.0]["peak_tensor_bytes"] > by["baseline", 1.0]["peak_tensor_bytes"]
    assert "stage 2 [targets]: time per second of video" in text and "(target <= 1.15)" in text
    assert "(target <= 1.20)" in text and "baseline [contrast]" in text
    assert "| 2 | 14,040 / " in text.split("## Analytic")[1]  # Wan: 2 s -> 33 frames -> 9 latent x 1560


def test_a_part_runs_in_a_fresh_subprocess(tiny_files):
    row = lv.run_part("stage2", 1, 1, 1, tiny_files, timeout=300)  # a child that hangs is an error, not a hang
    assert row["error"] is None and "in-process" not in row["note"]
    assert 0 < row["rss_before_bytes"] <= row["peak_rss_bytes"] and row["wall_s"] > 0


def test_failures_and_verdicts():
    assert lv.failure_reason(-9, "") == "does not fit in RAM (out of memory)"
    assert lv.failure_reason(1, "Traceback\nRuntimeError: DefaultCPUAllocator: can't allocate memory: you tried"
                                "\nMemoryError") == "does not fit in RAM (out of memory)"
    assert lv.failure_reason(1, "Traceback\nValueError: bad").startswith("failed (exit 1): ValueError: bad")

    def row(part, seconds, wall, rss):
        return {"part": part, "seconds": seconds, "s_per_video_s": wall / seconds, "peak_rss_bytes": rss,
                "rss_increase_bytes": rss // 10, "peak_tensor_bytes": 1, "error": None}

    rows = [row("stage2", 4, 4.0, 100), row("stage2", 60, 66.0, 110), row("baseline", 4, 4.0, 100),
            row("baseline", 60, 240.0, 300), {"part": "baseline", "seconds": 120, "error": "timed out"}]
    s = lv.summarize(rows)
    assert s["stage2"]["time_ratio"] == pytest.approx(1.1) and s["stage2"]["rss_ratio"] == pytest.approx(1.1)
    assert s["baseline"]["time_ratio"] == pytest.approx(4.0) and s["baseline"]["failed"] == [120]
    lines = "\n".join(lv.summary_lines(s))
    assert "1.100 (target <= 1.15): PASS" in lines and "1.100 (target <= 1.20): PASS" in lines
    assert "MISS" not in lines and "did not run at 120 s" in lines
    rows[1] = row("stage2", 60, 72.0, 130)
    lines = "\n".join(lv.summary_lines(lv.summarize(rows)))
    assert "1.200 (target <= 1.15): MISS" in lines and "1.300 (target <= 1.20): MISS" in lines
