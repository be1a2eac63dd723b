"""The training loop: batches, loss, BPTT, clipping, optimizer, evaluation, early stopping.

`Trainer` owns everything a run needs to resume exactly (parameters, optimizer state, data
position, carried hidden state, RNG) and turns it into a `Checkpoint`. The batches come from
`data.Batches`, the validation loss from `score.evaluate`, and the bookkeeping of the best
weights, --lr-plateau and --patience from `Plateau`.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from charrnn import backend, model, optim
from charrnn.checkpoint import Checkpoint, CorpusInfo, Meta, Progress, line_hashes
from charrnn.config import Mode, ModelConfig, Objective, TrainConfig, auto_settings, plural
from charrnn.data import Batches, Corpus, masked_batch
from charrnn.errors import CharrnnError
from charrnn.model import Params, State
from charrnn.score import evaluate, masked_loss

__all__ = ["Trainer", "Plateau", "TrainConfig", "auto_settings", "evaluate"]

MAX_HASHED_LINES = 2_000_000  # 16 MB of hashes in the checkpoint at most
PACE_STEPS = 10  # steps timed before an automatic --eval-every is fitted to --time
EVALS_PER_BUDGET = 15  # evaluations an automatic --eval-every aims for within --time


def _inf_to_none(x: float) -> float | None:
    return None if math.isinf(x) else x


@dataclass
class Plateau:
    """The best validation loss so far, and what --lr-plateau and --patience make of it.

    Every evaluation may pick new best weights; only those on the --eval-every schedule move
    the plateau: the extra evaluation when a run stops between two leaves it alone, so stopping
    and resuming there trains exactly as one run."""

    best: float = math.inf  # best of every evaluation: picks the weights kept for sampling
    plateau_best: float = math.inf  # best of the scheduled ones
    evals_since_best: int = 0  # scheduled evaluations since plateau_best improved
    lr_scale: float = 1.0  # product of --lr-plateau over those that did not improve

    def record(self, loss: float, scheduled: bool, factor: float) -> bool:
        """Take one evaluation's loss; True when it is the best so far (keep these weights)."""
        improved = loss < self.best
        if improved:
            self.best = loss
        if scheduled:
            if loss < self.plateau_best:
                self.plateau_best = loss
                self.evals_since_best = 0
            else:
                self.evals_since_best += 1
                self.lr_scale *= factor
        return improved


