"""Captions worded many ways: the training phrasings, and a paraphrase set held out of training.

A world scene has one template caption (``ShotSpec.caption``: "a small red circle moving up over blue
stripes"), but a user words a scene otherwise ("a purple ball travelling to the left"). Trained on the
template alone, the stages learn its wording rather than the scene. ``captions`` writes a clip's template
caption and several more from a training vocabulary (synonyms of colours, shapes, sizes, backdrops and
motions) and sentence shapes (word orders, finite verbs, the backdrop first or the motion first), which the
feature cache stores per clip and the trainer draws from. ``paraphrase`` writes a caption from a
vocabulary and sentence shapes that the training phrasings never use, to measure the stages on wording
they never saw (``python -m semanticgen eval --wording paraphrase``).

Every wording is drawn from a generator seeded by the scene itself (its backdrop's pattern seed, which the
clip's seed drew), so a scene is always worded the same way; and every one names exactly the scene's
colours, shapes, size words, backdrop and motions, in words ``world.parse_caption`` reads back.
"""

from __future__ import annotations

import numpy as np

from semanticgen_core.errors import SemanticGenError

from . import world

# -- the training vocabulary (the template's words first) ----------------------------------------------------

TRAIN_COLORS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "crimson"), "orange": ("orange", "tangerine"), "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"), "cyan": ("cyan", "turquoise", "aqua"), "blue": ("blue", "cobalt", "royal blue"),
    "purple": ("purple", "violet"), "white": ("white", "snow-white"), "grey": ("grey", "gray", "silver"),
}
TRAIN_SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball"), "square": ("square", "box", "block"), "triangle": ("triangle", "wedge"),
    "star": ("star", "five-pointed star"),
}
TRAIN_SIZES: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
# {c}: the colour word, {a}: its article
TRAIN_BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "plain": ("on a plain {c} background", "against {a} {c} backdrop", "on a solid {c} background",
              "in front of a flat {c} backdrop"),
    "gradient": ("on {a} {c} gradient", "over {a} {c} gradient background", "against {a} {c} gradient"),
    "stripes": ("over {c} stripes", "on {a} {c} striped background", "against {c} stripes"),
    "noise": ("over {c} noise", "on a noisy {c} background", "over {c} clouds"),
}
# (participle, finite verb) per motion: "a red circle rising", "a red circle rises"
TRAIN_MOTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "static": (("standing still", "stands still"), ("staying still", "stays still"),
               ("resting in place", "rests in place")),
    "left_to_right": (("moving from left to right", "moves from left to right"),
                      ("moving to the right", "moves to the right"),
                      ("sliding right", "slides right"), ("going left to right", "goes left to right")),
    "right_to_left": (("moving from right to left", "moves from right to left"),
                      ("moving to the left", "moves to the left"),
                      ("sliding left", "slides left"), ("going right to left", "goes right to left")),
    "up": (("moving up", "moves up"), ("rising", "rises"), ("climbing", "climbs"), ("going upwards", "goes upwards")),
    "down": (("moving down", "moves down"), ("falling", "falls"), ("sinking", "sinks"),
             ("going downwards", "goes downwards")),
    "bouncing": (("bouncing", "bounces"), ("bouncing around", "bounces around"),
                 ("bouncing off the edges", "bounces off the edges")),
    "growing": (("growing", "grows"), ("getting bigger", "gets bigger"), ("expanding", "expands")),
    "shrinking": (("shrinking", "shrinks"), ("getting smaller", "gets smaller"), ("contracting", "contracts")),
    "enter_left": (("entering from the left", "enters from the left"),
                   ("coming in from the left", "comes in from the left"),
                   ("appearing from the left", "appears from the left")),
    "enter_right": (("entering from the right", "enters from the right"),
                    ("coming in from the right", "comes in from the right"),
                    ("appearing from the right", "appears from the right")),
    "leave_left": (("leaving to the left", "leaves to the left"), ("exiting to the left", "exits to the left"),
                   ("going out to the left", "goes out to the left")),
    "leave_right": (("leaving to the right", "leaves to the right"), ("exiting to the right", "exits to the right"),
                    ("going out to the right", "goes out to the right")),
}

# -- the held-out vocabulary: never in a training caption (tests/test_wording.py checks) ----------------------
# Colours, shapes and sizes also keep their plain names half the time: a user says "purple" as often as
# "lilac", and the held-out motions, backdrops and sentence shapes are new wording enough.

