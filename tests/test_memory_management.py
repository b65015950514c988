"""Memory management: our models under ComfyUI's partial loading (nodes/comfy.py) and the VAE decode tiled
in space (semanticgen_core/vae.py, nodes/decode.py).

ComfyUI is not needed: partial loading is checked against what core's ModelPatcher does to a module past
its budget (turn on ``comfy_cast_weights``, maybe add ``weight_function``s) and what it leaves behind.
Where COMFYUI_DIR points at a ComfyUI checkout, one test also runs core's own ModelPatcher on the CPU in a
subprocess (COMFYUI_PYTHON / COMFYUI_PYTHONPATH as in tests/web/comfyui_server.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nodes import comfy, decode
from semanticgen_core.latent_dit import LatentDiT
from semanticgen_core.memory import PeakTensorMemory
from semanticgen_core.presets import TINY
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from semanticgen_core.vae import VideoVAE, _tiles, tiny_vae_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_stage2() -> LatentDiT:
    torch.manual_seed(0)
    return LatentDiT(**TINY.stage2).eval().requires_grad_(False)


def stage2_inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    return x, torch.tensor([500.0]), torch.randn(1, 5, TINY.stage2["text_dim"], generator=g)


def run(model, inputs):
    with torch.no_grad():
        out = model(*inputs)
    return out.sample if hasattr(out, "sample") else out[0]


# -- partial loading ---------------------------------------------------------------------------------


def test_every_weight_module_gets_comfy_ops_switch_off_and_nothing_changes():
    model = tiny_stage2()
    inputs = stage2_inputs()
    before = run(model, inputs)
    comfy.enable_offload(model)
    comfy.enable_offload(model)  # idempotent: one pair of hooks per module
    modules = comfy.weight_modules(model)
    assert modules and all(m.comfy_cast_weights is False and m.weight_function == [] for m in modules)
    assert all(len(m._forward_pre_hooks) == 1 for m in modules)
    # Every parameter belongs to a weight module or to a module core never moves alone (scale_shift_table, semantic_gate).
    owned = {id(p) for m in modules for p in m.parameters(recurse=False)}
    orphans = [n for n, p in model.named_parameters() if id(p) not in owned]
    assert orphans and all(n.endswith(("scale_shift_table", "semantic_gate")) for n in orphans)
    assert torch.equal(run(model, inputs), before)


def test_layers_past_the_budget_cast_their_weights_and_leave_them_where_they_are():
    model = tiny_stage2()
    inputs = stage2_inputs()
    before = run(model, inputs)
    comfy.enable_offload(model)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    for m in comfy.weight_modules(model):  # what core's load() does to a module it does not load
        m.prev_comfy_cast_weights, m.comfy_cast_weights = m.comfy_cast_weights, True
        m.register_forward_pre_hook(lambda mod, args: seen.append(type(mod.__dict__.get("weight"))))
    assert torch.equal(run(model, inputs), before)
    assert seen and all(t is torch.Tensor for t in seen)  # the forward saw a cast copy, not the parameter
    for n, p in model.named_parameters():
        assert isinstance(p, torch.nn.Parameter) and torch.equal(p, params[n])
    assert not any("_semanticgen_cast" in m.__dict__ or "weight" in m.__dict__ for m in model.modules())


def test_weight_functions_apply_to_a_copy_and_a_failed_forward_leaves_nothing_behind():
    layer = comfy.enable_offload(torch.nn.Sequential(torch.nn.Linear(3, 2))).get_submodule("0")
    x = torch.randn(4, 3)
    weight = layer.weight.detach().clone()
    layer.weight_function = [lambda w: w.mul_(0)]  # like a LoRA's LowVramPatch, but in place
    assert torch.equal(layer(x), layer.bias.expand(4, 2))
    assert torch.equal(layer.weight, weight)
    with pytest.raises(RuntimeError):
        layer(torch.randn(4, 5))
    assert "weight" not in layer.__dict__
    layer.weight_function = []
    assert torch.allclose(layer(x), x @ weight.T + layer.bias)


class FakePatcher:
    """What finish_partial_load reads of core's ModelPatcher after a partial load."""

    def __init__(self, model, load_device):
        self.model, self.load_device = model, load_device
        model.model_lowvram, model.model_loaded_weight_memory = True, 0


