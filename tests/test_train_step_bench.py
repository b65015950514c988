"""bench/train_step.py at the tiny size on the CPU: the trainer's real step (``Trainer.train_step``) for stage 2
(windowed as the trainer builds it, and the full-attention comparison) and stage 1, its figures, its analytic
FLOPs against torch's own count, and its guards (out of memory, the time budget, the watchdog)."""

import dataclasses
import gc
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import train_step as ts  # noqa: E402

from semanticgen_core.pipeline import latent_frames  # noqa: E402
from semanticgen_core.trainer import stage2_window  # noqa: E402
from semanticgen_core.presets import TINY  # noqa: E402

TINY_ARGS = ["--device", "cpu", "--preset", "tiny", "--frames", "17", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Batch 2, 1 warm-up + 1 timed step per task, then the FLOP-counted step (on by default). The tiny preset's
    stage 2 has no window (its sampling default is None): ``--window-frames 2`` gives it one, which the trainer
    then builds stage 2 with, so the run has a windowed stage2 row and a full-attention stage2-full row."""
    out = tmp_path_factory.mktemp("train_step")
    report = ts.main([*TINY_ARGS, "--batch", "2", "--steps", "1", "--warmup-steps", "1", "--window-frames", "2",
                      "--peak-tflops", "1", "--raise-errors", "--json", str(out / "r.json"), "--md", str(out / "r.md")])
    return report, out


def test_the_tiny_geometry_is_the_presets():
    g = ts.Geometry.of(TINY, 17, 8.0, 64, 64)
    t_s, h, w = TINY.plan_grid(17, 8.0, 64, 64)
    assert g.latents == (16, latent_frames(17), 8, 8) == (16, 5, 8, 8)
    assert g.video_tokens == 5 * 4 * 4  # 2x2 patches of 8x8 latents
    assert (t_s, h, w) == (3, 4, 4) and g.plan_tokens == 48 and g.features == (3, 4, 4, TINY.compressor["in_dim"])
    assert g.text == (32, 384)  # MiniLM's padded length, the tiny DiTs' text width


def test_the_wan_geometry_at_480p():
    from semanticgen_core.presets import WAN

    g = ts.Geometry.of(WAN, 81, 16.0, 480, 832)
    assert g.latents == (16, 21, 60, 104) and g.video_tokens == 21 * 30 * 52 == 32760
    assert g.features == (*WAN.plan_grid(81, 16.0, 480, 832), 2048) and g.plan_tokens == 5 * 17 * 30
    assert g.text == (512, 4096)
    with pytest.raises(ts.SemanticGenError, match="multiples of 16"):
        ts.Geometry.of(WAN, 81, 16.0, 480, 830)


@pytest.mark.parametrize("name", ["tiny", "wan2.1-1.3b", "embedded"])
def test_the_bench_knows_the_window_the_trainer_builds_stage2_with(monkeypatch, name):
    """What decides whether stage2-full is run: the window of the LatentDiT the trainer's stage2_task builds
    (the models replaced by stand-ins that note their arguments: no 1.3B model built)."""
    from semanticgen_core.presets import PRESETS

    built = {}

    class Stand(torch.nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            built.update(kwargs)

    monkeypatch.setattr(ts.tr, "LatentDiT", Stand)
    monkeypatch.setattr(ts.tr, "SemanticCompressor", Stand)
    monkeypatch.setattr(Stand, "blocks", [], raising=False)
    args = ts.trainer_args("stage2", 1, 1, Path("unused"), "fp32", True, None, 0)
    own = PRESETS[name]
    for preset in (own, dataclasses.replace(own, stage2={**own.stage2, "window_frames": None})):
        built.clear()
        ts.tr.stage2_task(args, preset)
        assert built["window_frames"] == stage2_window(preset)
    assert stage2_window(PRESETS[name]) == {"tiny": None, "wan2.1-1.3b": 8, "embedded": 4}[name]


def test_every_task_ran_a_real_optimiser_step(tiny_run):
    report, _ = tiny_run
    rows = {r["task"]: r for r in report["rows"]}
    assert list(rows) == ["stage2", "stage1", "stage2-full"]
    for r in rows.values():
        assert r["error"] is None, r
        assert len(r["step_s"]) == 1 and len(r["warmup_s"]) == 1
        assert all(math.isfinite(x) and x > 0 for x in r["step_s"] + r["warmup_s"] + [r["step_mean_s"]])
        assert math.isfinite(r["losses"]["loss"]) and r["losses"]["grad_norm"] > 0
        assert r["optimizer_steps"] == 3  # warm-up, timed, counted: AdamW stepped each time
        assert r["params_changed"] == 1.0  # the sampled trained tensors all moved
        assert r["checkpointing"] and r["batch"] == 2
        assert r["peak_memory_gib"] > 0 and r["gpu_hours_10k"] == pytest.approx(r["step_mean_s"] * 10_000 / 3600)
    # read from the DiT the trainer built: windowed from the preset's stage-2 window, full for the comparison
    assert rows["stage2"]["attention"] == "windows of 2 latent frames"
    assert rows["stage2-full"]["attention"] == "full"
    assert report["stage2_window"] == 2
    assert all(0 <= o < 2 for o in rows["stage2"]["window_offsets"])
    assert rows["stage2-full"]["trained_params_m"] == rows["stage2"]["trained_params_m"]
    assert rows["stage2"]["trained_params_m"] > rows["stage1"]["trained_params_m"] > 0


def test_tokens_are_the_presets_video_and_plan_tokens(tiny_run):
    report, _ = tiny_run
    rows = {r["task"]: r for r in report["rows"]}
    video, plan = 5 * 4 * 4, 3 * 4 * 4
    assert rows["stage2"]["tokens_per_step"] == rows["stage2-full"]["tokens_per_step"] == 2 * (video + plan)
    assert rows["stage1"]["tokens_per_step"] == 2 * plan
    for r in rows.values():
        assert r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / r["step_mean_s"])


def test_analytic_flops_match_torchs_count_of_the_same_step(tiny_run):
    report, _ = tiny_run
    for r in report["rows"]:
        check = r["flops_check"]
        assert check["counted"] > 0
        assert check["ratio"] == pytest.approx(1.0, rel=0.02), (r["task"], check)
        # model FLOPs leave out the recomputation: between 3 x and 4 x the forward, about 3 x
        assert 0.7 < check["analytic_model"] / check["analytic_hardware"] < 0.8
    rows = {r["task"]: r for r in report["rows"]}
    # windows of 2 latent frames cost less attention than full attention over the same tokens
    assert rows["stage2"]["model_flops_per_step"] < rows["stage2-full"]["model_flops_per_step"]


def test_mfu_is_against_the_given_peak(tiny_run):
    report, _ = tiny_run
    assert report["peak_flops"]["datasheet"] == 1e12 and report["peak_flops"]["source"] == "--peak-tflops"
    for r in report["rows"]:
        assert r["mfu"] == pytest.approx(r["model_flops_per_step"] / r["step_mean_s"] / 1e12)
        assert r["hfu"] == pytest.approx(r["hardware_flops_per_step"] / r["step_mean_s"] / 1e12)
        assert 0 < r["mfu"] < r["hfu"]


def test_the_table_and_files(tiny_run, capsys):
    report, out = tiny_run
    md = (out / "r.md").read_text()
    assert md.startswith("## Training step: tiny with random weights, 64x64, 17 frames at 8 fps, batch 2 -- CPU")
    assert f"command: `{report['command']}`" in md and "--preset tiny" in report["command"]
    for task in ("| stage2 | windows of 2 latent frames | 256 |", "| stage1 | full | 96 |",
                 "| stage2-full | full | 256 |"):
        assert task in md
    assert "shifted windows of 2 latent frames" in md and "stage2-full is the same step with full attention" in md
    assert "| CPU-h for 10k steps |" in md and "(this CPU, batch 2)" in md and "FlopCounterMode" in md
    saved = json.loads((out / "r.json").read_text())
    assert [r["task"] for r in saved["rows"]] == [r["task"] for r in report["rows"]]
    assert saved["geometry"]["video_tokens"] == 80 and saved["geometry"]["plan_tokens"] == 48


def test_datasheet_peaks():
    assert ts.datasheet_peak("NVIDIA H100 80GB HBM3")[0] == pytest.approx(989.4e12)
    assert ts.datasheet_peak("NVIDIA H100 PCIe")[0] == pytest.approx(756e12)
    assert ts.datasheet_peak("NVIDIA H200")[0] == pytest.approx(989.4e12)
    peak, why = ts.datasheet_peak("Some GPU")
    assert peak is None and "--peak-tflops" in why


def test_out_of_memory_is_reported_and_the_next_task_runs_on_freed_memory(monkeypatch):
    real_step, real_task = ts.tr.Trainer.train_step, ts.run_task
    alive = []

    def step(trainer, micro):
        if trainer.task.kind == "stage2":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(trainer, micro)

    def run_task(*args, **kwargs):
        row = real_task(*args, **kwargs)
        # a task's trainer, models and optimizer are gone when the next task starts (its peak is its own)
        alive.append(sum(type(o) is ts.tr.Trainer for o in gc.get_objects()))
        return row

    monkeypatch.setattr(ts.tr.Trainer, "train_step", step)
    monkeypatch.setattr(ts, "run_task", run_task)
    report = ts.main([*TINY_ARGS, "--tasks", "stage2", "stage1", "stage2-full", "--steps", "1", "--no-count-flops"])
    rows = {r["task"]: r for r in report["rows"]}
    # tiny's own stage 2 has no window: stage2 is the full-attention row, and stage2-full is not run
    assert list(rows) == ["stage2", "stage1"] and report["stage2_window"] is None
    assert rows["stage2"]["error"] == "out of memory during warm-up"
    assert rows["stage1"]["error"] is None and rows["stage1"]["step_s"]
    assert alive == [0, 0]
    assert "| stage2 | full | - | - |" in ts.markdown(report) and "out of memory during warm-up" in ts.markdown(report)


def test_the_budget_stops_timing_early():
    report = ts.main([*TINY_ARGS, "--tasks", "stage1", "--steps", "100000", "--max-seconds", "2", "--no-count-flops"])
    (row,) = report["rows"]
    assert len(row["step_s"]) < 100000
    assert any("budget stopped it" in n for n in row["notes"]) or row["error"] == "no timed step (budget)"
    assert report["wall_s"] < 20


def test_the_watchdog_ends_a_stuck_run_with_what_finished(tmp_path):
    """A step that never returns: the watchdog prints the report and ends the process (exit 3)."""
    code = f"""
import sys, time
sys.path.insert(0, {str(ROOT / 'bench')!r})
import train_step as ts
ts.WATCHDOG_GRACE = 0.5
ts.tr.Trainer.train_step = lambda trainer, micro: time.sleep(600)
ts.main({[*TINY_ARGS, '--tasks', 'stage1', '--max-seconds', '1', '--json', str(tmp_path / 'r.json')]!r})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "stopped by the watchdog" in done.stdout and "during stage1" in done.stdout
    assert "stopped by the watchdog" in json.loads((tmp_path / "r.json").read_text())["stopped"]
