"""VideoVAE: normalisation, 4k+1 frames, streaming, interrupts, file formats; the VAE training recipe."""

import json
import math
import multiprocessing
import os
import re
import signal
import time

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from safetensors import safe_open
from safetensors.torch import save_file

from semanticgen_core.checkpoints import init_empty_weights
from semanticgen_core.errors import CheckpointError, Interrupted, SemanticGenError, ShapeError
from semanticgen_core.model_files import read_metadata
from semanticgen_world.recipes import train_vae
from semanticgen_core.vae import VideoVAE, _set_conv_layout, valid_frame_counts, wan21_vae_config

# Wan2.1's layout (two res blocks, four levels) at toy width, so the original-key test covers every block.
CONFIG = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
              temperal_downsample=[False, True, True],
              latents_mean=[0.1 * i - 0.5 for i in range(16)], latents_std=[0.5 + 0.1 * i for i in range(16)])


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE.from_config(CONFIG).eval()


def frames(n: int, h: int = 16, w: int = 24) -> torch.Tensor:
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(n))


def reference_moments(vae: VideoVAE, video: torch.Tensor) -> torch.Tensor:
    """diffusers' own one-shot encode, posterior mean (raw)."""
    with torch.no_grad():
        return vae.wan.encode(video.permute(3, 0, 1, 2)[None] * 2 - 1).latent_dist.mean


def test_normalisation_round_trip(vae):
    video = frames(9)
    latents, n = vae.encode(video)
    assert n == 9 and latents.shape == (1, 16, 3, 2, 3)
    raw = reference_moments(vae, video)
    assert torch.allclose(vae.denormalize(latents), raw, atol=1e-5)
    mean, std = torch.tensor(CONFIG["latents_mean"]), torch.tensor(CONFIG["latents_std"])
    assert torch.allclose(latents, (raw - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1), atol=1e-5)
    assert torch.equal(vae.encode(video)[0], latents)  # posterior mean: deterministic
    sampled, _ = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(sampled, latents)


def test_pad_to_4k_plus_1_and_trim(vae):
    assert valid_frame_counts(10) == (9, 13) and valid_frame_counts(9) == (9, 13)
    video = frames(10)
    latents, n = vae.encode(video, pad=True)
    assert n == 10 and latents.shape[2] == 4  # padded to 13 frames
    repeated = torch.cat([video, video[-1:].expand(3, -1, -1, -1)])
    assert torch.allclose(latents, vae.encode(repeated)[0], atol=1e-6)
    assert vae.decode(latents, num_frames=n).shape == (10, 16, 24, 3)
    assert vae.decode(latents).shape == (13, 16, 24, 3)


def test_decode_steps_fit_the_memory_budget():
    from semanticgen_core.vae import DECODE_BUDGET, decode_chunk, decode_memory

    assert decode_memory(256, 256, 1, torch.bfloat16) == 7000 * 32 * 32 * 64 * 2  # ComfyUI core's estimate
    assert decode_chunk(9, 64, 64, torch.float32) == 8  # a 4 s clip of the embedded default: one step after frame 0
    assert decode_chunk(241, 64, 64, torch.float32) == DECODE_BUDGET // decode_memory(64, 64, 1, torch.float32)
    assert decode_chunk(16, 256, 256, torch.bfloat16) == 1  # a 256-pixel tile at real size: one latent frame
    assert decode_chunk(16, 480, 832, torch.bfloat16, tile=256) == 1  # 480p in 256-pixel tiles: the same
    assert decode_memory(480, 832, 2, torch.bfloat16, tile=256) == 2 * decode_memory(256, 256, 1, torch.bfloat16)
    assert decode_memory(128, 128, 1, torch.float32, tile=256) == decode_memory(128, 128, 1, torch.float32)
    assert decode_chunk(1, 64, 64, torch.float32) == 1


def test_bad_frame_count_and_size_are_errors(vae):
    with pytest.raises(ShapeError, match=r"10 frames.*9 or 13.*pad=True"):
        vae.encode(frames(10))
    with pytest.raises(ShapeError, match=r"30x24.*height 24 or 32"):
        vae.encode(frames(9, h=30))
    with pytest.raises(ShapeError, match=r"\[1, 16, T', H/8, W/8\]"):
        vae.decode(torch.zeros(1, 4, 3, 2, 2))
    with pytest.raises(ShapeError, match="num_frames=10"):
        vae.decode(torch.zeros(1, 16, 2, 2, 2), num_frames=10)