def test_after_a_partial_load_what_core_leaves_behind_is_moved():
    model = tiny_stage2()
    part = comfy.enable_offload(torch.nn.ModuleDict({"stage2": model}))
    first = next(model.named_parameters())[0]
    assert first == "scale_shift_table"  # the library's device: next(stage2.parameters()).device
    patch = model.patch_embedding  # a weight module, as if core had not loaded it
    patch.prev_comfy_cast_weights, patch.comfy_cast_weights = False, True
    moved = comfy.finish_partial_load(FakePatcher(part, "meta"))  # "meta": a device that is not the CPU
    assert next(model.parameters()).device.type == "meta"
    assert all(b.scale_shift_table.device.type == "meta" for b in model.blocks)
    assert model.patch_embedding.weight.device.type == "cpu"  # core's business: it casts when it runs
    assert moved == part.model_loaded_weight_memory == sum(
        p.numel() * p.element_size() for n, p in model.named_parameters() if n.endswith(("scale_shift_table",
                                                                                             "semantic_gate")))
    # A model whose first parameter is a weight module's: that module is loaded regularly.
    seq = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    part = comfy.enable_offload(torch.nn.ModuleDict({"m": seq}))
    seq[0].prev_comfy_cast_weights, seq[0].comfy_cast_weights = False, True
    assert comfy.finish_partial_load(FakePatcher(part, "meta")) == 6 * 4
    assert seq[0].weight.device.type == "meta" and seq[1].weight.device.type == "cpu"
    assert seq[0].comfy_cast_weights is False and not hasattr(seq[0], "prev_comfy_cast_weights")
    assert seq[0].comfy_patched_weights is True


def test_outside_comfyui_nothing_is_wrapped():
    assert not comfy.in_comfyui()
    model = tiny_stage2()
    assert comfy.model_patcher(model) is None
    comfy.load_models([None])
    assert not any(hasattr(m, "comfy_cast_weights") for m in model.modules())