HELDOUT_COLORS: dict[str, tuple[str, ...]] = {
    "red": ("ruby", "cherry"), "orange": ("amber", "pumpkin"), "yellow": ("lemon", "canary"),
    "green": ("jade", "grass-green"), "cyan": ("teal", "aquamarine"), "blue": ("sapphire", "ultramarine"),
    "purple": ("lilac", "amethyst"), "white": ("ivory", "pearl"), "grey": ("slate", "pewter"),
}
HELDOUT_SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("orb", "sphere"), "square": ("cube", "tile"), "triangle": ("pyramid", "arrowhead"),
    "star": ("starburst", "pentagram"),
}
HELDOUT_SIZES: dict[str, tuple[str, ...]] = {"small": ("miniature", "petite"), "large": ("giant", "enormous")}
HELDOUT_BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "plain": ("against an even {c} field", "on a uniform {c} canvas"),
    "gradient": ("on {a} {c} fade", "over {a} {c} colour ramp"),
    "stripes": ("over {c} bands", "on a pinstriped {c} canvas"),
    "noise": ("over a mottled {c} canvas", "against {c} haze"),
}
HELDOUT_MOTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "static": (("staying put", "stays put"), ("frozen in place", "sits frozen in place")),
    "left_to_right": (("travelling to the right", "travels to the right"), ("heading rightward", "heads rightward")),
    "right_to_left": (("travelling to the left", "travels to the left"), ("heading leftward", "heads leftward")),
    "up": (("floating upward", "floats upward"), ("ascending", "ascends")),
    "down": (("dropping downward", "drops downward"), ("descending", "descends")),
    "bouncing": (("ricocheting around", "ricochets around"), ("rebounding off the walls", "rebounds off the walls")),
    "growing": (("swelling", "swells"), ("inflating", "inflates"), ("increasing in size", "increases in size")),
    "shrinking": (("deflating", "deflates"), ("dwindling", "dwindles"), ("decreasing in size", "decreases in size")),
    "enter_left": (("sliding in from the left", "slides in from the left"),
                   ("arriving from the left", "arrives from the left")),
    "enter_right": (("sliding in from the right", "slides in from the right"),
                    ("arriving from the right", "arrives from the right")),
    "leave_left": (("heading out to the left", "heads out to the left"),
                   ("departing to the left", "departs to the left")),
    "leave_right": (("heading out to the right", "heads out to the right"),
                    ("departing to the right", "departs to the right")),
}
# The held-out sentence shapes: {s} is the subject with participles, {f} with finite verbs, {b} the backdrop.
HELDOUT_FRAMES = ("footage of {s} {b}", "in this clip, {f} {b}", "we watch {s} {b}")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _noun_phrase(rng, obj: world.ObjectSpec, colors, shapes, sizes) -> str:
    words = [_pick(rng, colors[obj.color]), _pick(rng, shapes[obj.shape])]
    size = world.size_word(obj.size)
    if size is not None:
        words.insert(0, _pick(rng, sizes[size]))
    return f"{world._article(words[0])} {' '.join(words)}"


def _background(rng, bg: world.BackgroundSpec, colors, phrases) -> str:
    color = _pick(rng, colors[bg.color])
    return _pick(rng, phrases[bg.kind]).format(c=color, a=world._article(color))


def _subjects(rng, objects: list[world.ObjectSpec], nouns: list[str], motions) -> tuple[str, str]:
    """(subject with participles, subject with finite verbs): "a red circle rising and a blue star falling",
    or with one motion for all, "a red circle and a blue star rising" (the template's two forms)."""
    verbs = [_pick(rng, motions[o.motion]) for o in objects]
    if len({o.motion for o in objects}) == 1 and len(objects) > 1 and rng.random() < 0.5:
        joined = " and ".join(nouns)
        return f"{joined} {verbs[0][0]}", f"{joined} are {verbs[0][0]}"
    return (" and ".join(f"{n} {v[0]}" for n, v in zip(nouns, verbs)),
            " and ".join(f"{n} {v[1]}" for n, v in zip(nouns, verbs)))


def _training_caption(shot: world.ShotSpec, rng: np.random.Generator) -> str:
    background = _background(rng, shot.background, TRAIN_COLORS, TRAIN_BACKGROUNDS)
    if not shot.objects:
        return f"an empty scene {background}"
    nouns = [_noun_phrase(rng, o, TRAIN_COLORS, TRAIN_SHAPES, TRAIN_SIZES) for o in shot.objects]
    s, f = _subjects(rng, shot.objects, nouns, TRAIN_MOTIONS)
    frames = ["{s} {b}", "{f} {b}", "{b}, {s}", "{b}, {f}", "a video of {s} {b}"]
    if len(shot.objects) == 1:  # the motion first: "rising over blue stripes, a small red circle"
        frames.append(f"{_pick(rng, TRAIN_MOTIONS[shot.objects[0].motion])[0]} {{b}}, {nouns[0]}")
    return _pick(rng, frames).format(s=s, f=f, b=background)


def _paraphrase(shot: world.ShotSpec, rng: np.random.Generator) -> str:
    plain = lambda held: {k: (k, *v) for k, v in held.items()}  # noqa: E731 - the plain name, or a held-out one
    background = _background(rng, shot.background, plain(HELDOUT_COLORS), HELDOUT_BACKGROUNDS)
    if not shot.objects:
        return f"footage of nothing {background}"
    nouns = [_noun_phrase(rng, o, plain(HELDOUT_COLORS), plain(HELDOUT_SHAPES), plain(HELDOUT_SIZES))
             for o in shot.objects]
    s, f = _subjects(rng, shot.objects, nouns, HELDOUT_MOTIONS)
    return _pick(rng, HELDOUT_FRAMES).format(s=s, f=f, b=background)


def _rng(shot: world.ShotSpec, salt: int, k: int) -> np.random.Generator:
    return np.random.default_rng([shot.background.seed, salt, k])


_TRAIN, _HELDOUT = 0, 1


def captions(clip: world.Clip, n: int) -> list[str]:
    """``n`` captions of a clip: its template caption, then ``n - 1`` training phrasings (a shot's phrasings
    are drawn independently, so two may coincide; timed shots keep the template's shot syntax)."""
    if n < 1:
        raise SemanticGenError(f"a clip needs at least 1 caption, got {n}")
    return [clip.caption] + [clip.caption_of([_training_caption(s, _rng(s, _TRAIN, k)) for s in clip.shots])
                             for k in range(1, n)]


def paraphrase(clip: world.Clip) -> str:
    """The clip's caption in the held-out wording (the evaluation's paraphrase prompts)."""
    return clip.caption_of([_paraphrase(s, _rng(s, _HELDOUT, 0)) for s in clip.shots])
