"""``SemanticGenPipeline``: the one place that wires the stages together.

    text  --stage 1-->  SemanticPlan  --stage 2-->  VAE latents  --VAE-->  frames
    video --encoder + compressor-->  SemanticPlan

Each arrow is one method, so nodes and scripts can run them separately (and edit the plan in between).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from .compile import maybe_compile
from .compressor import SemanticCompressor
from .errors import SemanticGenError
from .latent_dit import LatentDiT, noised_plan
from .plan import SemanticPlan, Segment
from .plan_alignment import PlanTextAligner, alignment_steer, plan_score
from .presets import Preset
from .sampling import SamplingOptions, denoise, initial_noise
from .semantic_dit import SemanticDiT
from .semantic_encoder import SemanticEncoder
from .shots import parse_shots, shot_starts
from .text_encoders import MiniLMTextEncoder, TextEncoder
from .vae import VideoVAE

Progress = Callable[[int, int, torch.Tensor], None]
ShouldStop = Callable[[], bool]
TextPair = tuple[torch.Tensor, torch.Tensor]  # (conditional, unconditional) embeddings
STREAM_WINDOWS = 4  # stage 2 takes this many attention windows of a long video at a time
PLAN_NOISE_SEED = 10_000  # render_latents' plan noise uses seed + this (the latents' noise uses the seed)
CANDIDATE_SEED_STRIDE = 1000  # best_of's candidate k of seed s has seed s + k * this: apart from s + 1, s + 2 (the
# seeds a UI's "increment" or an eval's next prompt uses)


def latent_frames(num_frames: int) -> int:
    """Latent frames of Wan's VAE for a video of ``num_frames`` (padded up to 4k+1)."""
    return (num_frames - 1 + 3) // 4 + 1


def candidate_seeds(seed: int, candidates: int) -> list[int]:
    """The seeds of ``best_of``'s candidates: ``seed`` first, so one candidate is the plain video (modulo 2**64,
    the seeds a generator takes: ComfyUI's random seeds reach its top)."""
    return [(seed + k * CANDIDATE_SEED_STRIDE) % 2 ** 64 for k in range(candidates)]


@dataclass
class Candidate:
    """The video ``best_of`` keeps: its seed, the aligner's score of it read back, stage 1's plan, its frames."""

    seed: int
    score: float
    plan: SemanticPlan
    frames: torch.Tensor  # [T, H, W, 3] in 0..1


