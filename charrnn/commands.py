"""What each CLI command does once its options are parsed: call the library, show results.

`charrnn sample` is the command people run most and wait on, so this module imports only
what sampling needs; training, evaluation and inspection import the rest when they run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from charrnn import backend, checkpoint, limits
from charrnn.config import MAX_SEQ_LEN, Mode, ModelConfig, Objective, TrainConfig, option, plural
from charrnn.errors import CharrnnError, OptionError, visible
from charrnn.model import param_shapes, textbook_param_count, training_bytes
from charrnn.sample import BATCH, check_options, generate, generate_from, sampling_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from charrnn.data import Corpus
    from charrnn.trainer import Trainer

MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))
STOPS = ("steps", "epochs", "time_minutes")
# options that may change when resuming; the others define the model and its data
RESUMABLE = {"dropout", "lr", "lr_decay", "lr_plateau", "clip", "clip_mode", *STOPS, "eval_every", "patience",
             "quiet", "out", "resume", "text_file", "encoding", "errors", "force", "init_from", "threads"}


class LazyConsole:
    """A rich Console made when first used: `charrnn sample` writes plain text and never loads rich."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr
        self.console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self.console is None:
            from rich.console import Console

            self.console = Console(stderr=self.stderr, highlight=False, soft_wrap=True)
        return getattr(self.console, name)


out = cast("Console", LazyConsole())  # used as the Console it becomes
err = cast("Console", LazyConsole(stderr=True))


def plain(value: object) -> str:
    """A path or a string from a file, for rich markup: its brackets escaped (`names[v2].txt` stays
    whole, `[/x]` cannot break the output) and control characters shown, never sent to the terminal."""
    from rich.markup import escape

    return escape(visible(value))


def shown(ch: str) -> str:
    """A vocabulary character as a person can read it."""
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(ch, ch if ch.isprintable() else f"\\u{ord(ch):04x}")


# ---------------------------------------------------------------- train


def check_train_options(o: dict[str, Any]) -> None:
    """Refuse impossible option values before reading a text or a checkpoint: the configs'
    own checks, on what the user gave (the rest at its defaults)."""
    from charrnn import data
    from charrnn.config import minutes

    if o.get("time_minutes") is not None:
        o["time_minutes"] = minutes(o["time_minutes"])
    if o.get("threads", 1) < 1:
        raise OptionError(f"--threads must be at least 1, not {o['threads']}")
    if o.get("objective") not in (None, "masked", "neighbors"):  # next is what a forward model predicts
        raise OptionError(f"--objective must be masked or neighbors, not {o['objective']!r}")
    TrainConfig(**{k: o[k] for k in TRAIN_FIELDS if o.get(k) is not None})
    given = {k: o[k] for k in MODEL_FIELDS if o.get(k) is not None}
    if o.get("resume") or o.get("init_from"):  # the checkpoint says whether it is bidirectional
        given.pop("objective", None)
        given.pop("head", None)
    ModelConfig(3, **given)
    data.check_decoding(o["encoding"], o["errors"])


def resolve_configs(o: dict[str, Any], explicit: set[str], corpus: Corpus) -> tuple[ModelConfig, TrainConfig, set[str]]:
    """Options the user gave, else defaults chosen from the corpus, else the option defaults.
    Returns the configs and the names of the values chosen from the corpus."""
    from charrnn.config import auto_settings

    auto = auto_settings(corpus.mode, len(corpus.train), o.get("optimizer") or "adam", bool(o.get("bidirectional")))
    stop_given = bool(set(STOPS) & explicit)
    chosen: set[str] = set()
    values = {}
    for name in MODEL_FIELDS + TRAIN_FIELDS:
        v = o.get(name)
        if name in STOPS and stop_given:
            v = v or 0  # a stop the user set replaces the automatic ones
        elif v is None and name in auto:
            v = auto[name]
            chosen.add(name)
        if v is not None:
            values[name] = v
    values["mode"] = corpus.mode.value
    if "head" not in values and values.get("objective") == Objective.NEIGHBORS:  # measured: fills names 3 points better
        values["head"] = values["hidden_size"]
        chosen.add("head")
    model_cfg = ModelConfig(len(corpus.vocab), **{k: values[k] for k in MODEL_FIELDS if k in values})
    train_cfg = TrainConfig(**{k: values[k] for k in TRAIN_FIELDS if k in values})
    return model_cfg, train_cfg, chosen


def resumed_configs(o: dict[str, Any], explicit: set[str], resume: checkpoint.Checkpoint
                    ) -> tuple[ModelConfig, TrainConfig]:
    """The checkpoint's configs with the options that may change on resume applied."""
    old = resume.meta.train
    for name in explicit - RESUMABLE:
        before = getattr(old, name, getattr(resume.cfg, name, None))
        if before is not None and before != o[name] and name != "mode":
            raise CharrnnError(f"{option(name)} cannot change when resuming "
                               f"(the checkpoint has {before}); train a new model instead")
    changes = {k: o[k] for k in explicit & RESUMABLE if k in TRAIN_FIELDS}  # the rest, stop limits too, as they were
    model_cfg = replace(resume.cfg, dropout=o["dropout"]) if "dropout" in explicit else resume.cfg
    return model_cfg, replace(old, **changes)


def _same_file(a: Path, b: Path | None) -> bool:
    try:
        return b is not None and a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def default_target(o: dict[str, Any]) -> Path:
    """Where the checkpoint goes: --out, else the resumed file, else TEXT_FILE's stem + .npz here."""
    return Path(o["out"] or o["resume"] or f"{Path(o['text_file']).stem}.npz")


def checkpoint_target(o: dict[str, Any]) -> Path:
    """default_target, checked: an existing file there is replaced only if it is a charrnn checkpoint
    the user may write, is not the training text, and is the one being resumed or --force says so."""
    text_file = Path(o["text_file"])
    target = default_target(o)
    if target.is_dir():
        raise CharrnnError(f"{target}: is a folder; give the checkpoint a file name, e.g. "
                           f"--out {target / (text_file.stem + '.npz')}")
    if not target.parent.is_dir():
        raise CharrnnError(f"{target.parent}: no such folder for the checkpoint")
    if not target.exists():
        return target
    if _same_file(target, text_file):
        raise CharrnnError(f"{target}: refusing to overwrite the training text; choose another --out")
    if target.suffix != ".npz":
        raise CharrnnError(f"{target}: refusing to overwrite something that is not a .npz checkpoint; "
                           "choose another --out")
    _refuse_if_write_protected(target, "--out")
    try:
        old = checkpoint.load(target)
    except CharrnnError:
        raise CharrnnError(f"{target}: refusing to overwrite a file that is not a charrnn checkpoint; "
                           "choose another --out") from None
    if not _same_file(target, Path(o["resume"]) if o["resume"] else None) and not o["force"]:
        best = old.meta.best_val_loss
        raise CharrnnError(
            f"{target} already holds a model ({old.meta.progress.step:,} steps"
            + (f", best loss {best:.4f}" if best is not None else "") + f"): continue it with --resume {target}, "
            "write elsewhere with --out, or replace it with --force")
    return target


