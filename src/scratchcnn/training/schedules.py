"""Learning-rate schedules: a function of the global step that returns the learning rate.

``constant``  lr
``step``      lr * gamma ** floor(epoch / step_epochs)
``cosine``    lr * (1 + cos(pi * t)) / 2, t = progress after warm-up in [0, 1]
``onecycle``  linear warm-up from lr / 25 to lr over ``warmup`` of the run, then cosine to ~0
All but ``onecycle`` take an optional linear warm-up from lr / 10 over ``warmup`` of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    lr: float = 0.01
    total_steps: int = 1
    steps_per_epoch: int = 1
    warmup: float = 0.0  # fraction of total steps
    gamma: float = 0.1  # for "step"
    step_epochs: int = 10  # for "step"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.kind!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warm-up must be a fraction in [0, 1), got {self.warmup}")

    def __call__(self, step: int) -> float:
        warm = int(self.warmup * self.total_steps)
        if self.kind == "onecycle":
            warm = max(warm, 1)
            if step < warm:
                return self.lr / 25 + (self.lr - self.lr / 25) * step / warm
            return self._cosine(step, warm)
        if step < warm:
            return self.lr / 10 + (self.lr - self.lr / 10) * step / warm
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** (step // (self.step_epochs * self.steps_per_epoch))
        return self._cosine(step, warm)

    def _cosine(self, step: int, warm: int) -> float:
        t = min(1.0, (step - warm) / max(1, self.total_steps - warm))
        return self.lr * (1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * t)) / 2)


SCHEDULES = ("constant", "step", "cosine", "onecycle")
