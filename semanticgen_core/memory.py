"""Peak tensor memory of a piece of code on any device, CPU included (``torch.cuda`` stats are GPU-only).

A ``TorchDispatchMode`` sees every operator's outputs. A tensor whose storage is new (not shared with an
input) is an allocation; its bytes count as live until the last tensor holding that storage is freed.
Work inside fused kernels (e.g. attention's scratch space) is not seen, so this is a lower bound that
is exact for what the Python-level code keeps alive, which is what grows with a video's length.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):
    """``with PeakTensorMemory() as m: ...`` then ``m.peak`` (bytes allocated at once, at most)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._holders: dict[int, int] = {}  # storage address -> tensors alive holding it
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._hold(t, inputs)
        return out

    def _hold(self, t: torch.Tensor, inputs: set[int]) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self._holders:
            if key in inputs or storage.nbytes() == 0:
                return  # a view of memory allocated before (or elsewhere)
            self._holders[key], self._sizes[key] = 0, storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._holders[key] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        self._holders[key] -= 1
        if self._holders[key] == 0:
            del self._holders[key]
            self.live -= self._sizes.pop(key)