def _refuse_if_write_protected(target: Path, option_name: str) -> None:
    if not os.access(target, os.W_OK) or not target.stat().st_mode & 0o200:  # root too: 0444 means "keep"
        raise CharrnnError(f"{target}: refusing to overwrite a write-protected file; choose another {option_name}")


def check_memory(model_cfg: ModelConfig, cfg: TrainConfig, corpus: Corpus) -> None:
    """Refuse a model or batch too large for the memory there is, before allocating any of it."""
    from charrnn.data import batch_shape
    from charrnn.optim import SLOTS

    B, T = batch_shape(corpus, cfg.batch_size, cfg.seq_len)
    limits.require(training_bytes(model_cfg, B, T, len(SLOTS[cfg.optimizer])),
                   f"training a {model_cfg.layers:,} × {model_cfg.hidden_size:,} {model_cfg.cell} on a "
                   f"{model_cfg.vocab_size:,}-character vocabulary in batches of {B:,} × {T:,}")


def make_trainer(o: dict[str, Any], explicit: set[str], text: str, resume: checkpoint.Checkpoint | None
                 ) -> tuple[Trainer, set[str], list[str]]:
    """A new or resumed Trainer on `text`, the names of the settings chosen from the text,
    and notes for the user."""
    from charrnn import data
    from charrnn.trainer import Trainer

    notes: list[str] = []
    source = Path(o["text_file"]).name
    if o.get("init_from") and resume is not None:
        raise OptionError("--init-from starts a new run from a checkpoint's weights; --resume continues one: "
                          "choose one")
    if o.get("init_from"):
        init = checkpoint.load(o["init_from"])
        for name in sorted(explicit & set(MODEL_FIELDS) - {"dropout"}):
            if o[name] != getattr(init.cfg, name):
                raise OptionError(f"{option(name)} cannot change with --init-from (the checkpoint has "
                                  f"{getattr(init.cfg, name)}): its weights are that model's")
        mode = o["mode"] if "mode" in explicit else init.meta.mode
        corpus = data.make_corpus(text, mode, o["val_fraction"], o["min_count"], o["max_vocab"], o["seed"],
                                  vocab=init.vocab)
        _, cfg, chosen = resolve_configs(o, explicit, corpus)
        chosen -= set(MODEL_FIELDS)  # the checkpoint's, not chosen from this text
        model_cfg = replace(init.cfg, dropout=o["dropout"]) if "dropout" in explicit else init.cfg
        check_memory(model_cfg, cfg, corpus)
        trainer = Trainer(corpus, model_cfg, cfg, source=source)
        trainer.params = {k: v.copy() for k, v in init.sampling_params.items()}
        notes.append(f"starting from the weights and vocabulary of {o['init_from']} ({init.meta.progress.step:,} "
                     "steps), with a fresh optimizer")
    elif resume is None:
        corpus = data.make_corpus(text, o["mode"], o["val_fraction"], o["min_count"], o["max_vocab"], o["seed"])
        model_cfg, cfg, chosen = resolve_configs(o, explicit, corpus)
        check_memory(model_cfg, cfg, corpus)
        trainer = Trainer(corpus, model_cfg, cfg, source=source)
    else:
        model_cfg, cfg = resumed_configs(o, explicit, resume)
        corpus = data.make_corpus(text, resume.meta.mode, cfg.val_fraction, cfg.min_count, cfg.max_vocab,
                                  cfg.seed, vocab=resume.vocab)
        check_memory(model_cfg, cfg, corpus)
        trainer = Trainer(corpus, model_cfg, cfg, resume=resume)
        if resume.meta.corpus.fingerprint not in (None, trainer.fingerprint):
            notes.append("this text differs from the one the checkpoint was trained on: training continues on it "
                         "(not an exact resume), judged on its own validation set, with best weights and "
                         "history of validation starting afresh")
            trainer.new_text(source)
        chosen = set()
    notes += trainer.notes
    if corpus.unk_chars > 0:
        notes.append(f"{corpus.unk_chars:,} characters of the text are <UNK> (rarer than --min-count, "
                     "beyond --max-vocab, or not in the resumed vocabulary)")
    return trainer, chosen, notes


def objective_words(objective: Objective) -> str:
    """What a model learns to predict, for the training summary and `inspect`."""
    return {Objective.NEXT: "the next character",
            Objective.MASKED: "the hidden characters",
            Objective.NEIGHBORS: "every character, from both sides"}[objective]


def config_lines(trainer: Trainer, chosen: set[str], source: str, n_params: int) -> list[str]:
    """The settings of a run, one plain line each (rich markup), under 80 columns: a terminal shows them
    as they are, and a pipe gets them without padding."""
    from charrnn.trainer import EVALS_PER_BUDGET

    model_cfg, cfg, corpus = trainer.model_cfg, trainer.cfg, trainer.corpus

    def v(name: str, value: Any) -> str:
        return f"{value}" + (" [dim](auto)[/]" if name in chosen else "")

    lines = corpus.mode == Mode.LINES
    stops = [plural(cfg.steps, "step") if cfg.steps else "",
             v("epochs", plural(cfg.epochs, "epoch")) if cfg.epochs else "",
             plural(cfg.time_minutes, "minute") if cfg.time_minutes else "",
             v("patience", plural(cfg.patience, "evaluation") + " without improvement") if cfg.patience else ""]
    rows = [
        ("data", f"{corpus.mode} mode, {corpus.chars:,} chars, {corpus.unk_chars:,} unknown"),
        ("vocabulary", f"{len(corpus.vocab)} ({len(corpus.vocab) - 2} chars + <UNK> + <EOS>)"),
        ("train / val", f"{len(corpus.train):,} / {len(corpus.val):,} ids"
         + (f" ({len(corpus.train_starts):,} / {len(corpus.val_starts):,} lines)" if lines else "")),
        ("model", f"{v('cell', model_cfg.cell)}" + (f" ({model_cfg.activation})" if model_cfg.cell == "rnn" else "")
         + f", {v('layers', model_cfg.layers)} × {v('hidden_size', model_cfg.hidden_size)}"
         + (f", head {v('head', model_cfg.head)}" if model_cfg.head else "") + ", dropout "
         + f"{v('dropout', model_cfg.dropout)}, {model_cfg.dtype}"),
        ("parameters", f"{n_params:,}"),
        ("batches", f"{v('batch_size', cfg.batch_size)} × "
         + (f"lines up to {v('seq_len', cfg.seq_len)}" if lines else f"{v('seq_len', cfg.seq_len)} steps")
         + (", no state carried between chunks" if model_cfg.bidirectional and not lines else "")),
        ("objective", ("bidirectional: " if model_cfg.bidirectional else "") + objective_words(model_cfg.objective)
         + (" [dim](auto)[/]" if "objective" in chosen else "")),
        ("hidden", f"{v('mask_rate', f'{cfg.mask_rate:.0%}')} of the characters read as <MASK>, in spans of 1-3"
         if model_cfg.bidirectional else ""),
        ("optimizer", f"{cfg.optimizer}, lr {v('lr', cfg.lr)}"
         + (f", ×{cfg.lr_decay}/epoch" if cfg.lr_decay < 1 else "")
         + (f", ×{cfg.lr_plateau} on plateau" if cfg.lr_plateau < 1 else "")
         + (f", clip {cfg.clip} ({cfg.clip_mode})" if cfg.clip else ", no clipping")),
        ("stop at", ", ".join(s for s in stops if s) or "Ctrl-C"),
        ("evaluate", (f"every {cfg.eval_every} steps at most, ~{EVALS_PER_BUDGET} in --time [dim](auto)[/]"
                      if "eval_every" in chosen and cfg.time_minutes else
                      "every " + v("eval_every", plural(cfg.eval_every, "step"))) + f", seed {cfg.seed}"),
        ("threads", _threads_shown()),
        ("backend", trainer.backend),
    ]
    settings = [f"[dim]{name:<12}[/] {value}" for name, value in rows if value]
    return [f"charrnn train [bold]{plain(source)}[/]", *settings]