@dataclass
class SemanticGenPipeline:
    preset: Preset
    text_encoder: TextEncoder
    stage1: SemanticDiT | None
    compressor: SemanticCompressor | None
    stage2: LatentDiT | None
    vae: VideoVAE | None
    semantic_encoder: SemanticEncoder | None = None
    name: str = "semanticgen"
    baseline: LatentDiT | None = None  # the single-stage model the claims are measured against
    plain_wan: bool = False  # stage 2 is a Wan2.1 DiT whose plan layers were never trained: rendered as Wan
    aligner: PlanTextAligner | None = None  # stage 1's alignment guidance (opts.alignment), if loaded

    def __post_init__(self) -> None:
        for dit in (self.stage1, self.stage2, self.baseline):  # SEMANTICGEN_COMPILE=1: compiled blocks (once)
            if dit is not None:
                maybe_compile(dit)

    @classmethod
    def from_files(cls, stage1: str | None, stage2: str | None, vae: str | None, semantic_encoder: str | None = None,
                   text_encoder: TextEncoder | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, baseline: str | None = None,
                   aligner: str | None = None) -> "SemanticGenPipeline":
        """Load SemanticGen part files (``model_files``); any part may be None. The text encoder defaults
        to the one the preset names when it needs no files (MiniLM)."""
        from .model_files import load_model

        parts = {kind: load_model(path, kind, dtype, device) for kind, path in
                 (("stage1", stage1), ("stage2", stage2), ("semantic_encoder", semantic_encoder),
                  ("baseline", baseline), ("aligner", aligner)) if path}
        if not parts:
            raise SemanticGenError("give at least a stage-1, stage-2 or baseline model file")
        preset = next(iter(parts.values())).preset
        if text_encoder is None:
            if preset.text_encoder != "minilm":
                raise SemanticGenError(f"these models use the {preset.text_encoder} text encoder: load it and pass it")
            text_encoder = MiniLMTextEncoder.from_pretrained(device=device)
        modules = {name: m for part in parts.values() for name, m in part.modules.items()}
        return cls(preset, text_encoder, modules.get("stage1"), modules.get("compressor"), modules.get("stage2"),
                   VideoVAE.from_pretrained(vae, dtype=dtype, device=device) if vae else None,
                   modules.get("encoder"), name=preset.name, baseline=modules.get("baseline"),
                   aligner=modules.get("aligner"))

    @classmethod
    def embedded(cls, with_encoder: bool = False, stage1=None, stage2=None, aligner=None) -> "SemanticGenPipeline":
        """The embedded default, from the weights shipped in ``semanticgen_core/weights``; ``stage1`` /
        ``stage2`` / ``aligner``: other files of those parts to use in their place (candidates, before they ship)."""
        from .embedded import weights_path

        return cls.from_files(stage1 or weights_path("stage1"), stage2 or weights_path("stage2"), weights_path("vae"),
                              weights_path("semantic_encoder") if with_encoder else None,
                              aligner=aligner or weights_path("aligner"))

    @property
    def device(self) -> torch.device:
        for m in (self.stage2, self.stage1, self.compressor, self.baseline):
            if m is not None:
                return next(m.parameters()).device
        return torch.device("cpu")

    def alignment(self, weight: float | None = None) -> float:
        """The alignment guidance stage 1 samples with: ``weight``, or the preset's default for None; 0 without
        an aligner."""
        if self.aligner is None:
            return 0.0
        return float(self.preset.defaults.get("alignment", 0.0)) if weight is None else weight

    def alignment_stop(self, level: float | None = None) -> float:
        """The noise level below which alignment guidance stops: ``level``, or the preset's default for None
        (0, every step, for a preset without one)."""
        return float(self.preset.defaults.get("alignment_stop", 0.0)) if level is None else level

    def _need(self, what: str):
        module = getattr(self, what)
        if module is None:
            raise SemanticGenError(f"this pipeline has no {what} loaded: load it (or use the embedded default)")
        return module

    # -- geometry ----------------------------------------------------------------------------------
    def shot_text(self, segments: list[Segment], text_embeddings: TextPair | None = None) -> TextPair:
        """(conditional, unconditional) text for these shots: ``[1, L, D]`` for one shot, ``[1, S, L, D]``
        for several. ``text_embeddings`` are precomputed ones (e.g. from a text-encode node)."""
        if text_embeddings is None:
            cond = self.text_encoder.encode([s.prompt for s in segments])[0]
            uncond = self.text_encoder.encode([""] * len(segments))[0]
            text_embeddings = (cond[None], uncond[None]) if len(segments) > 1 else (cond, uncond)
        cond, uncond = (t.to(self.device) for t in text_embeddings)
        shots = cond.shape[1] if cond.ndim == 4 else 1
        if shots != len(segments):
            raise SemanticGenError(f"the text embeddings hold {shots} shot(s) but the prompt has {len(segments)}: "
                                   "encode the same prompt that is sampled")
        return cond, uncond

    # -- the arrows --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_plan(self, prompt: str, num_frames: int, fps: float, height: int, width: int,
                      opts: SamplingOptions, progress: Progress | None = None,
                      should_stop: ShouldStop | None = None,
                      text_embeddings: TextPair | None = None) -> SemanticPlan:
        """Stage 1: text -> plan, with full attention over the whole video.

        ``prompt`` is plain or per shot (``"0-8 s: ...; 8-20 s: ..."``, ``shots.py``): each shot's text
        conditions its own span. ``text_embeddings``: precomputed ``(conditional, unconditional)``
        embeddings of ``prompt`` (e.g. from a text-encode node); without them the text encoder embeds it.
        """
        stage1 = self._need("stage1")
        grid = self.preset.plan_grid(num_frames, fps, height, width)
        dtype = next(stage1.parameters()).dtype
        noise = initial_noise((1, *grid, stage1.config.in_channels), opts.seed, self.device)  # float32 state
        segments = parse_shots(prompt, num_frames / fps)
        text, empty = self.shot_text(segments, text_embeddings)
        starts = shot_starts(segments, num_frames / fps, grid[0])

        def velocity(x, t, context):
            return stage1.velocity(x, t, context, starts)

        steer = alignment_steer(self.aligner, text, self.alignment(opts.alignment), starts,
                                self.alignment_stop(opts.alignment_stop))
        tokens = denoise(velocity, noise, text.to(dtype), empty.to(dtype), opts, progress, should_stop,
                         model_dtype=dtype, steer=steer)
        return SemanticPlan(
            tokens=tokens[0].float().cpu(), fps=self.preset.plan_fps(fps), video_fps=fps, num_frames=num_frames,
            height=height, width=width, segments=segments, seed=opts.seed, encoder=f"stage1:{self.name}",
            compressor=self.name)

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor, fps: float, prompt: str = "") -> SemanticPlan:
        """Video ``[T, H, W, 3]`` in 0..1 -> plan (the compressor's mean: deterministic)."""
        encoder, compressor = self._need("semantic_encoder"), self._need("compressor")
        features = encoder.encode(frames.to(self.device), fps)
        mean, _ = compressor(features.to(next(compressor.parameters()).dtype))
        n, h, w = frames.shape[:3]
        return SemanticPlan(
            tokens=mean.float().cpu(), fps=self.preset.plan_fps(fps), video_fps=fps, num_frames=n, height=h, width=w,
            segments=parse_shots(prompt, n / fps), seed=None, encoder=encoder.name, compressor=self.name)

    @torch.no_grad()
    def render_latents(self, plan: SemanticPlan, opts: SamplingOptions, prompt: str | None = None,
                       window_frames: int | None = -1, progress: Progress | None = None,
                       should_stop: ShouldStop | None = None,
                       text_embeddings: TextPair | None = None, plan_noise: float | None = None) -> torch.Tensor:
        """Stage 2: plan (+ text) -> normalised float32 VAE latents ``[1, 16, T', H/8, W/8]``.

        ``prompt`` (plain or per shot) defaults to the plan's own segments; ``window_frames=-1`` uses the
        model's configured attention window; ``text_embeddings`` as in ``generate_plan``. With windows the
        blocks stream over time (``window_stream.py``), so memory stays flat however long the video is,
        and the window grid moves by a latent frame every step, so no frame stays at a border.
        ``plan_noise``: render the plan noised to this level, ``(1 - a) plan + a eps`` with the model told
        ``a``, as stage 2 trains (levels 0..0.3, RAE-style; ``eps`` seeded by ``opts.seed``); None: the
        preset's ``plan_noise`` default (0 when it has none). ``bench/plan_following.py`` measures it.
        """
        stage2 = self._need("stage2")
        if self.plain_wan:  # Wan2.1 text-to-video on the plan's size, length and shots: no plan, full attention
            if window_frames not in (-1, 0, None):
                raise SemanticGenError(f"window_frames {window_frames} needs a SemanticGen stage-2 model; a plain "
                                       "Wan2.1 DiT was trained with full attention only: use -1 or 0")
            segments = plan.segments if prompt is None else parse_shots(prompt, plan.duration_s)
            return self.render_baseline(None, plan.num_frames, plan.video_fps, plan.height, plan.width, opts,
                                        progress, should_stop, model=stage2, segments=segments,
                                        text_embeddings=text_embeddings)
        if plan.tokens.shape[-1] != stage2.config.semantic_dim:
            raise SemanticGenError(
                f"the plan has {plan.tokens.shape[-1]} channels per token but this stage-2 model expects "
                f"{stage2.config.semantic_dim}: the plan was made for another compressor ({plan.compressor!r})")
        if plan.height % 8 or plan.width % 8:
            raise SemanticGenError(f"video size {plan.height}x{plan.width} must be a multiple of 8 (the VAE's stride)")
        dtype = next(stage2.parameters()).dtype
        shape = (1, stage2.config.in_channels, latent_frames(plan.num_frames), plan.height // 8, plan.width // 8)
        noise = initial_noise(shape, opts.seed, self.device)  # float32 state; only the model runs in ``dtype``
        segments = plan.segments if prompt is None else parse_shots(prompt, plan.duration_s)
        text, empty = self.shot_text(segments, text_embeddings)
        starts = shot_starts(segments, plan.duration_s, shape[2] // stage2.config.patch_size[0])
        level = float(self.preset.defaults.get("plan_noise", 0.0) if plan_noise is None else plan_noise)
        if not 0.0 <= level <= 1.0:
            raise SemanticGenError(f"plan_noise must be in 0..1, got {level:g}")
        sem, sem_t = plan.tokens[None], None
        if level:  # its own stream of the seed, apart from the latents' starting noise
            eps = initial_noise(tuple(plan.tokens.shape), opts.seed + PLAN_NOISE_SEED)[None]
            sem, sem_t = noised_plan(sem, torch.full((1,), level), eps)
            sem_t = sem_t.to(self.device)
        sem = sem.to(self.device, dtype)
        window = stage2.config.window_frames if window_frames == -1 else window_frames
        stream = None if window is None else STREAM_WINDOWS * window
        step = iter(range(opts.steps))  # one call a step (guidance batches both texts)

        def velocity(x, t, context):
            offset = 0.0 if window is None else float(next(step) % window)  # borders move every step
            return stage2(x, t, context, semantic_tokens=sem.expand(x.shape[0], *sem.shape[1:]),
                          semantic_timestep=None if sem_t is None else sem_t.expand(x.shape[0]),
                          window_frames=window, shot_starts=starts, stream_frames=stream,
                          window_offset=offset).sample

        return denoise(velocity, noise, text.to(dtype), empty.to(dtype), opts, progress, should_stop,
                       model_dtype=dtype)

    @torch.no_grad()
    def render_baseline(self, prompt: str | None, num_frames: int, fps: float, height: int, width: int,
                        opts: SamplingOptions, progress: Progress | None = None,
                        should_stop: ShouldStop | None = None, *, model: torch.nn.Module | None = None,
                        segments: list[Segment] | None = None,
                        text_embeddings: TextPair | None = None) -> torch.Tensor:
        """The single-stage baseline: text -> normalised float32 VAE latents with full attention, no plan.
        ``model``: another text-to-video DiT in its place (a plain Wan2.1 DiT loaded as stage 2);
        ``segments``: the shots, instead of those of ``prompt``."""
        baseline = model if model is not None else self._need("baseline")
        dtype = next(baseline.parameters()).dtype
        shape = (1, baseline.config.in_channels, latent_frames(num_frames), height // 8, width // 8)
        segments = parse_shots(prompt, num_frames / fps) if segments is None else segments
        text, empty = self.shot_text(segments, text_embeddings)
        starts = shot_starts(segments, num_frames / fps, shape[2] // baseline.config.patch_size[0])

        def velocity(x, t, context):
            return baseline(x, t, context, window_frames=None, shot_starts=starts).sample

        return denoise(velocity, initial_noise(shape, opts.seed, self.device), text.to(dtype),
                       empty.to(dtype), opts, progress, should_stop, model_dtype=dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, num_frames: int | None = None, progress=None,
               should_stop: ShouldStop | None = None) -> torch.Tensor:
        """Latents -> frames ``[T, H, W, 3]`` in 0..1 on the CPU, decoded in chunks; trimmed to
        ``num_frames`` when the video was padded to 4k+1 frames."""
        frames = self._need("vae").decode(latents, progress=progress, should_stop=should_stop)
        return frames if num_frames is None else frames[:num_frames]

    @torch.no_grad()
    def video_score(self, frames: torch.Tensor, fps: float, prompt: str,
                    text_embeddings: TextPair | None = None) -> float:
        """How well a finished video follows its prompt: read back into a plan (``encode_video``) and scored by
        the aligner, each shot's span against its own text (``plan_alignment.plan_score``). Higher is better;
        only comparable between videos of one prompt."""
        aligner = self._need("aligner")
        plan = self.encode_video(frames, fps, prompt)
        text = self.shot_text(plan.segments, text_embeddings)[0]
        dtype = next(aligner.parameters()).dtype
        starts = shot_starts(plan.segments, plan.duration_s, plan.tokens.shape[0])
        return float(plan_score(aligner, text.to(dtype), plan.tokens[None].to(text.device, dtype), starts))

    def best_of(self, prompt: str, num_frames: int, fps: float, height: int, width: int, opts: SamplingOptions,
                candidates: int, decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                prepare: Callable[[str], None] | None = None, progress: Callable[[str, int], Progress] | None = None,
                should_stop: ShouldStop | None = None,
                text_embeddings: TextPair | None = None) -> tuple[Candidate, list[tuple[int, float]]]:
        """Best of N: the video at each of ``candidate_seeds(opts.seed, candidates)`` (stage 1, stage 2, decode),
        each read back and scored against the prompt (``video_score``); keeps the highest-scored one. Returns it
        and every candidate's ``(seed, score)``. The kept video is exactly the plain video at its seed, so
        that seed alone makes it again.

        Not in the paper. The aligner tells which way a finished video moves better than stage 2 follows the
        plan it was given: at the embedded scale, best of 4 gets the direction of 54.3% of held-out objects
        right instead of 45.7% (the model card).

        ``decode``: latents -> frames (default ``self.decode``); ``prepare(phase)``: called before each
        candidate's stages (``"generate"``) and before its read-back (``"read back"``), for a model manager to
        make those models resident; ``progress(what, total)``: a progress hook per loop."""
        if candidates < 1:
            raise SemanticGenError(f"candidates must be at least 1, got {candidates}")
        for part in ("aligner", "semantic_encoder", "compressor"):  # before any candidate is made
            self._need(part)
        decode = decode or (lambda latents: self.decode(latents, num_frames, should_stop=should_stop))
        bar = progress or (lambda what, total: None)
        best, scores = None, []
        for k, seed in enumerate(candidate_seeds(opts.seed, candidates)):
            if prepare is not None:
                prepare("generate")
            o, name = replace(opts, seed=seed), f"candidate {k + 1}/{candidates}"
            plan = self.generate_plan(prompt, num_frames, fps, height, width, o, bar(f"{name}: stage 1", o.steps),
                                      should_stop, text_embeddings)
            latents = self.render_latents(plan, o, progress=bar(f"{name}: stage 2", o.steps),
                                          should_stop=should_stop, text_embeddings=text_embeddings)
            frames = decode(latents)[:num_frames]
            if prepare is not None:
                prepare("read back")
            score = self.video_score(frames, fps, prompt, text_embeddings)
            scores.append((seed, score))
            if best is None or score > best.score:
                best = Candidate(seed, score, plan, frames)
        return best, scores

    def __call__(self, prompt: str, num_frames: int | None = None, fps: float | None = None,
                 height: int | None = None, width: int | None = None, opts: SamplingOptions | None = None,
                 progress: Progress | None = None, should_stop: ShouldStop | None = None) -> torch.Tensor:
        """Text -> frames ``[T, H, W, 3]``, with the preset's defaults for anything not given."""
        d = self.preset.defaults
        fps = fps or d["fps"]
        num_frames = num_frames or int(4 * fps) + 1
        opts = opts or SamplingOptions(steps=d["steps"], guidance=d["guidance"])
        plan = self.generate_plan(prompt, num_frames, fps, height or d["height"], width or d["width"], opts,
                                  progress, should_stop)
        latents = self.render_latents(plan, opts, progress=progress, should_stop=should_stop)
        return self.decode(latents, num_frames, should_stop=should_stop)