class Trainer:
    def __init__(
        self,
        corpus: Corpus,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        resume: Checkpoint | None = None,
        source: str = "",
    ) -> None:
        self.corpus, self.cfg, self.model_cfg = corpus, cfg, model_cfg
        self.fast = backend.for_training()  # numba's compiled cells when installed (charrnn/fast.py)
        self.backend = backend.describe(self.fast, model_cfg.dtype)  # float64 always runs NumPy (cells.forward)
        self.batches = Batches(corpus, cfg.batch_size, cfg.seq_len, cfg.seed)
        cfg.batch_size, cfg.seq_len = self.batches.batch_size, self.batches.seq_len  # as fitted to the text
        self.batches_per_epoch = self.batches.per_epoch
        self.notes: list[str] = list(self.batches.notes)  # adjustments worth telling the user
        self.fingerprint = zlib.crc32(np.ascontiguousarray(corpus.train).tobytes())  # tells a changed text on resume
        self._hashes: np.ndarray | None = None  # line hashes for the novelty check, made once
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
            self.plateau = Plateau()
            self.wall_time = 0.0
            self.chars_seen = 0
            self.source = source
        else:
            self._restore(resume)
        self.stop_requested = False
        self.stop_reason = ""
        self.last_eval_best = False  # whether the latest evaluation gave the best weights so far
        self.auto_eval_every = 0  # an automatic --eval-every, to fit to --time as the run goes (0: keep eval_every)

    @property
    def best_val(self) -> float:
        return self.plateau.best

    @property
    def evals_since_best(self) -> int:
        return self.plateau.evals_since_best

    # ------------------------------------------------------------ state in and out

    def _restore(self, ck: Checkpoint) -> None:
        p = ck.meta.progress
        self.params = {k: v.copy() for k, v in ck.params.items()}
        self.opt = {k: v.copy() for k, v in ck.opt.items()} or optim.init_state(self.cfg.optimizer, self.params)
        if not ck.opt:
            self.notes.append("the checkpoint has no optimizer state (imported weights are saved without one): "
                              f"{self.cfg.optimizer} starts fresh from these weights")
        elif set(self.opt) != set(optim.init_state(self.cfg.optimizer, self.params)):
            self.notes.append(f"optimizer changed to {self.cfg.optimizer}: its state starts fresh")
            self.opt = optim.init_state(self.cfg.optimizer, self.params)
        self.rng = np.random.default_rng()
        if p.rng is not None:
            self.rng.bit_generator.state = p.rng
        self.step, self.epoch, self.pos = p.step, p.epoch, p.pos
        if self.pos >= self.batches_per_epoch:  # resumed on a shorter text: start its next epoch
            self.pos, self.epoch = 0, self.epoch + 1
        self.state = ck.state if self.corpus.mode == Mode.STREAM else None
        if self.state is not None and self.state[0][0].shape[0] != self.cfg.batch_size:
            self.state = None
        self.train_losses = [float(x) for x in ck.train_losses]
        self.val_losses = [(int(s), float(v)) for s, v in ck.val_losses]
        self.best = {k: v.copy() for k, v in ck.best.items()} if ck.best is not None else None
        best = ck.meta.best_val_loss
        plateau_best = best if p.plateau_best is not None and math.isnan(p.plateau_best) else p.plateau_best
        self.plateau = Plateau(math.inf if best is None else best, math.inf if plateau_best is None else plateau_best,
                               p.evals_since_best, p.lr_scale)
        self.wall_time = ck.meta.wall_time
        self.chars_seen = ck.meta.chars_seen
        self.source = ck.meta.source
        self._hashes = ck.line_hashes

    def new_text(self, source: str) -> None:
        """Resumed on another text: what was judged on the old one (best weights, validation history,
        the plateau, the novelty hashes) starts afresh on this one; weights and optimizer carry on."""
        self.best, self.plateau, self.val_losses, self.source, self._hashes = None, Plateau(), [], source, None

    def meta(self) -> Meta:
        c, pl = self.corpus, self.plateau
        return Meta(
            mode=c.mode,
            objective=self.model_cfg.objective,
            mask_id=model.input_size(self.model_cfg) - 1 if self.model_cfg.bidirectional else None,
            source=self.source,
            best_val_loss=_inf_to_none(pl.best),
            wall_time=self.wall_time,
            chars_seen=self.chars_seen,
            stop_reason=self.stop_reason,
            backend=self.backend,
            corpus=CorpusInfo(c.chars, c.unk_chars, len(c.train), len(c.val), self.fingerprint),
            progress=Progress(self.step, self.epoch, self.pos, dict(self.rng.bit_generator.state), pl.evals_since_best,
                              pl.lr_scale, self.epoch + self.pos / self.batches_per_epoch,
                              _inf_to_none(pl.plateau_best)),
            train=self.cfg,
        )

    def checkpoint(self) -> Checkpoint:
        if self._hashes is None:
            self._hashes = self._line_hashes() if self.corpus.mode == Mode.LINES else np.zeros(0, np.uint64)
        return Checkpoint(
            self.model_cfg, self.corpus.vocab, self.params, self.best, self.opt, self.state, self.meta(),
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
        return self.cfg.lr * self.cfg.lr_decay**self.epoch * self.plateau.lr_scale

    def train_step(self) -> float:
        batch = self.batches.get(self.epoch, self.pos)
        if batch.fresh:
            self.state = None  # the streams wrapped around: start afresh
        self.pos += 1
        if self.pos >= self.batches_per_epoch:
            self.pos = 0
            self.epoch += 1
        dropout_rng = self.rng if self.model_cfg.dropout else None
        if self.model_cfg.bidirectional:  # hide characters; no state carried (both directions see the chunk)
            hide_rng = np.random.default_rng([self.cfg.seed, 3, self.step])  # a function of the step: resumes exactly
            mask_id = model.input_size(self.model_cfg) - 1
            mb = masked_batch(batch, self.corpus.mode, self.cfg.mask_rate, hide_rng, mask_id,
                              every=self.model_cfg.objective == Objective.NEIGHBORS)
            with backend.running_on(self.fast):
                loss, grads, _ = model.loss_and_grads(self.params, self.model_cfg, mb.x, mb.y, mb.weights, None,
                                                      dropout_rng, mb.lengths)
            state = None
        else:
            with backend.running_on(self.fast):
                loss, grads, state = model.loss_and_grads(
                    self.params, self.model_cfg, batch.x, batch.y, batch.mask, self.state, dropout_rng)
        if not math.isfinite(loss):
            raise CharrnnError(
                f"the loss became {loss} at step {self.step + 1}; the checkpoint keeps the last good "
                "state: try a lower --lr or a smaller --clip"
            )
        optim.clip_(grads, self.cfg.clip, self.cfg.clip_mode)
        optim.step_(self.cfg.optimizer, self.params, grads, self.opt, self.lr)
        if self.corpus.mode == Mode.STREAM:
            self.state = state
        self.step += 1
        self.train_losses.append(loss)
        self.chars_seen += batch.chars
        return loss

    # ------------------------------------------------------------ evaluation

    def evaluate(self, params: Params | None = None) -> float | None:
        """Mean validation loss in nats/char (per target character for a bidirectional model), or
        None without a validation split."""
        c = self.corpus
        if len(c.val) < 2 or (c.mode == Mode.LINES and len(c.val_starts) == 0):
            return None
        with backend.running_on(self.fast):
            if self.model_cfg.bidirectional:
                return masked_loss(params or self.params, self.model_cfg, c.mode, c.val, c.val_starts,
                                   self.cfg.seq_len, self.cfg.mask_rate, self.cfg.seed, self.cfg.val_max_chars)
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
            self.stop_reason = f"reached --time {plural(cfg.time_minutes, 'minute')}"
        elif cfg.patience and self.plateau.evals_since_best >= cfg.patience:
            self.stop_reason = f"no improvement in {plural(cfg.patience, 'evaluation')} (--patience)"
        elif self.stop_requested:
            self.stop_reason = "interrupted"
        else:
            return False
        return True

    def run_eval(self, scheduled: bool = True) -> float | None:
        """Validate, keep the best weights, and (for evaluations on the --eval-every schedule)
        apply --lr-plateau and count towards --patience (see Plateau)."""
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
        self.last_eval_best = self.plateau.record(val_like, scheduled, self.cfg.lr_plateau)
        if self.last_eval_best:
            self.best = {k: v.copy() for k, v in self.params.items()}
        return val

    def pace(self, seconds_per_step: float, seconds_per_eval: float = 0.0) -> None:
        """Fit the automatic --eval-every to --time: about EVALS_PER_BUDGET evaluations, taking at most a
        quarter of the time, so that a short run shows its progress (and saves) as it goes. Once an
        evaluation has cost something (seconds_per_eval), the interval only grows, by a whole multiple,
        so that evaluations stay evenly spaced (not step 42, then 46)."""
        budget = self.cfg.time_minutes * 60
        evals = max(1.0, min(EVALS_PER_BUDGET, budget / 4 / max(seconds_per_eval, 1e-9)))
        steps = (budget - evals * seconds_per_eval) / max(seconds_per_step, 1e-9)
        every = max(1, min(self.auto_eval_every, int(steps / evals)))
        if seconds_per_eval:
            now = self.cfg.eval_every
            every = now * max(1, min(round(every / now), self.auto_eval_every // now))
        self.cfg.eval_every = every

    def fit(self, on_step: Callable[[Trainer, float], None] | None = None,
            on_eval: Callable[[Trainer, float | None], None] | None = None) -> None:
        """Train until a stop condition holds. `on_eval` runs after each evaluation
        (the caller saves the checkpoint there)."""
        if self.fast is not None and self.model_cfg.dtype == "float32":  # float64 runs NumPy
            self.fast.warm_up(self.model_cfg.cell, self.model_cfg.activation)  # before the clock and the pace
        started = time.perf_counter()
        last, step0, wall0 = started, self.step, self.wall_time
        pacing = bool(self.auto_eval_every and self.cfg.time_minutes)  # after PACE_STEPS, again after one evaluation
        while not self.done(started):
            loss = self.train_step()
            now = time.perf_counter()
            self.wall_time += now - last
            last = now
            if pacing and self.step - step0 == PACE_STEPS:
                self.pace((self.wall_time - wall0) / PACE_STEPS)
            if on_step:
                on_step(self, loss)
            if self.step % self.cfg.eval_every == 0:
                val = self.run_eval()
                if on_eval:
                    on_eval(self, val)
                if pacing and self.step - step0 >= PACE_STEPS:
                    self.pace((self.wall_time - wall0) / (self.step - step0), time.perf_counter() - now)
                    pacing = False
                last = time.perf_counter()  # evaluation time is not training time
        if self.step % self.cfg.eval_every != 0 or self.step == 0:
            val = self.run_eval(scheduled=False)
            if on_eval:
                on_eval(self, val)