def _threads_shown() -> str:
    """The BLAS thread count this process runs with, and where it came from."""
    n = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return f"{n} BLAS (--threads; OPENBLAS_NUM_THREADS wins)" if n else "BLAS default (all cores)"


BAR = "{percentage:3.0f}%|{bar}| {n:,}/{total:,} [{elapsed}<{remaining}{postfix}]"  # tqdm's, with 1,234
ENDLESS_BAR = "{n:,} steps [{elapsed}{postfix}]"


class TrainDisplay:
    """The progress bar, an evaluation line with a sample preview, and a save after every evaluation.

    The bar counts towards the limit that will stop the run: --steps, --epochs, or the steps that
    --time leaves room for at the pace so far. An automatic epoch limit behind --patience rarely
    binds, so such a bar has no end, and says how close patience is instead."""

    def __init__(self, trainer: Trainer, target: Path, quiet: bool, chosen: set[str] | frozenset[str] = frozenset()
                 ) -> None:
        from tqdm import tqdm

        cfg = trainer.cfg
        self.trainer, self.target, self.quiet = trainer, target, quiet
        self.until_patience = bool(cfg.patience) and "epochs" in chosen and not cfg.steps
        epochs = 0 if self.until_patience else math.ceil(cfg.epochs * trainer.batches_per_epoch)
        self.limit = min((n for n in (cfg.steps, epochs) if n), default=None)  # in steps
        self.bar = tqdm(total=self.limit, initial=trainer.step, unit="step", dynamic_ncols=True,
                        disable=True if quiet else None, file=sys.stderr, smoothing=0.05, mininterval=0.25,
                        bar_format=BAR if self.limit else ENDLESS_BAR)
        self.started = time.perf_counter()
        self.step0, self.chars0 = trainer.step, trainer.chars_seen
        self.ema: float | None = None  # smoothed training loss
        self.last_val = trainer.val_losses[-1][1] if trainer.val_losses else None
        self.saved_step: int | None = None  # the step of this run's last completed save

    def save(self) -> None:
        checkpoint.save(self.target, self.trainer.checkpoint())
        self.saved_step = self.trainer.step

    def what_is_saved(self) -> str:
        """What the target holds now, for a run stopped before its next save finished."""
        if self.saved_step is not None:
            return f"{self.target} holds the evaluation at step {self.saved_step:,}"
        if self.target.exists():
            return f"{self.target} is as it was before this run"
        return f"no checkpoint was written ({self.target} does not exist)"

    def on_step(self, tr: Trainer, loss: float) -> None:
        self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        if tr.cfg.time_minutes:  # the steps the time left has room for, at this run's pace (never below the count)
            left = max(0.0, tr.cfg.time_minutes * 60 - elapsed)
            fits = tr.step + int(left * (tr.step - self.step0) / elapsed)
            self.bar.total, self.bar.bar_format = min(fits, self.limit or fits), BAR
        if tr.step % 5 == 0 or tr.step == self.limit:
            post = f"loss {self.ema:.3f}"
            if self.last_val is not None:
                post += f" val {self.last_val:.3f}"
            post += f", {(tr.chars_seen - self.chars0) / elapsed / 1000:,.1f}k chars/s"
            if self.until_patience:
                post += f", patience {tr.evals_since_best}/{tr.cfg.patience}"
            self.bar.set_postfix_str(post, refresh=False)
        self.bar.update(1)

    def on_eval(self, tr: Trainer, val: float | None) -> None:
        from rich.text import Text

        self.last_val = val
        self.save()
        if self.quiet:
            return
        best = " [green]best[/]" if tr.last_eval_best else ""
        recent = tr.train_losses[-tr.cfg.eval_every:]  # none when stopped before the first step
        train = f"{np.mean(recent):.4f}" if recent else f"{'–':>6}"
        line = f"[dim]step[/] {tr.step:>6,}  [dim]train[/] {train}"
        if val is not None:
            line += f"  [dim]val[/] {val:.4f}{best}"
        room = max(20, err.width - Text.from_markup(line).cell_len - 2)  # one line, in a terminal or a pipe (80)
        preview = self.preview(tr).replace("\n", "⏎")
        preview = preview if len(preview) <= room else preview[:room - 1] + "…"
        self.bar.clear()
        err.print(line + f"  [cyan]{Text(preview).markup}[/]")
        self.bar.refresh()

    def preview(self, tr: Trainer) -> str:
        """A few sampled lines or a piece of text; for a bidirectional model, validation lines
        with one character blanked and filled (blank → filled)."""
        lines = tr.corpus.mode == Mode.LINES
        if not tr.model_cfg.bidirectional:
            s = generate(tr.params, tr.model_cfg, tr.corpus.vocab, tr.corpus.mode, n=4 if lines else 1,
                         length=tr.cfg.seq_len if lines else 80, temperature=0.8, rng=np.random.default_rng(tr.step))
            return ", ".join(s.texts) if lines else s.texts[0]
        from charrnn import fill

        c = tr.corpus
        ids, starts = (c.val, c.val_starts) if len(c.val) > 1 else (c.train, c.train_starts)
        texts, positions = fill.blank_one_each(c.mode, ids, starts, min(tr.cfg.seq_len, 40), seed=0, spread=3)
        texts, positions = texts[:3], positions[:3]
        ck = checkpoint.Checkpoint(tr.model_cfg, c.vocab, tr.params, meta=tr.meta())
        got = fill.fill_each(ck, texts, positions)
        shown_ = []
        for t, p, g in zip(texts, positions, got, strict=True):
            text = c.vocab.decode(t)
            shown_.append(f"{text[:p]}_{text[p + 1:]} → {text[:p]}{c.vocab.token(int(g))}{text[p + 1:]}")
        return ", ".join(shown_)

    def close(self) -> None:
        self.bar.close()


SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # each saves and exits 128 + its number
if hasattr(signal, "SIGHUP"):  # the terminal closed: save as for SIGTERM
    SIGNALS[signal.SIGHUP] = "SIGHUP"


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[list[signal.Signals]]:
    """Ctrl-C or SIGTERM asks the trainer to stop after this step (it saves); a second Ctrl-C
    stops at once. Yields the list of signals received."""
    got: list[signal.Signals] = []

    def handler(signum: int, frame: Any) -> None:
        if got and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        got.append(signal.Signals(signum))
        trainer.stop_requested = True

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_train(o: dict[str, Any], explicit: set[str]) -> int:
    from charrnn import data, report

    check_train_options(o)
    resume = checkpoint.load(o["resume"]) if o["resume"] else None
    target = checkpoint_target(o)
    text_file = Path(o["text_file"])
    text = data.read_text(text_file, o["encoding"], o["errors"])
    trainer, chosen, notes = make_trainer(o, explicit, text, resume)
    quiet = o["quiet"]
    n_params = sum(int(np.prod(s)) for s in param_shapes(trainer.model_cfg).values())
    assert n_params == textbook_param_count(trainer.model_cfg)
    if not quiet:
        out.print("\n".join(config_lines(trainer, chosen, text_file.name, n_params)))
        if resume is not None:
            out.print(f"[dim]resuming from[/] {plain(o['resume'])} [dim]at step[/] {trainer.step:,}")
    for note in notes:
        err.print(f"[yellow]Note:[/] {plain(note)}")

    display = TrainDisplay(trainer, target, quiet, chosen)
    trainer.auto_eval_every = trainer.cfg.eval_every if "eval_every" in chosen else 0
    with stop_on_signals(trainer) as got:  # the last save too: SIGTERM during it must not cut it short
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # divergence ends in one Error line instead
                trainer.fit(display.on_step, display.on_eval)
            if trainer.step % trainer.cfg.eval_every == 0 and trainer.step > 0:
                display.save()  # the last evaluation was saved before the stop reason was known
        except KeyboardInterrupt:
            raise CharrnnError(f"interrupted twice: stopped without saving; {display.what_is_saved()}") from None
        finally:
            display.close()
    if trainer.stop_reason == "interrupted":
        err.print(f"[yellow]{SIGNALS[got[0]]}[/]: saved {plain(target)} at step {trainer.step:,}. Resume with:\n"
                  f"  charrnn train {plain(text_file)} --resume {plain(target)}")
        return 128 + int(got[0])  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    best = trainer.best_val  # the end of the run is shown even with --quiet: where the model is, how good
    fig = report.loss_figures(best if math.isfinite(best) else None)
    summary = (f"[bold]done[/]: {plain(trainer.stop_reason)}; {plural(trainer.step, 'step')} in "
               f"{trainer.wall_time:,.0f} s")
    out.print(summary)
    if fig["loss"] is not None:
        unit = "nats/char" if not trainer.model_cfg.bidirectional else f"nats per {trainer.model_cfg.objective.per}"
        out.print(f"best {'val' if trainer.val_losses else 'train'} loss {fig['loss']:.4f} {unit} "
                  f"({fig['bits_per_char']:.3f} bits, perplexity {fig['perplexity']:.2f})")
    bi = trainer.model_cfg.bidirectional
    use = f"charrnn fill {plain(target)} 'th_ qu_ck'" if bi else f"charrnn sample {plain(target)} -n 10"
    out.print(f"saved [bold]{plain(target)}[/]: try  {use}")
    return 0


# ---------------------------------------------------------------- sample


