"""The shipped embedded default: every part loads strictly and the whole chain makes a video."""

import pytest
import torch

from semanticgen_core import embedded
from semanticgen_core.model_files import load_model, read_metadata
from semanticgen_core.pipeline import SemanticGenPipeline
from semanticgen_core.sampling import SamplingOptions


@pytest.mark.parametrize("part", embedded.PARTS)
def test_shipped_part_loads_with_every_key(part):
    path = embedded.weights_path(part)
    loaded = load_model(path, part)   # strict: a missing, extra or misshapen key raises
    assert loaded.preset.name == "embedded"
    assert read_metadata(path)["kind"] == part
    assert loaded.info.get("steps", 0) > 0  # trained, with its record


def test_shipped_weights_fit_the_budget():
    total = sum(embedded.weights_path(p).stat().st_size for p in embedded.PARTS)
    assert total <= 25 * 2**20, f"{total / 2**20:.1f} MB"


def test_embedded_pipeline_makes_a_video():
    pipe = SemanticGenPipeline.embedded()
    frames = pipe("a red circle moving from left to right over blue stripes", num_frames=17,
                  opts=SamplingOptions(steps=4, guidance=4.0, seed=0))
    assert frames.shape == (17, 64, 64, 3)
    assert frames.std() > 0.02  # not a flat frame
    assert (frames[1:] - frames[:-1]).abs().mean() < 0.2  # and not noise: consecutive frames agree
