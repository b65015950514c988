"""Model sizes, as named presets: ``tiny`` (tests) and ``wan2.1-1.3b`` (real weights on a GPU).

A preset fixes every architecture and the plan geometry that ties them together: the semantic encoder
samples ``sample_fps`` frames a second and merges 2 in time, so the plan has ``sample_fps / 2`` steps a
second, and one plan cell covers ``patch_size * spatial_merge_size`` pixels a side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch

from .compressor import SemanticCompressor
from .latent_dit import LatentDiT
from .semantic_dit import SemanticDiT
from .semantic_encoder import QwenVisionEncoder, qwen25vl_3b_vision_config, qwen_grid_shape, tiny_vision_config

WAN21_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                  out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", eps=1e-6)


@dataclass(frozen=True)
class Preset:
    name: str
    encoder: dict            # Qwen2_5_VLVisionConfig fields
    sample_fps: float        # frames a second the semantic encoder sees
    compressor: dict
    stage1: dict
    stage2: dict
    vae: dict                # AutoencoderKLWan config
    text_encoder: str        # "minilm" or "umt5-xxl"
    defaults: dict = field(default_factory=dict)  # sampling defaults: fps, size, steps, guidance, window

    def plan_fps(self, video_fps: float) -> float:
        """Plan steps a second for a video at ``video_fps`` (a slow video keeps all of its frames)."""
        return min(video_fps, self.sample_fps) / self.encoder["temporal_patch_size"]

    def plan_grid(self, num_frames: int, fps: float, height: int, width: int) -> tuple[int, int, int]:
        """(T_s, h, w) of the plan of such a video: the grid the semantic encoder would produce."""
        e = self.encoder
        return qwen_grid_shape(num_frames, height, width, fps, self.sample_fps, e["patch_size"],
                               e["spatial_merge_size"], e["temporal_patch_size"])

    def build(self, device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
        """Fresh (untrained) semantic encoder, compressor and both DiTs; ``device="meta"`` allocates nothing."""
        with torch.device(device):
            return {"encoder": QwenVisionEncoder.from_config(self.encoder, self.sample_fps, f"qwen2.5-vl-vision:{self.name}"),
                    "compressor": SemanticCompressor(**self.compressor), "stage1": SemanticDiT(**self.stage1),
                    "stage2": LatentDiT(**self.stage2)}

    def to_dict(self) -> dict:
        return asdict(self)

    def sampling_from(self, other: "Preset") -> "Preset":
        """This preset with ``other``'s sampling defaults (``SAMPLING_DEFAULTS``), where ``other`` has them."""
        chosen = {k: other.defaults[k] for k in SAMPLING_DEFAULTS if k in other.defaults}
        return replace(self, defaults={**self.defaults, **chosen})

    @classmethod
    def from_dict(cls, data: dict) -> "Preset":
        """The preset a model file (or cache) records. Sampling defaults added to this code's preset of the
        same name after the file was written (``LATER_DEFAULTS``) are filled in where the file has none,
        so shipped weights pick them up without being rewritten; a value the file records wins."""
        preset = cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        known = PRESETS.get(preset.name)
        later = {} if known is None else {k: known.defaults[k] for k in LATER_DEFAULTS
                                          if k in known.defaults and k not in preset.defaults}
        return replace(preset, defaults={**preset.defaults, **later}) if later else preset


_TINY_TEXT = 384  # MiniLM: the tiny preset runs with the real offline text encoder
TINY = Preset(
    name="tiny",
    encoder=tiny_vision_config().to_dict(),
    sample_fps=2.0,
    compressor=dict(in_dim=64, out_dim=8, hidden_dim=32, depth=2),
    stage1=dict(num_attention_heads=2, attention_head_dim=12, in_channels=8, out_channels=8, text_dim=_TINY_TEXT,
                freq_dim=32, ffn_dim=48, num_layers=2),
    stage2=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                out_channels=16, text_dim=_TINY_TEXT, freq_dim=32, ffn_dim=48, num_layers=2, semantic_dim=8),
    vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
             temperal_downsample=[False, True, True]),
    text_encoder="minilm",
    defaults=dict(fps=8.0, height=64, width=64, steps=4, guidance=1.0, window_frames=None),
)

WAN = Preset(
    name="wan2.1-1.3b",
    encoder=qwen25vl_3b_vision_config().to_dict(),  # its patch merger outputs 2048-d tokens
    sample_fps=1.6,
    compressor=dict(in_dim=2048, out_dim=8, hidden_dim=1024, depth=2),
    stage1={**WAN21_1_3B, "patch_size": (1, 1, 1), "in_channels": 8, "out_channels": 8},
    stage2={**WAN21_1_3B, "semantic_dim": 8},
    vae=dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True]),
    text_encoder="umt5-xxl",
    defaults=dict(fps=16.0, height=480, width=832, steps=50, guidance=5.0, window_frames=8),
)

