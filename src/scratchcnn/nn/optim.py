"""Optimizers that update ``layer.params`` in place from ``layer.grads``.

Same update rules as PyTorch's, so the two agree step for step:

SGD:   g = grad + wd * w;  buf = mu * buf + g;  g = g + mu * buf (Nesterov) or buf;  w -= lr * g
Adam:  g = grad + wd * w;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
       w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
AdamW: as Adam without wd in g, after a decoupled decay  w *= 1 - lr * wd
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .layers.base import Layer


@dataclass(frozen=True)
class Parameter:
    """A named handle on one trainable array of a layer (the array itself lives in the layer)."""

    name: str
    layer: Layer
    key: str

    @property
    def value(self) -> np.ndarray:
        return self.layer.params[self.key]

    @property
    def grad(self) -> np.ndarray:
        try:
            return self.layer.grads[self.key]
        except KeyError:
            raise RuntimeError(f"no gradient for {self.name}: call backward first") from None


class Optimizer:
    """Base class. ``lr`` may be changed between steps (learning-rate schedules do that)."""

    def __init__(self, parameters: Iterable[Parameter], lr: float, weight_decay: float) -> None:
        self.parameters = list(parameters)
        if lr <= 0 or not np.isfinite(lr):
            raise ValueError(f"learning rate must be a positive number, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def step(self) -> None:
        self.steps += 1
        for p in self.parameters:
            self._update(p, self.state.setdefault(p.name, {}))

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{"name/slot": array}`` plus ``steps`` and ``lr``, for checkpoints."""
        flat = {
            f"{name}/{slot}": array
            for name, slots in self.state.items()
            for slot, array in slots.items()
        }
        flat["steps"] = np.array(self.steps)
        flat["lr"] = np.array(self.lr)
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray]) -> None:
        self.steps = int(flat["steps"])
        self.lr = float(flat["lr"])
        self.state = {}
        for key, value in flat.items():
            if "/" in key:
                name, slot = key.rsplit("/", 1)
                self.state.setdefault(name, {})[slot] = np.array(value)


class SGD(Optimizer):
    """``SGD(params, lr, momentum=0, nesterov=False, weight_decay=0)``."""

    def __init__(
        self,
        parameters: Iterable[Parameter],
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(parameters, lr, weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        w, g = p.value, p.grad
        if self.weight_decay:
            g = g + self.weight_decay * w
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = g.astype(w.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        w -= (self.lr * g).astype(w.dtype, copy=False)


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)`` (L2 in the grad)."""

    decoupled = False
    default_weight_decay = 0.0

    def __init__(
        self,
        parameters: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float | None = None,
    ) -> None:
        decay = self.default_weight_decay if weight_decay is None else weight_decay
        super().__init__(parameters, lr, decay)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        w, g = p.value, p.grad
        if self.weight_decay:
            if self.decoupled:
                w *= w.dtype.type(1.0 - self.lr * self.weight_decay)
            else:
                g = g + self.weight_decay * w
        if "m" not in state:
            state["m"] = np.zeros_like(w)
            state["v"] = np.zeros_like(w)
        m, v = state["m"], state["v"]
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * (g * g)
        correction1 = 1.0 - self.beta1**self.steps
        correction2 = 1.0 - self.beta2**self.steps
        denom = np.sqrt(v) / np.sqrt(correction2) + self.eps
        w -= ((self.lr / correction1) * m / denom).astype(w.dtype, copy=False)


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas, eps, weight_decay=0.01)``: decoupled weight decay."""

    decoupled = True
    default_weight_decay = 0.01


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
