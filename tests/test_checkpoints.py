"""checkpoints.py: finding and reading safetensors checkpoints, strict loading, atomic saving."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from semanticgen_core import checkpoints
from semanticgen_core.checkpoints import (
    init_empty_weights,
    list_keys,
    load_into,
    load_state_dict,
    save_file_atomic,
)
from semanticgen_core.errors import CheckpointError


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "visual.a": torch.randn(3, 4, generator=g),
        "visual.b": torch.arange(5),
        "lm.c": torch.randn(2, generator=g),
        "lm.d": torch.randn(6, generator=g),
    }


def _write_sharded(folder: Path, tensors: dict[str, torch.Tensor], shards: dict[str, list[str]]) -> None:
    """An HF-style sharded checkpoint: one file per shard plus model.safetensors.index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, folder / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_single_file_folder_and_prefix(tmp_path):
    t = _tensors()
    save_file(t, tmp_path / "model.safetensors")
    _assert_same(load_state_dict(tmp_path / "model.safetensors"), t)
    _assert_same(load_state_dict(tmp_path), t)  # folder with model.safetensors
    _assert_same(load_state_dict(tmp_path, prefix="visual."), {"a": t["visual.a"], "b": t["visual.b"]})
    assert load_state_dict(tmp_path, prefix="nothing.") == {}
    assert list_keys(tmp_path) == sorted(t)

    other = tmp_path / "other"
    other.mkdir()
    save_file(t, other / "weights.safetensors")  # a lone file of any name is picked too
    _assert_same(load_state_dict(other), t)


def test_sharded_opens_only_needed_shards(tmp_path, monkeypatch):
    t = _tensors()
    _write_sharded(tmp_path, t, {"s1.safetensors": ["visual.a", "visual.b"], "s2.safetensors": ["lm.c", "lm.d"]})
    _assert_same(load_state_dict(tmp_path), t)
    index = tmp_path / "model.safetensors.index.json"  # the index file itself works as a path too
    _assert_same(load_state_dict(index, prefix="lm."), {"c": t["lm.c"], "d": t["lm.d"]})
    assert list_keys(tmp_path) == sorted(t)

    opened = []
    real_read = checkpoints._read
    monkeypatch.setattr(checkpoints, "_read", lambda f, **kw: opened.append(f.name) or real_read(f, **kw))
    _assert_same(load_state_dict(tmp_path, prefix="visual."), {"a": t["visual.a"], "b": t["visual.b"]})
    assert opened == ["s1.safetensors"]


def test_missing_path_and_missing_shard(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.safetensors does not exist.*\.safetensors file"):
        load_state_dict(tmp_path / "nowhere.safetensors")
    with pytest.raises(CheckpointError, match=r"Cannot pick a checkpoint in folder .*no \*\.safetensors"):
        load_state_dict(tmp_path)

    t = _tensors()
    _write_sharded(tmp_path, t, {"s1.safetensors": ["visual.a", "visual.b"], "s2.safetensors": ["lm.c", "lm.d"]})
    (tmp_path / "s2.safetensors").unlink()
    assert sorted(load_state_dict(tmp_path, prefix="visual.")) == ["a", "b"]  # s2 not needed
    with pytest.raises(CheckpointError, match=r"shard .*s2\.safetensors is missing"):
        load_state_dict(tmp_path)


def test_index_disagreeing_with_shard(tmp_path):
    t = _tensors()
    _write_sharded(tmp_path, t, {"s1.safetensors": ["visual.a", "visual.b"]})
    index = tmp_path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["visual.ghost"] = "s1.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"s1\.safetensors lacks 1 tensors.*visual\.ghost"):
        load_state_dict(tmp_path)
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"index .*model\.safetensors\.index\.json is unreadable"):
        load_state_dict(tmp_path)


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"Cannot read safetensors file .*model\.safetensors.*truncated"):
            load_state_dict(path)
        with pytest.raises(CheckpointError, match=r"model\.safetensors"):
            list_keys(tmp_path)


def test_load_into_reports_every_mismatch():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = {k: torch.full_like(v, 0.5) for k, v in net.state_dict().items()}
    load_into(net, good, "test net")
    assert torch.equal(net[1].weight, torch.full((2, 4), 0.5))

    bad = dict(good)
    del bad["0.bias"]
    bad["2.weight"] = torch.zeros(1)
    bad["1.weight"] = torch.zeros(2, 5)
    with pytest.raises(CheckpointError) as e:
        load_into(net, bad, "test net from /x.safetensors")
    msg = str(e.value)
    assert "test net from /x.safetensors" in msg
    assert "Missing keys (1): 0.bias" in msg
    assert "Unexpected keys (1): 2.weight" in msg
    assert "1.weight: checkpoint [2, 5] vs model [2, 4]" in msg
    assert torch.equal(net[1].weight, torch.full((2, 4), 0.5))  # nothing was half-loaded


def test_load_into_meta_assigns_without_copy():
    with init_empty_weights():
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    assert net[0].weight.is_meta and not net[1].running_mean.is_meta  # buffers stay real
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v.clone() for k, v in net.state_dict().items()}
    state = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in state.items()}
    state["1.running_mean"] = torch.randn(4, dtype=torch.float64)
    load_into(net, state, "meta net")
    assert net[0].weight.data_ptr() == state["0.weight"].data_ptr()  # assigned, not copied
    assert net[0].weight.dtype == torch.float64 and isinstance(net[0].weight, torch.nn.Parameter)

    with torch.device("meta"):  # everything on meta: a non-persistent buffer cannot be loaded
        lin = torch.nn.Linear(2, 2)
    lin.register_buffer("freqs", torch.ones(2, device="meta"), persistent=False)
    with pytest.raises(CheckpointError, match=r"still on the meta device: \['freqs'\].*init_empty_weights"):
        load_into(lin, {"weight": torch.ones(2, 2), "bias": torch.ones(2)}, "all-meta net")


def test_save_file_atomic_round_trip(tmp_path):
    t = {"x": torch.randn(4, 5), "i": torch.arange(3, dtype=torch.int32), "h": torch.randn(2).half()}
    path = tmp_path / "sub" / "plan.safetensors"
    save_file_atomic(t, path, metadata={"version": "1"})
    _assert_same(load_file(path), t)
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"version": "1"}
    assert [p.name for p in path.parent.iterdir()] == ["plan.safetensors"]


def test_save_file_atomic_interrupted_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "plan.safetensors"
    old = {"x": torch.ones(3)}
    save_file_atomic(old, path)
    before = path.read_bytes()

    def broken_writer(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a header")  # dies midway through the write
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_file", broken_writer)
    with pytest.raises(KeyboardInterrupt):
        save_file_atomic({"x": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    _assert_same(load_file(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.safetensors"]  # no temp file left