def _write_now(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def temperatures(value: str) -> list[float]:
    """--temperature 0.8, or several separated by commas (0.2,0.5,1.0): one block of samples each."""
    try:
        return [float(t) for t in value.split(",")]
    except ValueError:
        raise OptionError(f"--temperature must be a number, or numbers separated by commas, not {value!r}"
                          ) from None


def sample_label(temperature: float | None, k: int = 1, n: int = 1) -> str:
    """The line before sample k of n of running text, or before a block of samples at one of several
    temperatures: unmistakable next to the blank lines of the text itself, and easy to split on (`^=== `)."""
    parts = [f"sample {k} of {n}"] if n > 1 else []
    if temperature is not None:
        parts.append(f"temperature {temperature:g}")
    return f"=== {', '.join(parts)} ==="


def run_sample(ckpt: Path, num: int | None, length: int | None, temperature: str, top_k: int, top_p: float,
               prime: str, prime_file: Path | None, seed: int | None, allow_unk: bool, novel: bool | None,
               as_json: bool = False) -> int:
    temps = temperatures(temperature)
    for t in temps:
        check_options(t, top_k, top_p, 1 if num is None else num, 1 if length is None else length, seed)
    if prime_file is not None:
        from charrnn import data

        if prime:
            raise OptionError("--prime and --prime-file both give the text to start from: choose one")
        prime = data.read_text(prime_file, "utf-8", "strict")
    ck = checkpoint.load(ckpt)
    if prime_file is not None and ck.meta.mode == Mode.LINES:  # the file's last line end ends the line: not a character
        prime = prime.removesuffix("\n")  # read_text has turned CRLF into LF
    if ck.cfg.bidirectional:
        raise CharrnnError(f"{ckpt} is a bidirectional model: it fills in missing characters rather than "
                           f"writing text; try  charrnn fill {ckpt} 'th_ qu_ck'")
    mode = ck.meta.mode
    if num is None:
        num = 10 if mode == Mode.LINES else 1  # a list of names; one running text
    if length is None:
        length = ck.meta.train.seq_len if mode == Mode.LINES else 500
    rng = np.random.default_rng(seed)
    stream = mode == Mode.STREAM and not as_json  # running text: the first sample printed as it grows
    rows = min(num, BATCH)
    limits.require(sampling_bytes(ck.cfg, rows, length, len(prime), kept=not (stream and num == 1)),
                   f"sampling {rows:,} × {length:,} characters" + (" at a time" if num > rows else ""))
    labelled = (mode == Mode.STREAM and num > 1) or len(temps) > 1
    unknown = ck.vocab.encode(prime)[1]
    if unknown:  # before the text, not after the 500 characters streamed below it
        _note(f"Warning: {unknown} character(s) of {'--prime-file' if prime_file else '--prime'} are "
              "not in the vocabulary: they were read as <UNK>")
    for t in temps:
        label_t = t if len(temps) > 1 else None
        if mode == Mode.LINES and labelled and not as_json:
            _write_now(sample_label(label_t) + "\n")
        printed, generated, new, repeats = 0, 0, 0, 0
        for done in range(0, num, rows):  # at most BATCH samples at a time, each batch printed when ready: flat memory
            live = None
            if stream and done == 0:
                if labelled:
                    _write_now(sample_label(label_t, 1, num) + "\n")
                _write_now(prime)
                live = _write_now
            s = generate_from(ck, min(rows, num - done), novel, length=length, temperature=t, top_k=top_k,
                              top_p=top_p, prime=prime, rng=rng, allow_unk=allow_unk, live=live)
            texts = s.texts
            if live is not None:
                live("\n")
                texts = texts[1:]  # printed already (and not kept when it was the only one)
                printed += 1
            if as_json:
                for k, text in enumerate(texts, printed + 1):
                    _write_now(json.dumps({"sample": k, "temperature": t, "text": text}, ensure_ascii=False) + "\n")
            elif stream:
                for k, text in enumerate(texts, printed + 1):
                    _write_now(f"{sample_label(label_t, k, num)}\n{text}\n")
            elif texts:
                _write_now("\n".join(texts) + "\n")
            printed += len(texts)
            generated, repeats = generated + s.generated, repeats + s.repeats
            new = new + s.novel if s.novel >= 0 and new >= 0 else -1
        if new >= 0:
            _report_novelty(new, generated, repeats, printed, num, novel)
    return 0


def _note(line: str) -> None:
    """A plain line on stderr: sampling starts faster without rich."""
    print(line, file=sys.stderr, flush=True)


def _report_novelty(new: int, generated: int, repeats: int, printed: int, num: int, novel: bool | None) -> None:
    _note(f"novelty: {new:,} of {generated:,} generated samples ({new / max(generated, 1):.0%}) are not in the "
          f"training text{'' if novel else '; shown: new ones first (--allow-seen: no check)'}")
    if repeats:
        _note(f"Warning: only {num - repeats:,} new samples found; the last {repeats:,} are lines of the "
              "training text, empty or repeated")
    elif printed < num:
        _note(f"Warning: only {printed:,} novel samples found")


# ---------------------------------------------------------------- inspect


def run_inspect(ckpt: Path, as_json: bool) -> int:
    from rich.table import Table
    from rich.text import Text

    from charrnn import report

    ck = checkpoint.load(ckpt)
    s = report.summary(ck, str(ckpt))
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    from charrnn.chart import line_chart

    m, d, tr, prm = s["config"]["model"], s["data"], s["training"], s["parameters"]
    out.print(f"[bold]{plain(ckpt)}[/]  [dim](format {s['format_version']})[/]")
    cell = ("bidirectional " if m.get("bidirectional") else "") + m["cell"] + (
        f" ({m['activation']})" if m["cell"] == "rnn" else "")
    head = f", head {m['head']} (tanh)" if m.get("head") else ""
    out.print(f"[dim]model[/]  {cell}, {m['layers']} × {m['hidden_size']}{head}, dropout {m['dropout']}, {m['dtype']}")
    if m.get("bidirectional"):
        rate = f"{s['config']['train'].get('mask_rate', 0.15):.0%}"
        out.print(f"[dim]learns[/] {objective_words(Objective(m.get('objective', 'masked')))}; {rate} hidden as "
                  "<MASK>")
    out.print(f"[dim]backend[/] training here runs on {plain(backend.planned(m['dtype']))}")
    out.print(f"[dim]data[/]   {d.get('mode')} mode, {plain(d.get('source') or '?')}, {d.get('chars', 0):,} chars"
              + (f", {d['unk_chars']:,} <UNK>" if d.get("unk_chars") else ""))
    vocab = "".join(shown(c) for c in s["vocab"]["chars"])
    out.print(f"[dim]vocabulary[/] {s['vocab']['size']}: <UNK> <EOS> {Text(vocab).markup}")

    judge = "validation" if tr["history"]["val"] else "training loss"
    t = Table(title="parameters" + (f" (best {judge} weights)" if prm["best_weights"] else ""), title_justify="left",
              box=None, pad_edge=False)
    for col in ("name", "shape", "count", "mean", "std", "min", "max", "L2 norm"):
        t.add_column(col, justify="left" if col in ("name", "shape") else "right")
    for name, a in prm["arrays"].items():
        t.add_row(name, "×".join(map(str, a["shape"])), f"{a['count']:,}",
                  *(f"{a[k]:+.4f}" if k in ("mean", "min", "max") else f"{a[k]:.4f}"
                    for k in ("mean", "std", "min", "max", "l2")))
    ok = prm["total"] == prm["textbook_total"]
    out.print(t)
    out.print(f"[bold]total {prm['total']:,}[/]  " + ("[green]✓ matches the textbook formula[/]" if ok
              else f"[red]✗ the textbook formula says {prm['textbook_total']:,}[/]"))

    g = Table(title="training", title_justify="left", box=None, show_header=True, pad_edge=False)
    for col in ("", "nats/char", "bits/char", "perplexity"):
        g.add_column(col, justify="right" if col else "left")
    for label, key in (("final train", "final_train"), ("final val", "final_val"), ("best val", "best_val")):
        f = tr[key]
        if f["loss"] is not None:
            g.add_row(label, f"{f['loss']:.4f}", f"{f['bits_per_char']:.4f}", f"{f['perplexity']:.3f}")
    out.print(g)
    rate = f"{tr['chars_per_s']:,.0f} chars/s" if tr["chars_per_s"] else "-"
    out.print(f"[dim]steps[/] {tr['steps']:,}  [dim]epochs[/] {tr['epochs']:.2f}  "
              f"[dim]chars seen[/] {tr['chars_seen']:,}")  # two lines: one ran past 80 columns
    out.print(f"[dim]time[/] {tr['wall_time_s']:,.1f} s  [dim]speed[/] {rate}")
    if tr["stop_reason"]:
        out.print(f"[dim]stopped:[/] {plain(tr['stop_reason'])}")
    if tr["backend"]:
        out.print(f"[dim]trained on[/] {plain(tr['backend'])}")
    h = tr["history"]
    series = {}
    if h["train"]:
        a = np.array(h["train"])
        series["train"] = (a[:, 0], a[:, 1])
    if h["val"]:
        a = np.array(h["val"])
        series["val"] = (a[:, 0], a[:, 1])
    if series:
        out.print("\n[dim]loss[/]   [blue]• train[/]" + ("   [magenta]× validation[/]" if "val" in series
                                                      else "   [dim](no validation split)[/]"))
        for row in line_chart(series):
            out.print(Text(row.rstrip()).markup.replace("•", "[blue]•[/]").replace("×", "[magenta]×[/]"))
    return 0


# ---------------------------------------------------------------- eval


def run_eval(ckpt: Path, text_file: Path, as_json: bool, encoding: str, errors: str) -> int:
    from charrnn import data, report
    from charrnn.score import encode_text, text_loss

    try:
        ck = checkpoint.load(ckpt)
    except CharrnnError:
        if Path(text_file).suffix == ".npz" and Path(ckpt).suffix != ".npz":
            raise CharrnnError(f"{ckpt} is not a checkpoint and {text_file} looks like one: the arguments look "
                               f"swapped; try  charrnn eval {text_file} {ckpt}") from None
        raise
    text = data.read_text(text_file, encoding, errors)
    mode = ck.meta.mode
    ids, starts, unk = encode_text(ck, text, str(text_file))
    chars = len(ids) if mode == Mode.LINES else len(ids) - 1  # a stream's first character is context, not predicted
    if ck.cfg.bidirectional:
        return _eval_masked(ck, text_file, ids, starts, unk, as_json)
    loss = text_loss(ck, ids, starts)
    fig = report.loss_figures(loss)
    result = {**fig, "chars": chars, "unk_chars": int(unk), "mode": mode.value, "file": str(text_file)}
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    out.print(f"[bold]{plain(text_file)}[/] ({mode} mode): {chars:,} characters scored"
              + (" (<EOS> included)" if mode == Mode.LINES else ""))
    out.print(f"  loss       {fig['loss']:.4f} nats/char\n  bits/char  {fig['bits_per_char']:.4f}\n"
              f"  perplexity {fig['perplexity']:.3f}")
    if unk:
        err.print(f"[yellow]Note:[/] {unk:,} characters are not in the model's vocabulary and were scored as <UNK>")
    return 0


def _eval_masked(ck: checkpoint.Checkpoint, text_file: Path, ids: np.ndarray, starts: np.ndarray, unk: int,
                 as_json: bool) -> int:
    """eval of a bidirectional model: its training loss (characters hidden by a fixed seed, as in
    training) and the fill accuracy with one character blanked per line or at spread positions."""
    from charrnn import fill, report
    from charrnn.score import text_loss

    mode, cfg = ck.meta.mode, ck.meta.train
    loss = text_loss(ck, ids, starts)
    acc, n = fill.accuracy(ck, mode, ids, starts)
    fig = report.loss_figures(loss)
    result = {**fig, "objective": ck.cfg.objective.value, "fill_accuracy": acc, "fill_blanks": n, "unk_chars": unk,
              "mode": mode.value, "file": str(text_file)}
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    out.print(f"[bold]{plain(text_file)}[/] ({mode} mode, bidirectional)\n  characters hidden as in training "
              f"({cfg.mask_rate:.0%}, spans of 1-3, fixed seed)")  # two lines: one ran past 80 columns
    out.print(f"  loss       {fig['loss']:.4f} nats per {ck.cfg.objective.per}\n"
              f"  bits/char  {fig['bits_per_char']:.4f}\n  perplexity {fig['perplexity']:.3f}")
    out.print(f"  fill       {acc:.1%} right with one character blanked in each of {n:,} "
              + ("lines" if mode == Mode.LINES else "spread windows"))
    if unk:
        err.print(f"[yellow]Note:[/] {unk:,} characters are not in the model's vocabulary and were read as <UNK>")
    return 0


# ---------------------------------------------------------------- fill / embed


def _input_lines(text: str | None, text_file: Path | None, encoding: str, errors: str) -> Iterator[str]:
    """TEXT itself; or the lines of a file, or of stdin for '-' or nothing, one at a time."""
    if text is not None and text != "-":
        yield text
        return
    if text_file is not None:
        from charrnn import data

        yield from data.read_text(text_file, encoding, errors).splitlines()
        return
    for n, line in enumerate(iter(lambda: sys.stdin.readline(MAX_SEQ_LEN + 1), ""), 1):  # a line of /dev/zero ends
        line = line.rstrip("\n")
        if len(line) > MAX_SEQ_LEN:
            raise CharrnnError(f"line {n:,} of the input is longer than {MAX_SEQ_LEN:,} characters")
        yield line


def run_fill(ckpt: Path, text: str | None, blank: str, top: int, as_json: bool, beam: int) -> int:
    from charrnn import fill

    if top < 1:
        raise CharrnnError("--top must be at least 1")
    if beam < 1:
        raise CharrnnError("--beam must be at least 1")
    ck = checkpoint.load(ckpt)
    warned = False
    for line in _input_lines(text, None, "utf-8", "strict"):
        n_blanks = line.count(blank) if len(blank) == 1 else 0
        if not ck.cfg.bidirectional and n_blanks >= 6 and not warned:
            err.print(f"[yellow]Note:[/] {n_blanks} blanks with a forward model: each is a beam search step "
                      f"over every character ({beam} × {len(ck.vocab) - 2} texts scored); a bidirectional "
                      "model fills them in one pass each")
            warned = True
        f = fill.fill(ck, line, blank, top, beam)
        if f.unknown:
            err.print(f"[yellow]Warning:[/] {f.unknown} character(s) are not in the vocabulary: read as <UNK>")
        if as_json:
            print(json.dumps({"text": line, "filled": f.text, "blanks": [
                {"position": b.position, "char": b.char, "candidates": [[c, round(p, 6)] for c, p in b.candidates]}
                for b in f.blanks], "order": f.order}, ensure_ascii=False), flush=True)
            continue
        _write_now(f.text + "\n")
        if top > 1:
            for b in f.blanks:
                cands = "  ".join(f"{shown(c)} {p:.1%}" for c, p in b.candidates)
                _write_now(f"  {b.position:>3}: {cands}\n")
    return 0


def run_embed(ckpt: Path, text_file: Path, out_path: Path | None, nearest: int, query: str | None,
              encoding: str, errors: str) -> int:
    from charrnn import data, fill

    if nearest < 0:
        raise CharrnnError("--nearest must be 0 or more")
    if (query is None) != (nearest == 0):
        raise CharrnnError("--nearest K and --query TEXT go together")
    if out_path is not None and (out_path.is_dir() or out_path.suffix != ".npy"):
        raise CharrnnError(f"{out_path}: --out must be a .npy file")
    ck = checkpoint.load(ckpt)
    lines = [line for line in data.read_text(text_file, encoding, errors).splitlines() if line]
    if not lines:
        raise CharrnnError(f"{text_file}: no non-empty lines to embed")
    encode = [ck.vocab.encode(line)[0].astype(np.int64) for line in lines]
    vectors = fill.embed(ck, encode)
    if out_path is not None:
        with checkpoint.atomic(out_path) as tmp, open(tmp, "xb") as f:
            np.save(f, vectors)
        err.print(f"saved {out_path}: {vectors.shape[0]:,} lines × {vectors.shape[1]} float32")
    if query is not None:
        q = fill.embed(ck, [ck.vocab.encode(query)[0].astype(np.int64)])[0]
        norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(q)), 1e-12)
        sims = vectors @ q / np.maximum(norms, 1e-12)
        for i in np.argsort(-sims, kind="stable")[:nearest]:
            _write_now(f"{sims[i]:.4f}\t{lines[i]}\n")
    elif out_path is None:
        raise CharrnnError("nothing to do: give --out FILE.npy, or --nearest K --query TEXT")
    return 0


