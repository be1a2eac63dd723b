"""Gradient clipping and optimizers. Optimizer state is a dict of arrays keyed like the
parameters ("m.W_h0", "v.W_h0", ...) plus a step count, so a checkpoint saves it as is.

    SGD (momentum mu):  v <- mu v - lr g;            p <- p + v
    Adagrad:            G <- G + g^2;                p <- p - lr g / (sqrt(G) + eps)
    Adam:               m <- b1 m + (1 - b1) g;      v <- b2 v + (1 - b2) g^2
                        p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
"""

from __future__ import annotations

import numpy as np

from charrnn.config import OPTIMIZERS
from charrnn.errors import CharrnnError

Params = dict[str, np.ndarray]
SLOTS = {"adam": ("m", "v"), "adagrad": ("G",), "sgd": ("v",)}


def clip_(grads: Params, theta: float, mode: str = "norm") -> float:
    """Clip in place; returns the global L2 norm before clipping. theta = 0 turns it off.

    norm:  g <- g * min(1, theta / ||g||) with ||g|| over all arrays together
    value: each element into [-theta, theta]"""
    norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
    if theta <= 0:
        return norm
    if mode == "norm":
        if norm > theta:
            for g in grads.values():
                g *= theta / norm
    elif mode == "value":
        for g in grads.values():
            np.clip(g, -theta, theta, out=g)
    else:
        raise CharrnnError(f"--clip-mode must be norm or value, not {mode!r}")
    return norm


def init_state(name: str, params: Params) -> Params:
    if name not in SLOTS:
        raise CharrnnError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    state = {f"{slot}.{k}": np.zeros_like(p) for slot in SLOTS[name] for k, p in params.items()}
    state["t"] = np.zeros((), dtype=np.int64)
    return state


def step_(
    name: str,
    params: Params,
    grads: Params,
    state: Params,
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """Update params and optimizer state in place. Gradients are used as scratch space."""
    state["t"] += 1
    t = int(state["t"])
    for k, p in params.items():
        g = grads[k]
        if name == "adam":
            b1, b2 = betas
            m, v = state[f"m.{k}"], state[f"v.{k}"]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            g *= g
            g *= 1 - b2
            v += g
            step = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
            np.sqrt(v, out=g)
            g += eps
            np.divide(m, g, out=g)
            g *= step
            p -= g
        elif name == "adagrad":
            G = state[f"G.{k}"]
            G += g * g
            g *= lr
            g /= np.sqrt(G) + eps
            p -= g
        else:
            v = state[f"v.{k}"]
            v *= momentum
            g *= lr
            v -= g
            p += v
