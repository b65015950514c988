"""semantic_encoder.py: Qwen2.5-VL vision tower preprocessing, token layout, and checkpoint loading."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from safetensors.torch import save_file

from semanticgen_core.errors import CheckpointError, ShapeError
from semanticgen_core.semantic_encoder import (
    QwenVisionEncoder,
    qwen25vl_3b_vision_config,
    qwen_patchify,
    tiny_vision_config,
)



def _encoder(seed: int = 0, **overrides) -> QwenVisionEncoder:
    """A random tiny tower; ``overrides`` change its config (e.g. depth=0)."""
    config = tiny_vision_config()
    for k, v in overrides.items():
        setattr(config, k, v)
    torch.manual_seed(seed)
    return QwenVisionEncoder.from_config(config)


def _video(t: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(seed))


# --- preprocessing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "geometry, size",
    [({}, (64, 96)), ({"patch_size": 14, "depth": 0, "fullatt_block_indexes": []}, (56, 84))],
    ids=["tiny-p8", "qwen-p14"],
)
def test_preprocess_matches_qwen_pil_processor(geometry, size):
    # Qwen's own processor, minus torchvision: its PIL image path (an image is a 2-frame clip of itself).
    pil = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    enc = _encoder(**geometry)
    processor = pil.Qwen2VLImageProcessorPil(
        patch_size=enc.patch_size, merge_size=enc.merge_size, temporal_patch_size=enc.temporal_patch_size
    )
    rng = np.random.default_rng(0)
    for _ in range(2):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        ref = processor(images=[image], return_tensors="pt")
        frames = torch.from_numpy(image).float()[None] / 255
        pixel_values, grid_thw = enc.preprocess(frames, fps=enc.sample_fps)
        assert grid_thw.tolist() == ref["image_grid_thw"].tolist()
        torch.testing.assert_close(pixel_values, ref["pixel_values"], atol=1e-5, rtol=0)


def test_patch_rows_follow_the_conv3d_kernel_layout():
    # Each row must be (C, t, y, x) as the tower's Conv3d reads it, rows in merge-group order; the image
    # processor cannot check the time axis (its two frames are equal), the tower's own conv can.
    enc = _encoder()
    video = torch.randn(4, 3, 32, 48)
    pixel_values, grid_thw = qwen_patchify(video, patch_size=8, temporal_patch_size=2, merge_size=2)
    assert grid_thw.tolist() == [[2, 4, 6]]
    rows = enc.model.patch_embed(pixel_values)
    direct = enc.model.patch_embed.proj(rearrange(video, "t c h w -> 1 c t h w"))[0]
    direct = rearrange(direct, "d t (h m1) (w m2) -> (t h w m1 m2) d", m1=2, m2=2)
    torch.testing.assert_close(rows, direct, atol=1e-5, rtol=1e-5)


def test_sample_indices():
    enc = _encoder()  # sample_fps 1.6
    assert enc.sample_indices(49, 24) == [0, 15, 30, 45]  # sample times 0, 0.625, 1.25, 1.875 s
    assert enc.sample_indices(45, 24) == [0, 15, 30]  # 1.875 s is past the last frame (44/24 s)
    assert enc.sample_indices(46, 24) == [0, 15, 30, 45]
    assert enc.sample_indices(1, 24) == [0]
    assert enc.sample_indices(30, 8) == [0, 5, 10, 15, 20, 25]
    assert enc.sample_indices(5, 1.0) == [0, 1, 2, 3, 4]  # below sample_fps: all frames
    with pytest.raises(ValueError, match="fps must be positive"):
        enc.sample_indices(5, 0)


@pytest.mark.parametrize(
    "t, h, w, fps, expected",
    [
        (49, 64, 64, 24.0, (2, 4, 4)),  # 4 sampled frames
        (5, 60, 100, 1.6, (3, 4, 6)),  # 5 frames padded to 6; 60x100 resized to 64x96
        (1, 32, 32, 24.0, (1, 2, 2)),  # 1 frame padded to 2
        (30, 48, 80, 8.0, (3, 3, 5)),  # 6 sampled frames
        (3, 70, 40, 1.0, (2, 4, 2)),
    ],
)
def test_grid_shape_matches_encode(t, h, w, fps, expected):
    enc = _encoder(depth=1, fullatt_block_indexes=[0])
    assert enc.grid_shape(t, h, w, fps) == expected
    out = enc.encode(_video(t, h, w), fps)
    assert out.shape == (*expected, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.std() > 0


def test_resampling_encodes_the_picked_frames():
    enc = _encoder()
    video = _video(49, 64, 64)
    torch.testing.assert_close(enc.encode(video, 24), enc.encode(video[[0, 15, 30, 45]], 1.6))


def test_bad_frames_layout():
    with pytest.raises(ShapeError, match=r"\[4, 3, 64, 64\].*expected \[T, H, W, 3\]"):
        _encoder().encode(torch.rand(4, 3, 64, 64), 24)


# --- token layout ---------------------------------------------------------------------------------------


def _changed(enc: QwenVisionEncoder, video: torch.Tensor, t: int, r: int, c: int) -> torch.Tensor:
    """Mask [T_s, h, w] of output tokens that change when the 16x16 block (r, c) of frame t changes."""
    edited = video.clone()
    edited[t, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = torch.rand(16, 16, 3)
    fps = enc.sample_fps  # no resampling: frame t is in temporal patch t // 2
    return (enc.encode(edited, fps) - enc.encode(video, fps)).abs().amax(-1) > 0


def test_layout_each_token_sees_only_its_own_block():
    # Zero blocks: a token is merger(patch_embed(its 2 frames x 16x16 pixels)), so one pixel block must
    # change exactly one token, at the matching (t, row, col) of a non-square grid.
    enc = _encoder(depth=0, fullatt_block_indexes=[])
    video = _video(4, 64, 96)
    for t, r, c in [(0, 0, 0), (3, 1, 4), (2, 3, 5), (1, 2, 1)]:
        expected = torch.zeros(2, 4, 6, dtype=torch.bool)
        expected[t // 2, r, c] = True
        assert torch.equal(_changed(enc, video, t, r, c), expected), (t, r, c)


def test_layout_window_attention_stays_in_its_window():
    # Window attention only (window_size 32 px = 2x2 tokens): an edit spreads over exactly its window,
    # which checks that the tower's window order is undone and matches our (row, col) grid.
    enc = _encoder(depth=2, fullatt_block_indexes=[])
    video = _video(4, 64, 96)
    expected = torch.zeros(2, 4, 6, dtype=torch.bool)
    expected[0, 0:2, 4:6] = True
    assert torch.equal(_changed(enc, video, 1, 1, 4), expected)
    expected = torch.zeros(2, 4, 6, dtype=torch.bool)
    expected[1, 2:4, 0:2] = True
    assert torch.equal(_changed(enc, video, 2, 3, 0), expected)


def test_layout_full_attention_stays_in_its_temporal_patch():
    # The tiny default ends in full attention, which spans one temporal patch (2 frames), not the clip.
    enc = _encoder()
    video = _video(4, 64, 64)
    expected = torch.zeros(2, 4, 4, dtype=torch.bool)
    expected[1] = True
    assert torch.equal(_changed(enc, video, 2, 0, 0), expected)


def test_encoder_is_frozen():
    enc = _encoder()
    enc.train()
    assert not enc.training and not enc.model.training
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.encode(_video(2, 32, 32), 1.6).requires_grad


# --- loading ----------------------------------------------------------------------------------------------


def _full_checkpoint(enc: QwenVisionEncoder, prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """The tower's tensors as a full Qwen2.5-VL checkpoint holds them, with some language-model keys."""
    state = {prefix + k: v.clone() for k, v in enc.model.state_dict().items()}
    state["model.language_model.embed_tokens.weight"] = torch.randn(10, 8)
    state["lm_head.weight"] = torch.randn(10, 8)
    return state