# ---------------------------------------------------------------- export / import


def export_target(target: Path) -> None:
    """As checkpoint_target for checkpoints: an existing OUT is replaced only if it is a charrnn export
    (a .safetensors file whose metadata says so) that the user may write."""
    from charrnn import interop

    if target.exists() and (target.is_dir() or target.suffix != ".safetensors"):
        raise CharrnnError(f"{target}: refusing to overwrite something that is not a .safetensors file")
    if not target.parent.is_dir():
        raise CharrnnError(f"{target.parent}: no such folder")
    if not target.exists():
        return
    limits.regular_file(target, "charrnn export")  # a FIFO named x.safetensors would block the read below
    _refuse_if_write_protected(target, "OUT")
    try:
        ours = interop.read_header(target)[0].get("__metadata__", {}).get("format") == interop.FORMAT
    except (interop.InteropError, OSError, AttributeError):
        ours = False
    if not ours:
        raise CharrnnError(f"{target}: refusing to overwrite a file that is not a charrnn export; choose another OUT")


def run_export(ckpt: Path, target: Path) -> int:
    from charrnn import interop

    export_target(target)
    ck = checkpoint.load(ckpt)
    interop.check_layout(ck.cfg)
    export = interop.Export(ck.cfg, ck.vocab, ck.meta.mode, ck.meta.objective, ck.meta.source, ck.meta.train.seq_len)
    tensors = interop.to_torch(ck.sampling_params, ck.cfg)
    interop.write_file(target, tensors, interop.metadata(export))
    cfg = ck.cfg
    kind = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cfg.cell]
    from charrnn.model import input_size

    bi = cfg.bidirectional
    out.print(f"wrote [bold]{plain(target)}[/]: {len(tensors)} tensors ({'best' if ck.best is not None else 'current'} "
              f"weights), {cfg.dtype}, " + ("one-hot inputs, <MASK> = the last" if bi else "one-hot inputs"))
    linears = ""  # in the order they apply, sizes as written: (out_features, in_features)
    for name in ("head", "out"):
        if f"{name}.weight" in tensors:
            n_out, n_in = tensors[f"{name}.weight"].shape
            linears += f" + nn.Linear({n_in}, {n_out}) as '{name}'" + (", tanh" if name == "head" else "")
    out.print(f"  nn.{kind}({input_size(cfg)}, {cfg.hidden_size}, num_layers={cfg.layers}"
              + (f", nonlinearity='{cfg.activation}'" if cfg.cell == "rnn" else "")
              + (", bidirectional=True" if bi else "") + ")" + linears, markup=False)
    if cfg.objective == Objective.NEIGHBORS:
        out.print(f"  '{'head' if cfg.head else 'out'}' reads [h→ at t-1 ; h← at t+1] to predict the character at t "
                  "(zeros past either end)", markup=False)
    return 0