COMFY_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.argv = ["main.py", "--cpu"]
    import comfy.options; comfy.options.enable_args_parsing()
    import comfy.model_management, comfy.model_patcher
    from nodes import comfy as ours
    from tests.test_memory_management import tiny_stage2, stage2_inputs, run
    model = tiny_stage2(); inputs = stage2_inputs(); before = run(model, inputs)
    part = torch.nn.ModuleDict({"stage2": model})
    ours.enable_offload(part)
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(part, load_device=cpu, offload_device=cpu)
    size = patcher.model_size()
    patcher.load(cpu, lowvram_model_memory=size // 3)
    cast = [m for m in ours.weight_modules(part) if m.comfy_cast_weights]
    assert part.model_lowvram and cast and patcher.loaded_size() < size, (patcher.loaded_size(), size)
    ours.finish_partial_load(patcher)
    assert torch.equal(run(model, inputs), before)
    freed = patcher.partially_unload(cpu, size // 4)
    assert freed > 0 and torch.equal(run(model, inputs), before)
    patcher.partially_load(cpu, extra_memory=10 * size)
    assert not part.model_lowvram and torch.equal(run(model, inputs), before)
    patcher.detach()
    assert not any(m.comfy_cast_weights for m in ours.weight_modules(part))
    print("OK", len(cast), "of", len(ours.weight_modules(part)), "layers cast;", size, "bytes")
""")


@pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"), reason="set COMFYUI_DIR to a ComfyUI checkout")
def test_core_modelpatcher_loads_our_model_partially():
    comfy_dir = os.environ["COMFYUI_DIR"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [comfy_dir, os.environ.get("COMFYUI_PYTHONPATH"), str(ROOT),
                                                      env.get("PYTHONPATH")]))
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    done = subprocess.run([python, "-c", COMFY_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr[-3000:]


# -- the VAE decode tiled in space -----------------------------------------------------------------


class LocalDecoder(torch.nn.Module):
    """A causal stand-in for the VAE decoder whose every output pixel depends on its own latent pixel only,
    so tiles must reproduce one pass exactly: what is left to test is the tiling and the blending."""

    def __init__(self):
        super().__init__()
        self.slot = WanCausalConv3d(1, 1, 1)  # one slot in the feature cache, which remembers the first chunk

    def forward(self, x, feat_cache=None, feat_idx=(0,)):
        first = feat_cache[0] is None
        feat_cache[0] = x[:, :, -1:]
        y = x[:, :3] * torch.arange(1, 4, dtype=x.dtype).view(1, 3, 1, 1, 1) + x[:, 3:6].sin()
        y = y.repeat_interleave(8, 3).repeat_interleave(8, 4)
        return y if first and x.shape[2] == 1 else y.repeat_interleave(4, 2)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE.from_config(tiny_vae_config()).eval()


def test_tiles_cover_the_frame_with_the_overlap_asked():
    assert _tiles(60, 256, 64) == [(0, 32), (14, 46), (28, 60)]
    assert _tiles(104, 256, 64) == [(0, 32), (24, 56), (48, 80), (72, 104)]
    assert _tiles(32, 256, 64) == [(0, 32)] and _tiles(60, None, 64) == [(0, 60)]
    for size in range(5, 70):
        spans = _tiles(size, 64, 16)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(b[0] <= a[1] - 2 for a, b in zip(spans, spans[1:]))


def test_tiled_decode_blends_to_one_pass_where_the_decoder_is_local():
    vae = VideoVAE.from_config(tiny_vae_config()).eval()
    vae.wan.decoder, vae.wan.post_quant_conv = LocalDecoder(), torch.nn.Identity()
    z = torch.randn(1, 16, 3, 11, 13)
    whole = vae.decode(z, chunk=1)
    for tile, overlap in ((32, 8), (48, 16), (40, 24)):
        assert torch.allclose(vae.decode(z, chunk=1, tile=tile, overlap=overlap), whole, atol=1e-6)


def test_tiled_decode_streams_exactly_and_stays_close_to_one_pass(vae):
    z = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    whole = vae.decode(z, chunk=2)
    tiled = vae.decode(z, chunk=2, tile=32, overlap=16)
    # Each tile has its own feature cache: chunk by chunk is the same as all at once (as without tiles).
    assert torch.allclose(vae.decode(z, chunk=1, tile=32, overlap=16), tiled, atol=1e-5)
    # The decoder's middle block attends over the whole frame, so tiles differ, a little (random weights).
    err = (tiled - whole).abs()
    assert err.mean() < 0.1, err.mean()
    # A tile as large as the frame is one pass.
    assert torch.equal(vae.decode(z, chunk=2, tile=64, overlap=16), whole)


def test_tiled_decode_peaks_lower(vae):
    z = torch.randn(1, 16, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with PeakTensorMemory() as whole:
        vae.decode(z, chunk=2)
    with PeakTensorMemory() as tiled:
        vae.decode(z, chunk=2, tile=48, overlap=16)
    assert tiled.peak < 0.9 * whole.peak, (tiled.peak, whole.peak)


def test_the_decode_nodes_tile_480p_by_default(monkeypatch):
    monkeypatch.delenv("SEMANTICGEN_VAE_TILE", raising=False)
    monkeypatch.delenv("SEMANTICGEN_VAE_TILE_OVERLAP", raising=False)
    assert decode.tiling(480, 832) == (256, 64)
    assert decode.tiling(256, 448) == (None, 64)
    monkeypatch.setenv("SEMANTICGEN_VAE_TILE", "0")
    assert decode.tiling(480, 832) == (None, 64)
    monkeypatch.setenv("SEMANTICGEN_VAE_TILE", "128")
    monkeypatch.setenv("SEMANTICGEN_VAE_TILE_OVERLAP", "32")
    assert decode.tiling(256, 256) == (128, 32) and decode.tiling(128, 128) == (None, 32)