def _write_config(folder: Path) -> None:
    vision = tiny_vision_config().to_dict()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "vision_config": vision}))


def test_from_checkpoint_single_file_and_shards(tmp_path):
    enc = _encoder(seed=3)
    video = _video(6, 64, 64)
    reference = enc.encode(video, 24)

    single = tmp_path / "single"
    single.mkdir()
    save_file(_full_checkpoint(enc), single / "model.safetensors")
    _write_config(single)
    loaded = QwenVisionEncoder.from_checkpoint(single)
    assert loaded.name == "qwen2.5-vl-vision:single" and loaded.feature_dim == 64
    assert torch.equal(loaded.encode(video, 24), reference)
    assert not any(p.requires_grad for p in loaded.parameters())

    # Newer layout ("model.visual."), two shards, config passed explicitly.
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    state = _full_checkpoint(enc, prefix="model.visual.")
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for shard, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, sharded / shard)
    weight_map = {k: shard for shard, shard_keys in shards.items() for k in shard_keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = QwenVisionEncoder.from_checkpoint(sharded, config=tiny_vision_config(), dtype=torch.float64)
    assert loaded.model.patch_embed.proj.weight.dtype == torch.float64
    torch.testing.assert_close(loaded.encode(video, 24), reference, atol=1e-5, rtol=1e-4)


def _save_single(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "ckpt.safetensors"
    save_file(state, path)
    return path


def test_from_checkpoint_key_errors(tmp_path):
    enc = _encoder()
    config = tiny_vision_config()

    state = _full_checkpoint(enc)
    del state["visual.blocks.1.attn.qkv.bias"]
    with pytest.raises(CheckpointError, match=r"vision tower.*Missing keys \(1\): blocks\.1\.attn\.qkv\.bias"):
        QwenVisionEncoder.from_checkpoint(_save_single(tmp_path, state), config)

    state = _full_checkpoint(enc)
    state["visual.blocks.7.norm1.weight"] = torch.ones(64)
    with pytest.raises(CheckpointError, match=r"Unexpected keys \(1\): blocks\.7\.norm1\.weight"):
        QwenVisionEncoder.from_checkpoint(_save_single(tmp_path, state), config)

    state = _full_checkpoint(enc)
    state["visual.merger.mlp.2.bias"] = torch.zeros(65)
    with pytest.raises(CheckpointError, match=r"merger\.mlp\.2\.bias: checkpoint \[65\] vs model \[64\]"):
        QwenVisionEncoder.from_checkpoint(_save_single(tmp_path, state), config)

    state = {k: v for k, v in _full_checkpoint(enc).items() if not k.startswith("visual.")}
    with pytest.raises(CheckpointError, match=r"'visual\.patch_embed\.proj\.weight', 'model\.visual\.patch_embed"):
        QwenVisionEncoder.from_checkpoint(_save_single(tmp_path, state), config)


def test_from_checkpoint_file_errors(tmp_path):
    config = tiny_vision_config()
    with pytest.raises(CheckpointError, match=r"absent\.safetensors does not exist"):
        QwenVisionEncoder.from_checkpoint(tmp_path / "absent.safetensors", config)

    path = _save_single(tmp_path, _full_checkpoint(_encoder()))
    with pytest.raises(CheckpointError, match=r"config\.json is missing.*qwen25vl_3b_vision_config"):
        QwenVisionEncoder.from_checkpoint(path)  # no config given and none next to the file

    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"Cannot read safetensors file .*ckpt\.safetensors"):
        QwenVisionEncoder.from_checkpoint(path, config)


def test_3b_config_geometry():
    enc_config = qwen25vl_3b_vision_config()
    assert (enc_config.depth, enc_config.hidden_size, enc_config.out_hidden_size) == (32, 1280, 2048)
    assert enc_config.window_size // enc_config.spatial_merge_size // enc_config.patch_size == 4  # tokens/window