def run_import(source: Path, target: Path | None) -> int:
    from charrnn import interop

    target = target or Path.cwd() / f"{source.stem}.npz"
    if target.exists():  # perhaps a trained model with its optimizer state and history: never replaced here
        raise CharrnnError(f"{target}: already exists; import into a new file (--out) or remove it first")
    if not target.parent.is_dir():
        raise CharrnnError(f"{target.parent}: no such folder for the checkpoint")
    export, params = interop.read_file(source)
    meta = checkpoint.Meta(mode=export.mode, objective=export.objective, source=export.source,
                           stop_reason=f"imported from {source.name}",
                           train=TrainConfig(mode=export.mode.value, seq_len=export.seq_len))
    # sampling-only: the weights are both current and best; no optimizer state or history came with them
    ck = checkpoint.Checkpoint(export.cfg, export.vocab, params, dict(params), meta=meta)
    checkpoint.save(target, ck)
    cfg = export.cfg
    use = f"charrnn fill {plain(target)} 'th_ qu_ck'" if cfg.bidirectional else f"charrnn sample {plain(target)}"
    kind = "bidirectional " if cfg.bidirectional else ""
    out.print(f"saved [bold]{plain(target)}[/]: {kind}{cfg.cell}, {cfg.layers} × {cfg.hidden_size}, {cfg.dtype}, "
              f"vocabulary {len(export.vocab)}, {export.mode} mode; try  {use}")
    return 0


# ---------------------------------------------------------------- show


def read_show_text(file: Path | None, text: str | None, encoding: str, errors: str, limit: int) -> str:
    """The text `show` looks at: FILE, `-` for stdin (at most `limit` characters of it), or --text;
    exactly one of them."""
    from charrnn import data

    if (file is None) == (text is None):
        raise OptionError("give the text to show as FILE, - for stdin, or --text TEXT (one of them)")
    if text is None:
        assert file is not None
        if str(file) == "-":
            data.check_decoding(encoding, errors)
            text = sys.stdin.read(limit)  # `show` cuts it to --chars anyway; /dev/zero would never end
        else:
            return data.read_text(file, encoding, errors)  # refuses empty and whitespace-only files
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise CharrnnError("the text is empty: nothing to show")
    if data.SURROGATE.search(text):
        raise CharrnnError("the text has unpaired surrogates, which are not text")
    return text


