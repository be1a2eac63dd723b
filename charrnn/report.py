"""What `inspect` shows: a checkpoint summarised as plain data (also its --json form)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from charrnn.checkpoint import Checkpoint
from charrnn.model import textbook_param_count
from charrnn.vocab import SPECIALS


def loss_figures(loss: float | None) -> dict[str, float | None]:
    """Nats per character, and the bits per character and perplexity that follow from it."""
    if loss is None or not math.isfinite(loss):
        return {"loss": loss, "bits_per_char": None, "perplexity": None}
    return {"loss": loss, "bits_per_char": loss / math.log(2), "perplexity": math.exp(loss)}


def smooth_history(losses: np.ndarray, points: int = 400) -> list[list[float]]:
    """Per-step training losses averaged into at most `points` (step, loss) rows."""
    n = len(losses)
    if n == 0:
        return []
    edges = np.unique(np.linspace(0, n, min(points, n) + 1).astype(int))
    return [[float(hi), float(np.mean(losses[lo:hi]))] for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def summary(ck: Checkpoint, path: str = "") -> dict[str, Any]:
    meta, cfg = ck.meta, ck.cfg
    progress = meta.progress
    params = ck.sampling_params
    arrays = {}
    for name, a in params.items():
        a64 = a.astype(np.float64)
        arrays[name] = {
            "shape": list(a.shape), "count": int(a.size), "mean": float(a64.mean()), "std": float(a64.std()),
            "min": float(a64.min()), "max": float(a64.max()), "l2": float(np.linalg.norm(a64)),
        }
    total = sum(a.size for a in params.values())
    recent = ck.train_losses[-meta.train.eval_every :]
    final_train = float(np.mean(recent)) if len(recent) else None
    val = ck.val_losses
    best_val = meta.best_val_loss if len(val) else None  # without validation, best_val_loss is the training loss
    wall, chars_seen = meta.wall_time, meta.chars_seen
    return {
        "path": path,
        "format_version": ck.format_version,
        "config": {"model": cfg.to_dict(), "train": asdict(meta.train)},
        "data": {"mode": meta.mode.value, "objective": meta.objective.value, "source": meta.source,
                 **asdict(meta.corpus)},
        "vocab": {"size": len(ck.vocab), "specials": list(SPECIALS), "chars": ck.vocab.chars},
        "parameters": {"total": total, "textbook_total": textbook_param_count(cfg),
                       "arrays": arrays, "best_weights": ck.best is not None},
        "training": {
            "steps": progress.step,
            "epochs": progress.epochs_done,
            "chars_seen": chars_seen,
            "wall_time_s": wall,
            "chars_per_s": chars_seen / wall if wall > 0 else None,
            "final_train": loss_figures(final_train),
            "final_val": loss_figures(float(val[-1, 1]) if len(val) else None),
            "best_val_loss": best_val,
            "best_val": loss_figures(best_val),
            "stop_reason": meta.stop_reason,
            "backend": meta.backend,  # of the last run: results repeat exactly only on the same one
            "history": {"train": smooth_history(ck.train_losses), "val": val.tolist()},
        },
    }
