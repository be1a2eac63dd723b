"""charrnn from Python, for notebooks and scripts:

    import charrnn
    m = charrnn.train("corpora/names.txt", time=2, out="names.npz")   # the CLI's training, quietly
    m = charrnn.load("names.npz")
    m.sample(10, temperature=0.8)          # ['makinzey', 'riika', ...]
    m.score("anna\\nbob\\n")                 # nats per character, as `charrnn eval`
    m.fill("m_rgaret")                      # 'margaret' (any model; bidirectional ones are fastest)
    m.embed(["anna", "bob"])                # (2, width) float32

Errors are charrnn.errors.CharrnnError with the same one-line messages the CLI prints.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn import checkpoint
from charrnn.checkpoint import Checkpoint
from charrnn.config import Mode
from charrnn.errors import CharrnnError, OptionError


@dataclass
class Model:
    """A loaded checkpoint and what can be done with it."""

    checkpoint: Checkpoint
    path: Path | None = None

    def __repr__(self) -> str:
        """One line, as at a Python prompt: what the model is and how far it trained."""
        ck, c = self.checkpoint, self.checkpoint.cfg
        kind = (f"bidirectional ({c.objective}) " if c.bidirectional else "") + c.cell
        kind += f" ({c.activation})" if c.cell == "rnn" else ""
        best = ck.meta.best_val_loss  # the training loss when there was no validation split
        judge = "val" if len(ck.val_losses) else "train"
        size = f"{c.layers} × {c.hidden_size}" + (f", head {c.head}" if c.head else "")
        return (f"<charrnn.Model {str(self.path) if self.path else '(not saved)'}: {kind}, {size}, {c.dtype}, "
                f"vocabulary {c.vocab_size}, {ck.meta.mode.value} mode, {ck.meta.progress.step:,} steps"
                + (f", best {judge} loss {best:.4f}" if best is not None else "")
                + ">")

    def sample(self, n: int = 10, temperature: float = 1.0, length: int | None = None, prime: str = "",
               seed: int | None = None, top_k: int = 0, top_p: float = 1.0, novel: bool | None = None) -> list[str]:
        """n samples, as `charrnn sample` makes them (line models: new lines first by default), generated
        in batches of sample.BATCH as the command does, so working memory does not grow with n."""
        from charrnn.sample import BATCH, check_options, generate_from

        ck = self.checkpoint
        if ck.cfg.bidirectional:
            raise CharrnnError("a bidirectional model fills in missing characters rather than writing text: use fill()")
        if length is None:
            length = ck.meta.train.seq_len if ck.meta.mode == Mode.LINES else 500
        check_options(temperature, top_k, top_p, n, length, seed)
        rng = np.random.default_rng(seed)
        texts: list[str] = []
        for done in range(0, n, BATCH):
            texts += generate_from(ck, min(BATCH, n - done), novel, length=length, temperature=temperature,
                                   top_k=top_k, top_p=top_p, prime=prime, rng=rng).texts
        return texts

    def score(self, text: str) -> float:
        """Mean loss in nats per character of `text` (for a bidirectional model per target character, with
        characters hidden as in training: every one for neighbors, the hidden ones for masked), as
        `charrnn eval` reports it."""
        from charrnn.score import encode_text, text_loss

        ids, starts, _ = encode_text(self.checkpoint, text)
        return text_loss(self.checkpoint, ids, starts)

    def fill(self, text: str, blank: str = "_") -> str:
        """`text` with every `blank` filled in, as `charrnn fill`."""
        from charrnn import fill

        return fill.fill(self.checkpoint, text, blank).text

    def embed(self, lines: list[str]) -> np.ndarray:
        """One float32 vector per line, as `charrnn embed`."""
        from charrnn import fill

        return fill.embed(self.checkpoint, [self.checkpoint.vocab.encode(s)[0].astype(np.int64) for s in lines])


def load(path: str | os.PathLike) -> Model:
    """The checkpoint at `path`."""
    return Model(checkpoint.load(path), Path(path))


def train(text_file: str | os.PathLike, out: str | os.PathLike | None = None, **options: Any) -> Model:
    """Train on `text_file` exactly as `charrnn train` does (quietly) and return the model.

    Options are the command's, named as its Python parameters: time=2 (minutes), steps, epochs,
    cell, hidden_size, layers, dropout, bidirectional, objective, resume, init_from, force, seed, ...; those
    left out are chosen from the text, as on the command line."""
    import typer

    from charrnn.cli import app
    from charrnn.commands import default_target, run_train

    params = {p.name: p.default for p in typer.main.get_command(app).commands["train"].params  # type: ignore[attr-defined]
              if p.name is not None}
    options = {"time_minutes" if k == "time" else k: v for k, v in options.items() if k != "quiet"}  # always quiet
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise OptionError(f"charrnn.train() has no option {unknown[0]!r}")
    o = dict(params, **options, text_file=Path(text_file), out=Path(out) if out is not None else None, quiet=True)
    for k in ("resume", "init_from"):
        if o.get(k) is not None:
            o[k] = Path(o[k])
    with contextlib.redirect_stdout(io.StringIO()):  # the command's closing lines: the caller gets the Model
        code = run_train(o, set(options))
    if code != 0:
        raise CharrnnError(f"training stopped early (exit {code}); the checkpoint keeps the last evaluation")
    return load(default_target(o))
