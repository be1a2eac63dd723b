"""The training loop: batches, loss, BPTT, clipping, optimizer, evaluation, early stopping.

`Trainer` owns everything a run needs to resume exactly (parameters, optimizer state,
data position, carried hidden state, RNG), and turns it into a `Checkpoint`.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from charrnn import model, optim
from charrnn.checkpoint import Checkpoint, line_hashes
from charrnn.data import Corpus, StreamLayout, fit_stream, lines_batch
from charrnn.errors import CharrnnError
from charrnn.model import ModelConfig, Params, State

MAX_HASHED_LINES = 2_000_000  # 16 MB of hashes in the checkpoint at most


@dataclass
class TrainConfig:
    mode: str = "auto"  # auto | lines | stream (see charrnn.data for the auto rule)
    seq_len: int = 64  # stream: BPTT steps per chunk; lines: longest line modelled
    batch_size: int = 32  # parallel streams or lines per step
    val_fraction: float = 0.1  # held out for validation; 0 disables
    min_count: int = 1  # characters seen fewer times become <UNK>
    max_vocab: int = 0  # keep at most this many characters (most frequent); 0: all
    optimizer: str = "adam"  # adam | adagrad | sgd (with momentum 0.9)
    lr: float = 2e-3  # learning rate
    lr_decay: float = 1.0  # multiply the learning rate by this after every epoch; 1 disables
    lr_plateau: float = 0.5  # multiply it by this after an evaluation that did not improve; 1 disables
    clip: float = 5.0  # gradient clipping threshold; 0 disables
    clip_mode: str = "norm"  # norm: rescale the global norm; value: clip each element
    steps: int = 0  # stop after this many steps in all (0: no limit)
    epochs: float = 0.0  # stop after this many passes over the training data (0: no limit)
    time_minutes: float = 0.0  # stop this run after this much wall time (0: no limit)
    eval_every: int = 200  # steps between validation evaluations and checkpoint saves
    patience: int = 0  # stop when validation has not improved for this many evaluations (0: never)
    seed: int = 0  # initialisation, data order, split and dropout
    val_max_chars: int = 1_000_000  # evaluate on at most this many validation characters

    def check(self) -> None:
        p = []
        if self.seq_len < 1:
            p.append(f"--seq-len must be at least 1, not {self.seq_len}")
        if self.batch_size < 1:
            p.append(f"--batch-size must be at least 1, not {self.batch_size}")
        if not 0 <= self.val_fraction < 1:
            p.append(f"--val-fraction must be in [0, 1), not {self.val_fraction}")
        if self.min_count < 1:
            p.append(f"--min-count must be at least 1, not {self.min_count}")
        if self.max_vocab < 0:
            p.append(f"--max-vocab must be 0 or more, not {self.max_vocab}")
        if self.optimizer not in optim.OPTIMIZERS:
            p.append(f"--optimizer must be one of {', '.join(optim.OPTIMIZERS)}, not {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            p.append(f"--lr must be positive, not {self.lr}")
        if not 0 < self.lr_decay <= 1:
            p.append(f"--lr-decay must be in (0, 1], not {self.lr_decay}")
        if not 0 < self.lr_plateau <= 1:
            p.append(f"--lr-plateau must be in (0, 1], not {self.lr_plateau}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            p.append(f"--clip must be 0 or more, not {self.clip}")
        if self.clip_mode not in ("norm", "value"):
            p.append(f"--clip-mode must be norm or value, not {self.clip_mode!r}")
        for name in ("steps", "epochs", "time_minutes", "patience"):
            if getattr(self, name) < 0:
                p.append(f"--{name.replace('_minutes', '').replace('_', '-')} must be 0 or more, not {getattr(self, name)}")
        if self.eval_every < 1:
            p.append(f"--eval-every must be at least 1, not {self.eval_every}")
        if p:
            raise CharrnnError("; ".join(p))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Trainer:
    def __init__(
        self,
        corpus: Corpus,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        resume: Checkpoint | None = None,
        source: str = "",
    ) -> None:
        cfg.check()
        self.corpus, self.cfg, self.model_cfg = corpus, cfg, model_cfg
        self.fingerprint = zlib.crc32(np.ascontiguousarray(corpus.train).tobytes())  # tells a changed text on resume
        self.notes: list[str] = []  # adjustments worth telling the user
        if corpus.mode == "stream":
            b, t, self.notes = fit_stream(len(corpus.train), cfg.batch_size, cfg.seq_len)
            cfg.batch_size, cfg.seq_len = b, t
            self.layout = StreamLayout(len(corpus.train), b, t)
            self.batches_per_epoch = self.layout.chunks
        else:
            n_lines = len(corpus.train_starts)
            cfg.batch_size = min(cfg.batch_size, n_lines)
            self.batches_per_epoch = -(-n_lines // cfg.batch_size)
            lengths = np.diff(np.r_[corpus.train_starts, len(corpus.train)]) - 1
            cut = int(np.count_nonzero(lengths > cfg.seq_len))
            if cut:
                self.notes.append(f"{cut} lines longer than --seq-len {cfg.seq_len} are cut")
        if resume is None:
            rng = np.random.default_rng(cfg.seed)
            self.params = model.init_params(model_cfg, rng)
            self.opt = optim.init_state(cfg.optimizer, self.params)
            self.rng = rng  # dropout; carried on in the checkpoint
            self.step = self.epoch = self.pos = 0
            self.state: State | None = None
            self.train_losses: list[float] = []
            self.val_losses: list[tuple[int, float]] = []
            self.best: Params | None = None
            self.best_val = math.inf  # best of every evaluation: picks the weights kept for sampling
            self.plateau_best = math.inf  # best of the scheduled ones: drives --lr-plateau and --patience
            self.evals_since_best = 0
            self.lr_scale = 1.0
            self.wall_time = 0.0
            self.chars_seen = 0
            self.source = source
        else:
            self._restore(resume)
        self.stop_requested = False
        self.stop_reason = ""

    # ------------------------------------------------------------ state in and out

    def _restore(self, ck: Checkpoint) -> None:
        p = ck.meta.get("progress", {})
        self.params = {k: v.copy() for k, v in ck.params.items()}
        self.opt = {k: v.copy() for k, v in ck.opt.items()} or optim.init_state(self.cfg.optimizer, self.params)
        if set(self.opt) != set(optim.init_state(self.cfg.optimizer, self.params)):
            self.notes.append(f"optimizer changed to {self.cfg.optimizer}: its state starts fresh")
            self.opt = optim.init_state(self.cfg.optimizer, self.params)
        self.rng = np.random.default_rng()
        if "rng" in p:
            self.rng.bit_generator.state = p["rng"]
        self.step, self.epoch, self.pos = p.get("step", 0), p.get("epoch", 0), p.get("pos", 0)
        if self.pos >= self.batches_per_epoch:  # resumed on a shorter text: start its next epoch
            self.pos, self.epoch = 0, self.epoch + 1
        self.state = ck.state if self.corpus.mode == "stream" else None
        if self.state is not None and self.state[0][0].shape[0] != self.cfg.batch_size:
            self.state = None
        self.train_losses = [float(x) for x in ck.train_losses]
        self.val_losses = [(int(s), float(v)) for s, v in ck.val_losses]
        self.best = {k: v.copy() for k, v in ck.best.items()} if ck.best is not None else None
        self.best_val = float(ck.meta.get("best_val_loss") or math.inf)
        plateau_best = p.get("plateau_best", ck.meta.get("best_val_loss"))
        self.plateau_best = math.inf if plateau_best is None else float(plateau_best)
        self.evals_since_best = p.get("evals_since_best", 0)
        self.lr_scale = p.get("lr_scale", 1.0)
        self.wall_time = ck.meta.get("wall_time", 0.0)
        self.chars_seen = ck.meta.get("chars_seen", 0)
        self.source = ck.meta.get("source", "")
        self._hashes = ck.line_hashes

    def checkpoint(self) -> Checkpoint:
        c = self.corpus
        if not hasattr(self, "_hashes"):
            self._hashes = self._line_hashes() if c.mode == "lines" else np.zeros(0, np.uint64)
        meta = {
            "train": asdict(self.cfg),
            "mode": c.mode,
            "source": self.source,
            "corpus": {"chars": c.chars, "unk_chars": c.unk_chars, "train_chars": len(c.train), "val_chars": len(c.val),
                       "fingerprint": self.fingerprint},
            "progress": {
                "step": self.step, "epoch": self.epoch, "pos": self.pos,
                "rng": self.rng.bit_generator.state, "evals_since_best": self.evals_since_best,
                "lr_scale": self.lr_scale,
                "plateau_best": None if math.isinf(self.plateau_best) else self.plateau_best,
                "epochs_done": self.epoch + self.pos / self.batches_per_epoch,
            },
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "wall_time": self.wall_time,
            "chars_seen": self.chars_seen,
            "stop_reason": self.stop_reason,
        }
        return Checkpoint(
            self.model_cfg, c.vocab, self.params, self.best, self.opt, self.state, meta,
            np.array(self.train_losses, np.float32), np.array(self.val_losses, np.float64).reshape(-1, 2),
            self._hashes,
        )

    def _line_hashes(self) -> np.ndarray:
        """Hashes of every line of the text, validation lines too (they are in the user's file),
        for sampling's novelty check; none past MAX_HASHED_LINES."""
        c = self.corpus
        if len(c.train_starts) + len(c.val_starts) > MAX_HASHED_LINES:
            return np.zeros(0, np.uint64)
        lines = []
        for ids in (c.train, c.val):
            lines += c.vocab.decode(ids, unk="\ufffd", eos="\n").split("\n")[:-1]
        return line_hashes(lines)

    # ------------------------------------------------------------ one step

    @property
    def lr(self) -> float:
        return self.cfg.lr * self.cfg.lr_decay**self.epoch * self.lr_scale

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        c, B = self.corpus, self.cfg.batch_size
        if c.mode == "stream":
            if self.pos == 0:
                self.state = None  # the streams wrapped around: start afresh
            x, y = self.layout.batch(c.train, self.pos)
            mask = None
        else:
            perm = np.random.default_rng([self.cfg.seed, 2, self.epoch]).permutation(len(c.train_starts))
            which = perm[self.pos * B : (self.pos + 1) * B]
            x, y, mask = lines_batch(c.train, c.train_starts, which, self.cfg.seq_len)
        self.pos += 1
        if self.pos >= self.batches_per_epoch:
            self.pos = 0
            self.epoch += 1
        return x, y, mask

    def train_step(self) -> float:
        x, y, mask = self.next_batch()
        loss, grads, state = model.loss_and_grads(
            self.params, self.model_cfg, x, y, mask, self.state, self.rng if self.model_cfg.dropout else None
        )
        if not math.isfinite(loss):
            raise CharrnnError(
                f"the loss became {loss} at step {self.step + 1}; the checkpoint keeps the last good "
                "state: try a lower --lr or a smaller --clip"
            )
        optim.clip_(grads, self.cfg.clip, self.cfg.clip_mode)
        optim.step_(self.cfg.optimizer, self.params, grads, self.opt, self.lr)
        if self.corpus.mode == "stream":
            self.state = state
        self.step += 1
        self.train_losses.append(loss)
        self.chars_seen += int(mask.sum()) if mask is not None else x.size
        return loss

    # ------------------------------------------------------------ evaluation

    def evaluate(self, params: Params | None = None) -> float | None:
        """Mean validation loss in nats/char, or None without a validation split."""
        c = self.corpus
        if len(c.val) < 2 or (c.mode == "lines" and len(c.val_starts) == 0):
            return None
        return evaluate(params or self.params, self.model_cfg, c.mode, c.val, c.val_starts,
                        self.cfg.seq_len, self.cfg.val_max_chars)

    # ------------------------------------------------------------ the loop

    def done(self, started: float) -> bool:
        cfg = self.cfg
        if cfg.steps and self.step >= cfg.steps:
            self.stop_reason = f"reached --steps {cfg.steps}"
        elif cfg.epochs and self.epoch + self.pos / self.batches_per_epoch >= cfg.epochs:
            self.stop_reason = f"reached --epochs {cfg.epochs:g}"
        elif cfg.time_minutes and time.perf_counter() - started >= cfg.time_minutes * 60:
            self.stop_reason = f"reached --time {cfg.time_minutes:g} minutes"
        elif cfg.patience and self.evals_since_best >= cfg.patience:
            self.stop_reason = f"no improvement in {cfg.patience} evaluations (--patience)"
        elif self.stop_requested:
            self.stop_reason = "interrupted"
        else:
            return False
        return True

    def run_eval(self, scheduled: bool = True) -> float | None:
        """Validate, keep the best weights, and (for evaluations on the --eval-every schedule)
        apply --lr-plateau and count towards --patience. The extra evaluation when a run stops
        between scheduled ones leaves those alone, so stopping and resuming there changes nothing."""
        # a step can overflow the weights with a finite loss; such weights must never be saved
        val = self.evaluate() if all(np.isfinite(p).all() for p in self.params.values()) else math.nan
        if val is not None and not math.isfinite(val):
            raise CharrnnError(
                f"the weights became NaN or infinite by step {self.step}; the checkpoint keeps the last good "
                "state: try a lower --lr or a smaller --clip"
            )
        if val is None:  # no validation split: the training loss stands in for "best"
            recent = self.train_losses[-self.cfg.eval_every :]
            val_like = float(np.mean(recent)) if recent else math.inf
        else:
            val_like = val
            self.val_losses.append((self.step, val))
        if val_like < self.best_val:
            self.best_val = val_like
            self.best = {k: v.copy() for k, v in self.params.items()}
        if not scheduled:
            return val
        if val_like < self.plateau_best:
            self.plateau_best = val_like
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1
            self.lr_scale *= self.cfg.lr_plateau
        return val

    def fit(self, on_step: Callable[[Trainer, float], None] | None = None,
            on_eval: Callable[[Trainer, float | None], None] | None = None) -> None:
        """Train until a stop condition holds. `on_eval` runs after each evaluation
        (the caller saves the checkpoint there)."""
        started = time.perf_counter()
        last = started
        while not self.done(started):
            loss = self.train_step()
            now = time.perf_counter()
            self.wall_time += now - last
            last = now
            if on_step:
                on_step(self, loss)
            if self.step % self.cfg.eval_every == 0:
                val = self.run_eval()
                if on_eval:
                    on_eval(self, val)
                last = time.perf_counter()  # evaluation time is not training time
        if self.step % self.cfg.eval_every != 0 or self.step == 0:
            val = self.run_eval(scheduled=False)
            if on_eval:
                on_eval(self, val)


def evaluate(
    params: Params,
    cfg: ModelConfig,
    mode: str,
    ids: np.ndarray,
    starts: np.ndarray,
    seq_len: int = 64,
    max_chars: int = 0,
    batch_size: int = 64,
) -> float:
    """Mean loss in nats/char over `ids`: whole lines (<EOS> included) in lines mode, or
    one pass of `batch_size` parallel streams carrying their state in stream mode."""
    total, count = 0.0, 0.0
    if mode == "lines":
        n = len(starts)
        if max_chars and len(ids) > max_chars:
            n = max(1, int(np.searchsorted(starts, max_chars)))
        lengths = np.minimum(np.diff(np.r_[starts, len(ids)]), seq_len + 1)  # lines cut as in training
        order = np.argsort(lengths[:n], kind="stable")  # similar lengths together: less padding
        k = 0
        while k < n:
            B = max(1, min(256, 65536 // int(lengths[order[min(k + 255, n - 1)]])))  # bound T * B
            x, y, mask = lines_batch(ids, starts, order[k : k + B], seq_len)
            logits, _, _ = model.forward(params, cfg, x)
            loss, _, m = model.cross_entropy(logits, y, mask, grad=False)
            total += loss * m
            count += m
            k += B
        return total / count
    if max_chars and len(ids) > max_chars:
        ids = ids[:max_chars]
    B = max(1, min(batch_size, (len(ids) - 1) // max(seq_len, 1)))
    L = (len(ids) - 1) // B
    state = None
    for k in range(0, L, seq_len):
        T = min(seq_len, L - k)
        pos = np.arange(B)[None, :] * L + k + np.arange(T)[:, None]  # (T, B)
        logits, state, _ = model.forward(params, cfg, ids[pos].astype(np.int32), state)
        loss, _, m = model.cross_entropy(logits, ids[pos + 1].astype(np.int32), None, grad=False)
        total += loss * m
        count += m
    return total / count


def auto_settings(mode: str, train_chars: int) -> dict[str, Any]:
    """Defaults chosen from the data, for every option the user leaves out.

    Measured on names.txt and tiny-shakespeare (see benchmarks/quality.py): small line
    lists want a small, fast model; running text wants more capacity as it grows."""
    if mode == "lines":
        return dict(cell="lstm", hidden_size=256, layers=1, dropout=0.3, seq_len=64, batch_size=64,
                    lr=3e-3, eval_every=200, patience=5, epochs=30.0)
    if train_chars < 200_000:
        size = dict(hidden_size=128, layers=1, dropout=0.0)
    elif train_chars < 3_000_000:
        size = dict(hidden_size=256, layers=2, dropout=0.1)
    else:
        size = dict(hidden_size=512, layers=2, dropout=0.1)
    return dict(cell="lstm", seq_len=64, batch_size=32, lr=2e-3, eval_every=200, patience=5, epochs=30.0, **size)
