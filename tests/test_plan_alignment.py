"""Alignment guidance (``plan_alignment.py``): the contrastive objective, the steer, and the shipped aligner.

The shipped aligner is checked on held-out world clips: it must tell a clip's plan from the same plan played
backwards given the clip's caption, and stage 1 guided by it must make plans that move the prompt's way more
often than stage 1 alone (the plans read through the preview decoder and the world's detector, as
``bench/plan_following.py --plan-travel`` reads them).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.plan_alignment import PlanTextAligner, alignment_steer, shot_spans
from semanticgen_core.sampling import SamplingOptions
from semanticgen_core.training import alignment_loss


def tiny_aligner(seed: int = 0) -> PlanTextAligner:
    torch.manual_seed(seed)
    return PlanTextAligner(text_dim=16, plan_dim=4, embed_dim=8, hidden_dim=16, num_heads=2, steps=4, grid=(2, 2))


def test_the_loss_is_infonce_over_the_groups_plans_and_their_reversals():
    aligner = tiny_aligner()
    g = torch.Generator().manual_seed(1)
    plans, text = torch.randn(4, 5, 2, 2, 4, generator=g), torch.randn(4, 7, 16, generator=g)
    out = alignment_loss(aligner, plans, text, group=2)
    expected, order = 0.0, []
    for grp in (slice(0, 2), slice(2, 4)):  # by hand: each group alone
        t = aligner.text_embedding(text[grp])
        p = aligner.plan_embedding(torch.cat([plans[grp], plans[grp].flip(1)]))
        logits = t @ p.T / aligner.config.temperature
        targets = torch.arange(2)
        expected += (F.cross_entropy(logits, targets) + F.cross_entropy(logits[:, :2].T, targets)) / 2 / 2
        order += (logits.diagonal() > logits[:, 2:].diagonal()).tolist()
    torch.testing.assert_close(out["loss"], expected)
    assert out["order"].item() == pytest.approx(np.mean(order))
    # The loss is the mean of the groups' own: what lets the trainer give 1 process's weights on 2.
    halves = [alignment_loss(aligner, plans[k:k + 2], text[k:k + 2], group=2)["loss"] for k in (0, 2)]
    torch.testing.assert_close(out["loss"], sum(halves) / 2)


def test_the_plan_side_reads_any_length_and_the_text_side_ignores_padding():
    aligner = tiny_aligner()
    g = torch.Generator().manual_seed(2)
    for steps, side in ((1, 2), (9, 4), (30, 6)):  # one step, a clip, a long shot on a larger grid
        emb = aligner.plan_embedding(torch.randn(2, steps, side, side, 4, generator=g))
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    text = torch.randn(1, 5, 16, generator=g)
    padded = F.pad(text, (0, 0, 0, 11))  # zeros past the prompt, as the text encoders pad
    torch.testing.assert_close(aligner.text_embedding(padded), aligner.text_embedding(text), rtol=1e-5, atol=1e-6)
    with pytest.raises(SemanticGenError, match=r"plans \[B, T, h, w, 4\]"):
        aligner.plan_embedding(torch.randn(1, 3, 2, 2, 8))


def test_the_steer_climbs_the_score_and_scores_each_shot_against_its_own_prompt():
    aligner = tiny_aligner()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, 8, 2, 2, 4, generator=g)
    text = torch.randn(1, 2, 6, 16, generator=g)
    starts = [float("-inf"), 3.5]  # shot 2 from plan step 4
    assert shot_spans(8, starts, 2) == [(0, slice(0, 4)), (1, slice(4, 8))]
    steer = alignment_steer(aligner, text, 10.0, starts)
    v = steer(x0, 1.0)
    # sampling adds the steer to the velocity, so the predicted clean plan x - sigma v moves along -steer
    before = aligner.score(text[:, 0], x0[:, :4]) + aligner.score(text[:, 1], x0[:, 4:])
    moved = x0 - 1e-3 * v
    after = aligner.score(text[:, 0], moved[:, :4]) + aligner.score(text[:, 1], moved[:, 4:])
    assert after.item() > before.item()
    # changing the second shot's prompt leaves the first shot's steps alone
    other = text.clone()
    other[:, 1] = torch.randn(6, 16, generator=g)
    w = alignment_steer(aligner, other, 10.0, starts)(x0, 1.0)
    torch.testing.assert_close(w[:, :4], v[:, :4])
    assert not torch.allclose(w[:, 4:], v[:, 4:])
    with pytest.raises(SemanticGenError, match="alignment guidance must be at least 0"):
        SamplingOptions(alignment=-1)
    # ComfyUI runs nodes (loading included) under inference mode, where autograd is off: the steer still works.
    with torch.inference_mode():
        loaded = tiny_aligner()
        loaded.load_state_dict({k: v.clone() for k, v in aligner.state_dict().items()}, assign=True)
        assert next(loaded.parameters()).is_inference()
        torch.testing.assert_close(alignment_steer(loaded, text.clone(), 10.0, starts)(x0.clone(), 1.0), v)


def test_the_steer_acts_down_to_its_stop_and_sampling_passes_each_steps_noise_level():
    from semanticgen_core.sampling import denoise, make_scheduler

    aligner = tiny_aligner()
    g = torch.Generator().manual_seed(5)
    x0, text = torch.randn(1, 4, 2, 2, 4, generator=g), torch.randn(1, 6, 16, generator=g)
    steer = alignment_steer(aligner, text, 10.0, stop=0.75)
    torch.testing.assert_close(steer(x0, 0.8), alignment_steer(aligner, text, 10.0)(x0, 0.3))
    assert steer(x0, 0.75) is not None and steer(x0, 0.74) is None
    seen = []

    def spy(x0, sigma):
        seen.append(sigma)
        return steer(x0, sigma)

    opts = SamplingOptions(steps=10, guidance=1.0, seed=0)
    velocity = lambda x, t, context: torch.zeros_like(x)  # noqa: E731
    noise = torch.randn(1, 4, 2, 2, 4, generator=g)
    steered = denoise(velocity, noise, text, None, opts, steer=spy)
    sigmas = [float(s) for s in make_scheduler(opts).sigmas[:-1]]
    assert seen == sigmas  # every step, at its own noise level; the first 5 of 10 (shift 3) are at or above 0.75
    assert sum(s >= 0.75 for s in sigmas) == 5
    plain = denoise(velocity, noise, text, None, opts)
    every_step = denoise(velocity, noise, text, None, opts, steer=alignment_steer(aligner, text, 10.0))
    assert not torch.allclose(steered, plain) and not torch.allclose(steered, every_step)
    with pytest.raises(SemanticGenError, match="where alignment guidance stops must be in 0..1"):
        SamplingOptions(alignment_stop=1.5)


@pytest.fixture(scope="module")
def embedded_pipe():
    from semanticgen_core.pipeline import SemanticGenPipeline

    return SemanticGenPipeline.embedded(with_encoder=True)


def moving_clips(n: int, first: int):
    from semanticgen_world import evaluation as ev, world

    clips = ev.heldout_clips(120, world.HELDOUT_SEED_START + first, 33, 64, 8.0)
    moving = [c for c in clips if ev.DIRECTION_GROUP[world.parse_caption(c.caption)[0]["motion"]]
              in ("rightward", "leftward", "up", "down")]
    return moving[:n]


def test_the_shipped_aligner_tells_a_held_out_plan_from_its_reversal(embedded_pipe):
    from semanticgen_world import evaluation as ev

    right = 0
    clips = moving_clips(16, first=200)
    for clip in clips:
        frames = torch.from_numpy(ev.as_uint8_frames(clip.frames).astype("float32") / 255.0)
        plan = embedded_pipe.encode_video(frames, clip.fps, clip.caption).tokens[None]
        text = embedded_pipe.text_encoder.encode([clip.caption])[0]
        with torch.no_grad():
            right += int(embedded_pipe.aligner.score(text, plan) > embedded_pipe.aligner.score(text, plan.flip(1)))
    assert right >= 14, f"{right} of {len(clips)}"


def plan_goes_the_prompts_way(pipe, decoder, clip, seed: int, alignment: float) -> bool:
    import sys
    from pathlib import Path

    from semanticgen_core.plan_preview import preview_frames
    from semanticgen_world import evaluation as ev, world

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import plan_following as pf

    target = world.parse_caption(clip.caption)[0]
    d = pipe.preset.defaults
    opts = SamplingOptions(steps=int(d["steps"]), guidance=float(d["guidance"]), seed=seed, alignment=alignment)
    plan = pipe.generate_plan(clip.caption, 33, 8.0, 64, 64, opts)
    with torch.no_grad():
        small = preview_frames(decoder, plan.tokens).permute(0, 3, 1, 2)
    big = F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    track = pf.first_track((big.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy(), target["color"])
    travel = np.zeros(2) if track is None else pf.travel(track)
    return travel @ np.array(pf.UNIT[ev.DIRECTION_GROUP[target["motion"]]]) >= ev.MOVE


def test_alignment_guidance_turns_stage_one_plans_the_prompts_way(embedded_pipe):
    from semanticgen_core.plan_preview import embedded_preview

    decoder = embedded_preview().modules["preview"]
    assert embedded_pipe.preset.defaults["alignment"] > 0  # the shipped default guides
    clips = moving_clips(12, first=300)
    guided = sum(plan_goes_the_prompts_way(embedded_pipe, decoder, c, i, None) for i, c in enumerate(clips))
    plain = sum(plan_goes_the_prompts_way(embedded_pipe, decoder, c, i, 0.0) for i, c in enumerate(clips))
    assert guided >= 7 and guided >= plain + 4, f"guided {guided}, plain {plain} of {len(clips)}"  # 8 and 2
