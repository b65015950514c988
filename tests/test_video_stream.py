"""SemanticGen VAE Decode to Video: decoded chunks go straight into the mp4 (never the whole video in
memory), the file matches VAE Decode's frames, and an interrupt or error leaves no file, final or temporary."""

from __future__ import annotations

import weakref

import pytest
import torch


@pytest.fixture
def vae(pack, tiny_models):
    (vae,) = pack.NODE_CLASS_MAPPINGS["SemanticGenVAELoader"]().load(tiny_models["vae"], "auto")
    return vae


def latents(batch: int, frames: int) -> torch.Tensor:
    return torch.randn(batch, 16, frames, 8, 8, generator=torch.Generator().manual_seed(batch * 100 + frames))


def folder_files(pack, subfolder: str) -> list[str]:
    folder = pack.nodes.comfy.output_dir() / subfolder
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []  # hidden temp files included


def test_writes_one_file_per_video_with_vae_decodes_frames(pack, vae):
    latent = {"samples": latents(2, 4), "semanticgen_num_frames": 11}  # 4 latent frames decode to 13
    ui = pack.NODE_CLASS_MAPPINGS["SemanticGenDecodeToVideo"]().decode(vae, latent, 8.0, "stream/match", "mp4v", 1)
    ui = ui["ui"]
    assert [i["filename"] for i in ui["images"]] == ["match_00001.mp4", "match_00002.mp4"]
    assert all(i["subfolder"] == "stream" and i["type"] == "output" for i in ui["images"])
    assert ui["animated"] == [True] and ui["frames"] == [11, 11]
    assert folder_files(pack, "stream") == ["match_00001.mp4", "match_00002.mp4"]  # no temporary file left

    (images,) = pack.NODE_CLASS_MAPPINGS["SemanticGenVAEDecode"]().decode(vae, latent, 1)
    expected = images.view(2, 11, *images.shape[1:])
    for b, item in enumerate(ui["images"]):
        frames, fps = pack.nodes.video.read_video(pack.nodes.comfy.output_dir() / "stream" / item["filename"])
        assert frames.shape == expected[b].shape and fps == 8.0
        error, other = (frames - expected[b]).abs().mean(), (frames - expected[1 - b]).abs().mean()
        assert error < 0.05 and error < other / 2, (error, other)  # mp4v is lossy: close, and not the other video


def test_decoded_chunks_are_written_one_at_a_time(pack, vae, monkeypatch):
    model, writer = vae["vae"], pack.nodes.video.VideoFileWriter
    decode_iter, write = model.decode_iter, writer.write
    events, chunks = [], []

    def lazy_decode_iter(*args, **kwargs):
        for frames in decode_iter(*args, **kwargs):
            # Chunk k-1 may still be bound to the node's loop variable, but nothing older may be alive.
            assert sum(ref() is not None for ref in chunks) <= 1, "decoded frames pile up"
            chunks.append(weakref.ref(frames))
            events.append("decoded")
            yield frames

    def logged_write(self, frames):
        write(self, frames)
        events.append("written")

    monkeypatch.setattr(model, "decode_iter", lazy_decode_iter)
    monkeypatch.setattr(writer, "write", logged_write)
    latent = {"samples": latents(1, 6)}
    ui = pack.NODE_CLASS_MAPPINGS["SemanticGenDecodeToVideo"]().decode(vae, latent, 8.0, "stream/lazy", "mp4v", 1)
    assert ui["ui"]["frames"] == [21]
    assert events == ["decoded", "written"] * 6  # each chunk is written before the next one is decoded


def test_interrupt_mid_video_leaves_no_file(pack, vae, monkeypatch):
    from semanticgen_core.errors import Interrupted

    writer, write = pack.nodes.video.VideoFileWriter, pack.nodes.video.VideoFileWriter.write
    checks, temp_files = [], []

    def write_and_look(self, frames):
        write(self, frames)
        temp_files.append(self.tmp.is_file() and not self.path.exists())

    monkeypatch.setattr(pack.nodes.comfy, "should_stop", lambda: checks.append(1) or len(checks) > 2)
    monkeypatch.setattr(writer, "write", write_and_look)
    latent = {"samples": latents(1, 6)}
    with pytest.raises(Interrupted):
        pack.NODE_CLASS_MAPPINGS["SemanticGenDecodeToVideo"]().decode(vae, latent, 8.0, "stream_stop/clip", "mp4v", 1)
    assert temp_files == [True, True]  # two chunks went to the temporary file, none to the final path
    assert (pack.nodes.comfy.output_dir() / "stream_stop").is_dir() and folder_files(pack, "stream_stop") == []


def test_an_error_in_the_block_removes_the_temporary_file(pack, tiny_models):
    path = pack.nodes.comfy.output_dir() / "stream_error" / "clip.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with pytest.raises(RuntimeError, match="boom"):
        with pack.nodes.video.VideoFileWriter(path, 8.0, "mp4v") as writer:
            writer.write(torch.rand(5, 16, 16, 3))
            assert writer.tmp.is_file()
            raise RuntimeError("boom")
    assert list(path.parent.iterdir()) == []
    with pytest.raises(ValueError, match="one size per video"):
        with pack.nodes.video.VideoFileWriter(path, 8.0, "mp4v") as writer:
            writer.write(torch.rand(5, 16, 16, 3))
            writer.write(torch.rand(5, 32, 16, 3))
    assert list(path.parent.iterdir()) == []


@pytest.mark.parametrize("node,name", [("SemanticGenDecodeToVideo", "SemanticGen VAE Decode to Video"),
                                       ("SemanticGenVAEDecode", "SemanticGen VAE Decode")])
def test_image_latents_are_refused_clearly(pack, vae, node, name):
    from semanticgen_core.errors import ShapeError

    cls = pack.NODE_CLASS_MAPPINGS[node]
    with pytest.raises(ShapeError, match=rf"{name} takes video latents .* got \[1, 16, 8, 8\]: an image latent\? "
                                         r"Use core VAE Decode for images"):
        getattr(cls(), cls.FUNCTION)(vae, {"samples": torch.randn(1, 16, 8, 8)})
