"""A resumable CPU training loop shared by the embedded default's recipes.

State (models, optimizer, step, RNG, elapsed time) goes to ``last.pt`` atomically every ``save_every``
steps, at the end, and on SIGINT/SIGTERM, so an interrupted run resumes where it stopped and never
leaves a half-written checkpoint. Progress goes to stdout and ``log.jsonl``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Callable

import torch

from semanticgen_core.checkpoints import atomic_file


def save_atomic(obj, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


class Run:
    """``Run(out, modules, optimizer)``; ``for step in run.steps(total, minutes): ...; run.log(...)``."""

    def __init__(self, out: str | os.PathLike, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                 seed: int = 0, save_every: int = 200):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.modules, self.optimizer, self.save_every = modules, optimizer, save_every
        self.step, self.elapsed = 0, 0.0
        self.generator = torch.Generator().manual_seed(seed)
        self._stop = False
        ckpt = self.out / "last.pt"
        if ckpt.is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=False)  # modules may be on a GPU
            for name, module in modules.items():
                module.load_state_dict(state["modules"][name])
            optimizer.load_state_dict(state["optimizer"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            self.generator.set_state(state["rng"])
            print(f"resumed {ckpt} at step {self.step} ({self.elapsed / 60:.1f} min trained)", flush=True)

    def save(self) -> None:
        save_atomic({"modules": {n: m.state_dict() for n, m in self.modules.items()},
                     "optimizer": self.optimizer.state_dict(), "step": self.step, "elapsed": self.elapsed,
                     "rng": self.generator.get_state()}, self.out / "last.pt")

    def _request_stop(self, *_):
        self._stop = True

    def steps(self, total: int | None = None, minutes: float | None = None,
              on_save: Callable[[], None] | None = None):
        """Yield step numbers until ``total`` steps or ``minutes`` of wall time (this session), saving."""
        old = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        start = last = time.monotonic()
        try:
            while not self._stop and (total is None or self.step < total) and \
                    (minutes is None or time.monotonic() - start < 60 * minutes):
                yield self.step
                self.step += 1
                now = time.monotonic()
                self.elapsed += now - last
                last = now
                if self.step % self.save_every == 0:
                    self.save()
                    if on_save:
                        on_save()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.save()
            if on_save:
                on_save()

    def log(self, **values) -> None:
        record = {"step": self.step, "minutes": round(self.elapsed / 60, 2),
                  **{k: round(float(v.detach() if torch.is_tensor(v) else v), 5) for k, v in values.items()}}
        print(" ".join(f"{k}={v}" for k, v in record.items()), flush=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