def test_streamed_decode_equals_one_shot(vae):
    latents, _ = vae.encode(frames(17))
    chunks = list(vae.decode_iter(latents, chunk=1))
    assert [c.shape[0] for c in chunks] == [1, 4, 4, 4, 4]
    streamed = torch.cat(chunks)
    with torch.no_grad():  # diffusers' one-shot decode
        reference = (vae.wan.decode(vae.denormalize(latents)).sample[0].permute(1, 2, 3, 0) + 1) / 2
    assert torch.allclose(streamed, reference, atol=1e-5)
    assert torch.allclose(vae.decode(latents, chunk=8), streamed, atol=1e-5)
    assert [c.shape[0] for c in vae.decode_iter(latents, num_frames=7, chunk=1)] == [1, 4, 2]
    # by default a short clip decodes in two steps (the first frame, then the rest): no per-frame overhead
    assert [c.shape[0] for c in vae.decode_iter(latents)] == [1, 16]
    assert torch.allclose(vae.decode(latents), streamed, atol=1e-5)
    # chunked encode equals diffusers' too
    assert torch.allclose(vae.denormalize(vae.encode(frames(17), chunk=3)[0]),
                          reference_moments(vae, frames(17)), atol=1e-5)


def test_cpu_decode_runs_channels_last_to_the_same_frames(tmp_path):
    torch.manual_seed(0)
    fresh = VideoVAE.from_config(CONFIG).eval()
    conv = fresh.wan.decoder.conv_in.weight
    assert conv.is_contiguous()  # diffusers' layout until the first pass
    latents = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # diffusers' one-shot decode in its own layout
        reference = (fresh.wan.decode(fresh.denormalize(latents)).sample[0].permute(1, 2, 3, 0) + 1) / 2
    with torch.inference_mode():  # as ComfyUI runs nodes: the weights must stay plain tensors
        decoded = fresh.decode(latents, chunk=2)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_inference()
    assert fresh.wan.decoder.up_blocks[0].upsamplers[0].resample[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(decoded, reference.clamp(0, 1), atol=1e-5)
    fresh.save(tmp_path / "vae.safetensors")  # safetensors stores contiguous tensors only: saving packs them
    assert torch.equal(VideoVAE.from_pretrained(tmp_path / "vae.safetensors").decode(latents, chunk=2), decoded)
    _set_conv_layout(fresh.wan, torch.device("cuda"))  # another device type: back to diffusers' layout
    assert conv.is_contiguous() and torch.allclose(fresh.decode(latents), decoded, atol=1e-5)
    with torch.inference_mode():  # a VAE loaded under inference mode, as ComfyUI loads it, decodes there too
        torch.manual_seed(0)
        loaded = VideoVAE.from_config(CONFIG).eval()
        assert torch.allclose(loaded.decode(latents), decoded, atol=1e-5)
        assert loaded.wan.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_should_stop_interrupts_between_chunks(vae):
    latents, _ = vae.encode(frames(13))
    calls = []
    with pytest.raises(Interrupted):
        vae.decode(latents, chunk=1, progress=lambda i, n: calls.append((i, n)), should_stop=lambda: len(calls) >= 2)
    assert calls == [(1, 4), (2, 4)]
    with pytest.raises(Interrupted):
        vae.encode(frames(13), should_stop=lambda: True)
    assert vae.decode(latents).shape[0] == 13  # still usable


def to_original_wan_keys(state: dict, num_res_blocks: int = 2) -> dict:
    """diffusers AutoencoderKLWan names -> the original Wan2.1 ``WanVAE_`` names (wan/modules/vae.py):
    flat ``downsamples``/``upsamples`` lists, ``middle`` and ``head`` Sequentials, ``residual`` Sequentials
    (RMS_norm, SiLU, conv, RMS_norm, SiLU, Dropout, conv), ``conv1``/``conv2`` around the latent."""
    per_level = num_res_blocks + 2  # the decoder's res blocks (num_res_blocks + 1), then an upsampler
    out = {}
    for key, value in state.items():
        for a, b in ((".norm1.", ".residual.0."), (".conv1.", ".residual.2."), (".norm2.", ".residual.3."),
                     (".conv2.", ".residual.6."), (".conv_shortcut.", ".shortcut.")):
            key = key.replace(a, b)
        key = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.",
                     lambda m: f"{m[1]}.middle.{2 * int(m[2])}.", key)
        key = re.sub(r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1.", key)
        key = re.sub(r"^encoder\.down_blocks\.", "encoder.downsamples.", key)
        key = re.sub(r"^decoder\.up_blocks\.(\d)\.resnets\.(\d)\.",
                     lambda m: f"decoder.upsamples.{int(m[1]) * per_level + int(m[2])}.", key)
        key = re.sub(r"^decoder\.up_blocks\.(\d)\.upsamplers\.0\.",
                     lambda m: f"decoder.upsamples.{int(m[1]) * per_level + num_res_blocks + 1}.", key)
        for a, b in ((r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
                     (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
                     (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
                     (r"^quant_conv\.", "conv1."), (r"^post_quant_conv\.", "conv2.")):
            key = re.sub(a, b, key)
        out[key] = value
    return out


ORIGINAL_KEYS = ["encoder.conv1.weight", "encoder.downsamples.0.residual.0.gamma",
                 "encoder.downsamples.2.resample.1.weight", "encoder.downsamples.5.time_conv.weight",
                 "encoder.middle.1.to_qkv.weight", "encoder.head.2.bias",
                 "decoder.middle.2.residual.6.weight", "decoder.upsamples.3.time_conv.weight",
                 "decoder.upsamples.4.shortcut.weight", "decoder.upsamples.11.resample.1.weight",
                 "decoder.upsamples.14.residual.3.gamma", "decoder.head.0.gamma", "conv1.weight", "conv2.bias"]


def test_real_wan21_key_layout_round_trips():
    with init_empty_weights():  # the full-size Wan2.1 VAE, without memory
        full = AutoencoderKLWan(**wan21_vae_config())
    original = to_original_wan_keys(full.state_dict())
    assert set(ORIGINAL_KEYS) <= set(original)
    assert original["decoder.conv1.weight"].shape == (384, 16, 3, 3, 3)
    assert set(convert_wan_vae_to_diffusers(original)) == set(full.state_dict())


def test_single_file_in_wan_layout_loads_strictly(vae, tmp_path):
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file({k: v.contiguous() for k, v in to_original_wan_keys(vae.wan.state_dict()).items()}, path)
    loaded = VideoVAE.from_pretrained(path, config=CONFIG)  # strict: raises on any missing/unexpected key
    for key, value in vae.wan.state_dict().items():
        assert torch.equal(loaded.wan.state_dict()[key], value), key
    latents, _ = vae.encode(frames(5))
    assert torch.equal(loaded.encode(frames(5))[0], latents)
    assert torch.equal(loaded.decode(latents), vae.decode(latents))
    # the same file does not fit the full-size Wan2.1 VAE (the default config): every shape is named
    with pytest.raises(CheckpointError, match="Shape mismatches"):
        VideoVAE.from_pretrained(path)


def test_missing_file_names_path_and_comfy_folder(tmp_path):
    missing = tmp_path / "wan_2.1_vae.safetensors"
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(missing))}.*models/vae"):
        VideoVAE.from_pretrained(missing)


def test_diffusers_folder_loads(vae, tmp_path):
    vae.wan.save_pretrained(tmp_path / "repo" / "vae")
    loaded = VideoVAE.from_pretrained(tmp_path / "repo")
    latents, _ = vae.encode(frames(5))
    assert torch.equal(loaded.encode(frames(5))[0], latents)


def test_embedded_format_round_trips_exactly(vae, tmp_path):
    path = tmp_path / "vae.safetensors"
    vae.save(path, info={"steps": 7})
    assert json.loads(read_metadata(path)["info"]) == {"steps": 7}
    loaded = VideoVAE.from_pretrained(path)
    assert loaded.config.latents_std == CONFIG["latents_std"]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vae.state_dict().items())
    latents, _ = vae.encode(frames(5))
    assert torch.equal(loaded.decode(latents), vae.decode(latents))


TRAIN = dict(batch=2, frames=5, size=32, save_every=100, log_every=1, eval_every=2,
             config={**CONFIG, "num_res_blocks": 1})


def test_train_step_improves_reconstruction():
    torch.manual_seed(0)
    model = VideoVAE.from_config(TRAIN["config"])
    x, weight = train_vae.clip_batch([1, 2], frames=5, size=32, object_weight=4.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = train_vae.psnr(model, x)
    for _ in range(5):
        parts = train_vae.train_step(model, optimizer, x, kl_weight=1e-6, weight=weight)
    assert set(parts) == {"l1", "mse", "grad", "kl", "loss"}
    assert train_vae.psnr(model, x) > before + 0.5


def test_object_weights_cover_the_objects_of_the_label_maps():
    from semanticgen_world.world import label_maps, sample_clip

    x, weight = train_vae.clip_batch([3], frames=5, size=32, object_weight=4.0)
    objects = torch.from_numpy(label_maps(sample_clip(3, 5, 32, 32, 8.0).shots, 32, 32)["object"] >= 0)
    assert objects.any() and not objects.all()
    assert (weight[0, 0][objects] == 4.0).all()             # every object pixel is weighted...
    assert (weight[0, 0] == 4.0).sum() > objects.sum()       # ...and a rim around it
    assert (weight[0, 0] == 1.0).sum() > 0.5 * weight[0, 0].numel()  # the background keeps weight 1
    assert torch.equal(train_vae.clip_batch([3], frames=5, size=32)[1], torch.ones_like(weight))


def test_training_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    train_vae.train(out, steps=2, **TRAIN)
    assert (out / "last.pt").is_file() and (out / "config.json").is_file()
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["step"] == 2
    train_vae.train(out, steps=3, **TRAIN)
    assert "resumed" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 3
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1, 2] and "probe_psnr" in logged[0]
    meta = read_metadata(out / "vae.safetensors")
    assert json.loads(meta["info"])["steps"] == 3
    stats = json.loads(meta["config"])["vae"]
    assert stats["latents_mean"] != CONFIG["latents_mean"] and min(stats["latents_std"]) > 0
    # weights only: resumes from the exported file with a fresh optimizer
    (out / "last.pt").unlink()
    vae = train_vae.train(out, steps=4, **TRAIN)
    assert "fresh optimizer" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 4
    assert isinstance(vae, VideoVAE)


def test_decoder_only_training_keeps_the_latents(tmp_path):
    out = tmp_path / "run"
    train_vae.train(out, steps=2, **TRAIN)
    before = VideoVAE.from_pretrained(out / "vae.safetensors")
    (out / "last.pt").unlink()  # start the decoder-only run from the exported weights, as from a shipped VAE
    train_vae.train(out, steps=4, decoder_only=True, **TRAIN)
    train_vae.train(out, steps=5, **TRAIN)  # resumed without the flag: the folder stays decoder-only
    after = VideoVAE.from_pretrained(out / "vae.safetensors")
    video = torch.from_numpy(train_vae.sample_clip(5, 5, 32, 32, 8.0).frames).float() / 255
    with torch.no_grad():
        latents, _ = after.encode(video)
        assert torch.equal(latents, before.encode(video)[0])  # caches and stages stay valid
        assert not torch.equal(after.decode(latents), before.decode(latents))
    info = json.loads(read_metadata(out / "vae.safetensors")["info"])
    assert info["steps"] == 5 and info["encoder_frozen_from"] == 2


@pytest.fixture
def no_hang():
    """A test that waits on worker processes fails instead of hanging the suite: from 90 s on, SIGALRM (every
    5 s, for a clean-up that hangs too) interrupts the wait with a TimeoutError, even a blocked read, lock or
    join in the main thread (where the training loop has to run: it installs signal handlers), but only while
    this module's code is running, never in pytest's own."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum, frame):
        while frame is not None and frame.f_code.co_filename != __file__:
            frame = frame.f_back
        if frame is not None:
            raise TimeoutError("still waiting after 90 s: a wait on a worker process hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 90, 5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def clip_workers() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("clip worker")]


def test_batches_rendered_by_workers_are_the_steps_own(no_hang):
    made_here = train_vae.batches(7, 2, 5, 32, 4.0)
    by_workers = train_vae.batches(7, 2, 5, 32, 4.0, workers=2)
    try:
        for _ in range(3):  # steps 7, 8 and 9, whoever renders them
            (x, w), (xw, ww) = next(made_here), next(by_workers)
            assert torch.equal(x, xw) and torch.equal(w, ww)
        assert len(clip_workers()) == 2
    finally:
        start = time.monotonic()
        by_workers.close()  # the workers are busy rendering steps ahead: closing must not wait on them
    assert time.monotonic() - start < 10 and clip_workers() == []
    assert not torch.equal(x, next(train_vae.batches(7, 2, 5, 32, 4.0))[0])  # step 9 is not step 7


def test_a_worker_that_dies_mid_run_is_an_error_that_names_it(tmp_path, monkeypatch, no_hang, capsys):
    """A worker that dies (here by SIGTERM, the signal of the hung CI runs) stops the run within seconds with
    an error naming it, instead of a wait without end; the checkpoint is saved at the step whose clips never
    came, and the run resumes from there."""
    out, killed = tmp_path / "run", []
    train_step = train_vae.train_step

    def step_then_kill_a_worker(*args, **kwargs):
        parts = train_step(*args, **kwargs)
        if not killed:  # after step 0: the worker is rendering steps 1 and 2 ahead
            killed.append(clip_workers()[0])
            os.kill(killed[0].pid, signal.SIGTERM)  # our own child, alive and not yet reaped: its pid is its own
            killed.append(time.monotonic())
        return parts

    monkeypatch.setattr(train_vae, "train_step", step_then_kill_a_worker)
    with pytest.raises(SemanticGenError) as error:
        train_vae.train(out, steps=50, workers=1, **TRAIN)
    worker, when = killed
    assert time.monotonic() - when < 20  # noticed within seconds, not when a timeout or CI gives up
    message = str(error.value)
    assert f"clip worker 0 (pid {worker.pid})" in message and "was killed by SIGTERM" in message
    assert "checkpoint saved; run it again to resume" in message
    lost = int(re.search(r"rendering the clips of step (\d+)", message)[1])  # 1, or 2 if step 1's was sent whole
    assert lost >= 1 and torch.load(out / "last.pt", weights_only=False)["step"] == lost  # saved at that step
    assert clip_workers() == []  # nothing left behind
    monkeypatch.setattr(train_vae, "train_step", train_step)
    train_vae.train(out, steps=lost + 2, **TRAIN)  # resumes from the step it did not get
    assert "resumed" in capsys.readouterr().out
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(lost + 2))


def test_a_fresh_wider_decoder_on_the_frozen_encoder(tmp_path):
    out = tmp_path / "run"
    train_vae.train(out, steps=2, **TRAIN)
    before = VideoVAE.from_pretrained(out / "vae.safetensors")
    with pytest.raises(SemanticGenError, match="--decoder-base-dim needs --decoder-only"):
        train_vae.train(out, steps=3, decoder_base_dim=12, **TRAIN)
    (out / "last.pt").unlink()
    train_vae.train(out, steps=3, decoder_only=True, decoder_base_dim=12, **TRAIN)
    with pytest.raises(SemanticGenError, match="decoder is 12 wide, not 16: give another --out"):
        train_vae.train(out, steps=4, decoder_base_dim=16, **TRAIN)
    after = VideoVAE.from_pretrained(out / "vae.safetensors")
    assert train_vae.decoder_width(after) == 12 and train_vae.decoder_width(before) == 4
    assert after.config["latents_mean"] == before.config["latents_mean"]  # the encoder's statistics are kept
    video = torch.from_numpy(train_vae.sample_clip(5, 5, 32, 32, 8.0).frames).float() / 255
    with torch.no_grad():
        latents = after.encode(video)[0]
        assert torch.equal(latents, before.encode(video)[0])  # caches and stages stay valid
        assert after.decode(latents).shape == before.decode(latents).shape
    after.save(tmp_path / "half.safetensors", dtype=torch.float16)  # half the bytes, loaded back as float32
    with safe_open(str(tmp_path / "half.safetensors"), "pt") as f:
        assert f.get_tensor("vae.wan.decoder.conv_in.weight").dtype == torch.float16
    half = VideoVAE.from_pretrained(tmp_path / "half.safetensors")
    assert half.wan.decoder.conv_in.weight.dtype == torch.float32
    torch.testing.assert_close(half.wan.decoder.conv_in.weight, after.wan.decoder.conv_in.weight, rtol=1e-3, atol=1e-4)
    empty = tmp_path / "empty"
    with pytest.raises(SemanticGenError, match="copy the VAE file to .*vae.safetensors first"):
        train_vae.train(empty, steps=1, decoder_only=True, decoder_base_dim=12, **TRAIN)


def test_eval_reports_each_clip_and_each_frame(tmp_path):
    out = tmp_path / "run"
    train_vae.train(out, steps=1, **TRAIN)
    per_clip, per_frame = train_vae.evaluate(out / "vae.safetensors", frames=9, size=32)
    assert len(per_clip) == len(train_vae.EVAL_SEEDS) and len(per_frame) == 9
    # Both views average the same squared errors (every clip has 9 frames), so they agree on the total.
    total = [-10 * math.log10(sum(10 ** (-p / 10) for p in ps) / len(ps)) for ps in (per_clip, per_frame)]
    assert total[0] == pytest.approx(total[1], abs=1e-4) and 0 < total[0] < 60
    assert train_vae.latent_frame_groups([1, 2, 3, 4, 5, 6, 7, 8, 9]) == "0: 1.0, 1-4: 3.5, 5-8: 7.5"