# The embedded default: trained here on the procedural world (semanticgen_world), shipped in
# semanticgen_core/weights. 64x64 at 8 fps; the encoder sees 4 fps, so the plan has 2 steps a second on a
# 4x4 grid (128 tokens for 4 s); stage 2 sees 9 latent frames of 4x4 patches plus the plan, in windows
# of 4 latent frames (2 s), as it does for long videos.
EMBEDDED = Preset(
    name="embedded",
    encoder=tiny_vision_config().to_dict(),
    sample_fps=4.0,
    compressor=dict(in_dim=64, out_dim=8, hidden_dim=128, depth=2),
    stage1=dict(num_attention_heads=4, attention_head_dim=32, in_channels=8, out_channels=8, text_dim=384,
                freq_dim=64, ffn_dim=512, num_layers=6),
    stage2=dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16,
                out_channels=16, text_dim=384, freq_dim=64, ffn_dim=512, num_layers=6, semantic_dim=8,
                window_frames=4),
    vae={},  # the trained VAE file carries its own config
    text_encoder="minilm",
    # guidance 2.5: on held-out prompts kept apart from eval's (world seeds 1000500..1000559) the prompted
    # colour came out for 58% of objects against 47% at 4.0:
    # python -m semanticgen eval --first 500 --prompts 60 --guidance 2.5 (and 4)
    # plan_noise 0.3: stage 2 renders the plan noised as in training (render_latents' plan_noise; the
    # shipped files predate it, LATER_DEFAULTS). On the clips' own plans (eval --reference plan, 3 x 40
    # held-out prompts) colour 62% -> 72%, shape 21% -> 30%, direction 51% -> 56%:
    # python bench/plan_following.py --prompts 40 --first 0 (40, 80) --configs noise=0 noise=0.3
    # alignment 100: stage 1's alignment guidance with the shipped aligner (plan_alignment.py; shipped files
    # predate it, LATER_DEFAULTS). Held-out prompts kept apart from eval's (world seeds 1000500..): stage 1's
    # plans move the caption's way for 26 of 52 moving objects without it, 37 at 60, 40 at 100, 41 at 150,
    # 36 at 300 (python bench/plan_following.py --plan-travel --prompts 80 --first 500 --alignment W); the
    # rendered clips' direction 35.6% -> 54.8% at 100 and 200, colour 72.6% -> 69.9% (67.1% at 200):
    # python -m semanticgen eval --first 500 --prompts 60 --psnr-clips 0 --alignment W
    # steps 10 (20 before): on the 100 held-out prompts the same figures in half the time (colour 74.4% against
    # 73.6%, direction 37.2% / 38.0%, shape 34.9% / 29.5%; paraphrased: colour 35.7% / 31.8%):
    # python -m semanticgen eval --prompts 100 --seed 0 --psnr-clips 0 --steps 10 (--steps 20) [--wording paraphrase]
    # alignment_stop 0.75: the alignment guidance acts on the first 5 of the 10 steps (noise 1 to 0.79), not all
    # of them. Stage 1's plans that move the caption's way (of 52 one-object and 46 two-object objects):
    # stopping at 0.9 / 0.75 / 0.6 / never: 30+8, 38+10, 28+9, 32+8 (the tuning prompts, --first 500: 41+9 for
    # 0.75 and never): python bench/plan_following.py --plan-travel --prompts 100 --alignment-stop S. Rendered,
    # colour / direction / shape, never -> 0.75: the 100 held-out prompts 74.4/37.2/34.9% -> 77.5/45.7/27.1%,
    # paraphrased 35.7/12.4/25.6% -> 30.2/17.1/30.2%, the tuning prompts 64.4/54.8/23.3% -> 74.0/50.7/27.4%:
    # python -m semanticgen eval --prompts 100 --seed 0 --psnr-clips 0 [--wording paraphrase] [--alignment-stop 0]
    # (--first 500 --prompts 60)
    defaults=dict(fps=8.0, height=64, width=64, steps=10, guidance=2.5, window_frames=4, plan_noise=0.3,
                  alignment=100.0, alignment_stop=0.75),
)

# Sampling defaults that model files written before them lack: ``Preset.from_dict`` fills them in from
# the preset of the same name here.
LATER_DEFAULTS = ("plan_noise", "alignment", "alignment_stop")

# The defaults only sampling reads: caches that differ in them hold the same data, and a trained file takes
# them from the model it continues (``Preset.sampling_from``), not from the cache.
SAMPLING_DEFAULTS = ("steps", "guidance", "plan_noise", "alignment", "alignment_stop")

PRESETS = {p.name: p for p in (TINY, EMBEDDED, WAN)}