def run_show(ckpt: Path, file: Path | None, text: str | None, chars: int, top: int | None, at: int | None,
             unit: str | None, gate: str | None, find: bool, saturation: bool, as_json: bool, html: Path | None,
             encoding: str, errors: str) -> int:
    from charrnn import show
    from charrnn import show_render as sr

    if chars < 1:
        raise OptionError(f"--chars must be at least 1, not {chars}")
    if top is not None and top < 1:
        raise OptionError(f"--top must be at least 1, not {top}")
    if at is not None and top is None:
        top = 5  # --at alone: what was expected there
    if sum((unit is not None, find, saturation)) > 1:
        raise OptionError("--unit, --find and --saturation are different views: choose one")
    if gate is not None and unit is None:
        raise OptionError("--gate needs --unit LAYER:UNIT: the gate of which unit?")
    if html is not None and not html.parent.is_dir():
        raise CharrnnError(f"{html.parent}: no such folder for the page")
    ck = checkpoint.load(ckpt)
    cfg, mode, params = ck.cfg, ck.meta.mode, ck.sampling_params
    view = show.parse_unit(unit, gate, cfg) if unit is not None else None
    if saturation and cfg.cell == "rnn":
        raise CharrnnError("--saturation looks at gates, and an rnn cell has none")
    text = show.cut(read_show_text(file, text, encoding, errors, 2 * chars + 2), chars, mode)  # CRLF pairs count 2
    limits.require(training_bytes(cfg, 1, len(text), 0), f"showing {len(text):,} characters")
    if at is not None and not 0 <= at < len(text):
        raise OptionError(f"--at {at}: the text shown has {len(text):,} characters (0 to {len(text) - 1})")
    ids, n_unk = show.encode(text, ck.vocab, mode)
    unk = ids == show.UNK
    if n_unk:
        err.print(f"[yellow]Warning:[/] {n_unk:,} character(s) are not in the model's vocabulary: "
                  "read as <UNK> and marked (underlined; \"unk\" in --json)")

    if html is not None:
        from charrnn import show_html

        if html.exists() and (html.is_dir() or html.suffix.lower() not in (".html", ".htm")):
            raise CharrnnError(f"{html}: refusing to overwrite something that is not an .html page")
        page = show_html.page(ck, str(ckpt), text, ids, view)
        try:
            with checkpoint.atomic(html) as tmp:
                tmp.write_text(page, encoding="utf-8")
        except OSError as e:
            raise CharrnnError(f"{html}: cannot write the page ({e.strerror or e})") from None
        err.print(f"wrote {html} ({len(text):,} characters, {len(page) / 1e6:.1f} MB)")
        return 0

    keep: tuple[str, ...] = ()
    if view is not None:
        keep = (view.what,)
    elif find:
        keep = ("h",)
    elif saturation:
        keep = show.SIGMOID_GATES[cfg.cell]
    need_run = bool(keep) or top is not None
    run = show.run_text(params, cfg, mode, ids, keep, logits=top is not None) if need_run else None
    bits = show.surprise(params, cfg, mode, ids, ck.meta.train.seq_len) if not (find or saturation or view) else None
    predictions = show.top_predictions(run.logits, top) if run is not None and run.logits is not None and top else None
    colour = out.is_terminal and not os.environ.get("NO_COLOR")

    found: list[show.Found] = []
    if find:
        assert run is not None
        found = show.find_units(run, show.features(text))
        best = max(found, key=lambda f: abs(f.r))
        view = show.UnitView(best.layer, best.unit)
    sat = show.saturation(run, cfg.cell) if saturation and run is not None else []

    values: dict[str, np.ndarray] = {}
    if bits is not None:
        values["bits"] = bits
    if view is not None:
        assert run is not None
        values["value"] = run.value(view.layer, view.unit, view.what)

    if as_json:
        result: dict[str, Any] = {"checkpoint": str(ckpt), "mode": mode.value, "chars": len(text), "unk_chars": n_unk}
        if bits is not None:
            result["mean_bits"] = sr.rounded(float(np.nanmean(bits)), 4) if np.isfinite(bits).any() else None
        if view is not None:
            result["unit"] = {"layer": view.layer, "unit": view.unit, "value": view.what}
        if find:
            result["features"] = [{"feature": f.feature, "layer": f.layer, "unit": f.unit, "r": round(f.r, 4)}
                                  for f in found]
        if saturation:
            result["saturation"] = [{"layer": s.layer, "gate": s.gate, "left": np.round(s.left, 4).tolist(),
                                     "right": np.round(s.right, 4).tolist(), "mostly_left": s.mostly("left"),
                                     "mostly_right": s.mostly("right")} for s in sat]
        else:
            result["text"] = sr.json_chars(text, unk, values, predictions, ck.vocab)
        print(json.dumps(result, ensure_ascii=True))
        return 0

    from rich.console import Console

    # without colour, no escape code at all: a console that writes plain text
    con = out if colour else Console(file=sys.stdout, color_system=None, highlight=False, soft_wrap=True)
    if saturation:
        _print_saturation(con, sat, show.width(cfg), len(text))
        return 0
    if find:
        _print_found(con, found)
    if bits is not None:
        scored = bits[np.isfinite(bits)]
        if len(scored):
            con.print(f"[dim]{len(scored):,} characters predicted:[/] mean [bold]{scored.mean():.3f}[/] bits/char")
        else:
            con.print("[dim]no character is predicted (a stream's first character is context only)[/]")
    label = view.label if view is not None else "surprise"
    sigmoid = view is not None and show.is_sigmoid(cfg.cell, view.what)
    if colour:
        if view is None:
            assert bits is not None
            colours = [sr.surprise_rgb(b) for b in bits]
            con.print(sr.surprise_legend())
        else:
            colours = [sr.unit_rgb(v, sigmoid) for v in values["value"]]
            con.print(f"[dim]{label}:[/] ", sr.unit_legend(sigmoid))
        con.print(sr.coloured(text, colours, unk))
    else:
        name = "bits" if view is None else "value"
        con.print(f"# {label}; one character per line: position, character, {name}", markup=False)
        for i, ch in enumerate(text):
            v = values[name][i]
            number = f"{v:.3f}" if np.isfinite(v) else "-"
            sys.stdout.write(f"{i}\t{sr.list_char(ch)}{' <UNK>' if unk[i] else ''}\t{number}\n")  # tabs kept
    if predictions is not None:
        where = at
        if where is None:  # the most surprising character, else the last one
            where = int(np.nanargmax(bits)) if bits is not None and np.isfinite(bits).any() else len(text) - 1
        _print_top(con, text, where, predictions, ck.vocab, bits)
    return 0


def _print_found(con: Console, found: list[Any]) -> None:
    from rich.table import Table

    t = Table(title="units that follow a feature of the text (|Pearson r| of h, best of every layer)",
              title_justify="left", box=None, pad_edge=False)
    for col in ("feature", "layer", "unit", "r"):
        t.add_column(col, justify="left" if col == "feature" else "right")
    for f in found:
        if f.r == 0:
            t.add_row(f.feature, "-", "-", "[dim]constant in this text[/]")
        else:
            t.add_row(f.feature, str(f.layer), str(f.unit), f"{f.r:+.3f}")
    con.print(t)
    best = max(found, key=lambda f: abs(f.r))
    con.print(f"[dim]coloured by the best of them:[/] layer {best.layer} unit {best.unit} ({best.feature})")


def _print_top(con: Console, text: str, at: int, predictions: tuple[np.ndarray, np.ndarray], vocab: Any,
               bits: np.ndarray | None) -> None:
    from charrnn import show_render as sr

    ids, p = predictions
    about = f" ({bits[at]:.2f} bits)" if bits is not None and np.isfinite(bits[at]) else ""
    con.print(f"at character {at} {sr.list_char(text[at])!r}{about}, the model expected:", markup=False)
    if ids[at, 0] < 0:
        con.print("  [dim]nothing: this character is not predicted (a stream's first, or an empty line)[/]")
        return
    for t, q in zip(ids[at], p[at], strict=True):
        con.print(f"  {sr.token_text(vocab, int(t)):>6}  {q:7.2%}", markup=False)


def _print_saturation(con: Console, sat: list[Any], hidden: int, n: int) -> None:
    from charrnn import show_render as sr
    from charrnn.show import LEFT, RIGHT

    con.print(f"gate saturation over {n:,} characters: x = fraction of the time left-saturated (< {LEFT}), "
              f"y = right-saturated (> {RIGHT}); one point per unit ({hidden} per gate)")
    by_layer: dict[int, list[Any]] = {}
    for s in sat:
        by_layer.setdefault(s.layer, []).append(s)
    for layer, gates in by_layer.items():
        plots = [sr.scatter(s.left, s.right) for s in gates]
        width = len(plots[0][0])
        con.print("\n" + "   ".join(f"layer {layer} gate {s.gate}".ljust(width) for s in gates), markup=False)
        for rows in zip(*plots, strict=True):
            con.print("   ".join(rows), markup=False, highlight=False)
        for s in gates:
            con.print(f"  layer {layer} gate {s.gate}: {s.mostly('left')} of {hidden} units mostly closed, "
                      f"{s.mostly('right')} mostly open (saturated over half of the time)")
