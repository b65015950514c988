"""Captions worded many ways: the training phrasings vary and describe the scene; the paraphrase set the
evaluation uses is worded apart from them; the feature cache keeps each clip's captions and the trainer
draws one per sample, keyed like its other random draws."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.shots import split_shots
from semanticgen_core.feature_cache import FeatureCache
from semanticgen_core.trainer import CacheRows, StepBatches
from semanticgen_core.trainer import main as train
from semanticgen_core.training import SampleNoise
from semanticgen_world import evaluation as ev, wording, world

CLIP_FRAMES = 33


def _clip(seed: int) -> world.Clip:
    """The clip of a seed, unrendered: the wordings need only its shots."""
    return world.Clip(np.zeros((1, 1, 1, 3), np.uint8), 8.0, world.sample_clip_shots(seed, CLIP_FRAMES))


def _scene(clip: world.Clip) -> list[dict]:
    """What ``parse_caption`` must read back from any wording of a one-shot clip."""
    shot = clip.shots[0]
    bg = {"kind": shot.background.kind, "color": shot.background.color}
    return [{"color": o.color, "shape": o.shape, "motion": o.motion, "size": world.size_word(o.size), "background": bg}
            for o in shot.objects]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def training_captions() -> list[str]:
    """Every training phrasing of 400 training clips, 8 captions each (the template first)."""
    return [c for seed in range(400) for c in wording.captions(_clip(seed), 8)]


def test_training_captions_vary_read_back_and_are_deterministic(training_captions):
    clips = [_clip(seed) for seed in range(400)]
    assert sum(len(c.shots[0].objects) == 2 for c in clips) > 50  # two-object scenes are exercised
    for clip in clips:
        captions = wording.captions(clip, 8)
        assert captions[0] == clip.caption and captions == wording.captions(clip, 8)
        for caption in captions:
            assert world.parse_caption(caption) == _scene(clip), caption
    phrasings = [c for i, c in enumerate(training_captions) if i % 8]
    assert len(set(phrasings)) > 0.95 * len(phrasings)  # nearly every draw is a wording of its own
    words = set().union(*map(_words, training_captions))
    vocabulary = [wording.TRAIN_COLORS, wording.TRAIN_SHAPES, wording.TRAIN_SIZES]
    for table in vocabulary:  # every synonym is used
        assert {w for options in table.values() for o in options for w in _words(o)} <= words
    used = " | ".join(training_captions)
    for phrases in wording.TRAIN_MOTIONS.values():
        assert all(f" {participle}" in used and f" {finite}" in used for participle, finite in phrases)
    # sentence shapes: the backdrop first, the motion first, finite verbs, the template's order
    assert any(c.startswith(("on ", "over ", "against ", "in front of ")) for c in training_captions)
    assert any(c.startswith(("moving", "rising", "falling", "bouncing", "growing")) for c in training_captions)
    assert " rises " in used and " a video of " in used
    with pytest.raises(SemanticGenError, match="at least 1 caption"):
        wording.captions(clips[0], 0)


def test_paraphrases_use_words_and_sentence_shapes_training_never_emits(training_captions):
    used = "\n".join(training_captions)
    words = set().union(*map(_words, training_captions))
    # the held-out synonyms never appear in a training caption, nor in the training vocabulary
    for held in (wording.HELDOUT_COLORS, wording.HELDOUT_SHAPES, wording.HELDOUT_SIZES):
        for options in held.values():
            for option in options:
                assert not _words(option.split("-")[0]) & words, option
    # nor do the held-out motions, backdrops and sentence shapes
    for phrases in wording.HELDOUT_MOTIONS.values():
        for participle, finite in phrases:
            assert participle not in used and finite not in used, participle
    for phrases in wording.HELDOUT_BACKGROUNDS.values():
        for phrase in phrases:
            fixed = [part.strip() for part in re.split(r"\{[ac]\}", phrase) if part.strip()]
            assert any(part not in used for part in fixed), phrase
    for frame in wording.HELDOUT_FRAMES:
        assert frame.split(" {")[0] not in used, frame
    # and the paraphrase prompts the evaluation judges describe their scenes (the detector's reading of the
    # prompt is the scene's), differ from the template and are never a training caption
    clips = ev.heldout_clips(100, size=16)
    prompts = ev.heldout_prompts(100, wording="paraphrase")
    assert prompts == [wording.paraphrase(c) for c in clips]
    for clip, prompt in zip(clips, prompts):
        assert world.parse_caption(prompt) == _scene(clip), prompt
        assert prompt != clip.caption and prompt not in training_captions
    assert len(set(prompts)) == 100
    with pytest.raises(SemanticGenError, match="unknown wording 'free'"):
        ev.heldout_prompts(1, wording="free")


def test_multishot_clips_word_every_shot_in_the_shot_syntax():
    clip = world.Clip(np.zeros((1, 1, 1, 3), np.uint8), 8.0, world.sample_clip_shots(3, CLIP_FRAMES, num_shots=2))
    for text in wording.captions(clip, 3)[1:] + [wording.paraphrase(clip)]:
        entries = split_shots(text)
        assert [(start, end) for start, end, _ in entries] == [(start, end) for start, end, _ in split_shots(clip.caption)]
        for (_, _, shot_text), shot in zip(entries, clip.shots):
            assert world.parse_caption(shot_text) == _scene(world.Clip(clip.frames, 8.0, [shot])), shot_text
    with pytest.raises(SemanticGenError, match="got 1 shot texts for a clip of 2 shots"):
        clip.caption_of(["one"])


# -- the cache and the trainer ---------------------------------------------------------------------------------


def test_the_world_cache_keeps_every_caption_of_a_clip(tiny_world_cache):
    from semanticgen_core.text_encoders import MiniLMTextEncoder

    cache = FeatureCache(tiny_world_cache["cache"])
    assert cache.record["version"] == 3 and cache.record["source"]["captions"] == 4
    assert [cache.captions(i) for i in range(len(cache))] == [4] * 4
    clip = world.sample_clip(1, CLIP_FRAMES)
    expected, _ = MiniLMTextEncoder.from_pretrained().encode(wording.captions(clip, 4))
    for k in range(4):
        row = cache.get(1, k)
        torch.testing.assert_close(row["text"], expected[k].to(torch.bfloat16).float(), rtol=0, atol=0)
    torch.testing.assert_close(cache[1]["text"], cache.get(1, 0)["text"], rtol=0, atol=0)
    assert torch.equal(cache.get(1, 3)["latents"], cache[1]["latents"])
    with pytest.raises(SemanticGenError, match="has 4 caption\\(s\\); caption 4 does not exist"):
        cache.get(1, 4)


def test_the_trainer_draws_a_caption_per_sample_keyed_by_seed_step_and_position(tiny_world_cache, monkeypatch):
    cache = FeatureCache(tiny_world_cache["cache"])
    rows = CacheRows(cache, seed=3, batch=4)
    picks = [rows.caption(p % 4, p) for p in range(64)]
    assert set(picks) == {0, 1, 2, 3}  # every caption is drawn
    assert picks == [CacheRows(cache, seed=3, batch=4).caption(p % 4, p) for p in range(64)]  # same seed, same picks
    assert picks != [CacheRows(cache, seed=4, batch=4).caption(p % 4, p) for p in range(64)]
    # the key of the sample's other draws: (seed, step, position)
    assert picks[9] == int(SampleNoise([(3, 2, 9)]).uniform("caption")[0] * 4)
    torch.testing.assert_close(rows[(1, 9)]["text"], cache.get(1, picks[9])["text"], rtol=0, atol=0)
    # world-size independent: a rank reads the same (clip, position) pairs as one process does, and the
    # draw depends on nothing else
    one = [key for micro in StepBatches(4, 4, 1, 3, 0, 5) for key in micro]
    import semanticgen_core.trainer as trainer

    monkeypatch.setattr(trainer.dist, "world_size", lambda: 2)
    two = []
    for rank in (0, 1):
        monkeypatch.setattr(trainer.dist, "rank", lambda r=rank: r)
        two += [key for micro in StepBatches(4, 4, 1, 3, 0, 5) for key in micro]
    assert sorted(two, key=lambda k: k[1]) == one
    assert [rows.caption(*key) for key in sorted(two, key=lambda k: k[1])] == [rows.caption(*key) for key in one]


def test_a_single_caption_cache_of_the_previous_version_still_trains(tiny_world_cache, tmp_path):
    """A version-2 cache (one caption per clip, ``text`` [N, L, D]) reads as one caption per row."""
    new = FeatureCache(tiny_world_cache["cache"])
    old = tmp_path / "v2"
    shutil.copytree(tiny_world_cache["cache"], old)
    record = json.loads((old / "cache.json").read_text())
    (old / "cache.json").write_text(json.dumps({**record, "version": 2}))
    for shard in old.glob("shard_*.safetensors"):
        from safetensors import safe_open

        with safe_open(str(shard), "pt") as f:
            metadata = f.metadata()
        tensors = load_file(shard)
        del tensors["captions"]
        tensors["text"] = tensors["text"][:, 0].contiguous()
        save_file(tensors, shard, metadata)
    cache = FeatureCache(old)
    assert [cache.captions(i) for i in range(len(cache))] == [1] * 4
    for i in range(4):
        torch.testing.assert_close(cache[i]["text"], new[i]["text"], rtol=0, atol=0)
    assert CacheRows(cache, 0, 2).caption(1, 7) == 0
    path = train(["stage2", "--cache", str(old), "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "2",
                  "--threads", "1"])
    assert path.is_file()
