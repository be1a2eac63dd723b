"""What a model is and how it is trained: one dataclass per concern, validated once, when made.

The CLI's options map one to one onto these fields (`--hidden-size` is `hidden_size`, `--time`
is `time_minutes`); a value that cannot work is refused with an OptionError naming the option.
Checkpoints store both, so a resumed run continues with the same settings. This module imports
nothing heavy: sampling reads these configs without loading the training code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

from charrnn.errors import OptionError

CELLS = ("rnn", "gru", "lstm")  # the recurrent cells of charrnn.cells
ACTIVATIONS = ("tanh", "relu")  # of the vanilla RNN
OPTIMIZERS = ("adam", "adagrad", "sgd")  # of charrnn.optim
CLIP_MODES = ("norm", "value")
DTYPES = ("float32", "float64")
MAX_SEQ_LEN = 100_000  # characters per chunk or line: also the default length of a sampled line


class Mode(str, Enum):
    """How a text is cut into examples (see charrnn.data)."""

    LINES = "lines"  # every line is one example (names, words)
    STREAM = "stream"  # running text, state carried from chunk to chunk

    def __str__(self) -> str:
        return self.value


class Objective(str, Enum):
    """What the model is trained to predict."""

    NEXT = "next"  # the next character, from the characters before it
    MASKED = "masked"  # characters replaced by <MASK>, from both sides (bidirectional models)
    NEIGHBORS = "neighbors"  # every character, from the states on either side of it (bidirectional models)

    def __str__(self) -> str:
        return self.value

    @property
    def per(self) -> str:
        """What its loss is averaged over: "nats per {per}"."""
        return {"next": "char", "masked": "hidden char", "neighbors": "char, both sides"}[self.value]


@dataclass
class ModelConfig:
    vocab_size: int  # V: kept characters + <UNK> + <EOS>
    cell: str = "lstm"  # lstm | gru | rnn
    hidden_size: int = 256  # H, the same in every layer
    layers: int = 2  # stacked recurrent layers
    activation: str = "tanh"  # rnn only: tanh | relu
    dropout: float = 0.0  # dropout on each layer's output while training; 0 disables
    dtype: str = "float32"  # float32 for speed, float64 for gradient checks
    bidirectional: bool = False  # a right-to-left layer beside each left-to-right one
    # what it predicts: next for a forward model; masked or neighbors for a bidirectional one (files
    # before format 3 do not say: a bidirectional one of them is masked)
    objective: Objective = Objective.NEXT
    # bidirectional: width of a tanh layer that joins the two directions before the output; 0 (and files
    # before format 4): the output reads the two directions side by side
    head: int = 0

    def __post_init__(self) -> None:
        problems = []
        try:
            self.objective = Objective(self.objective)
        except ValueError:
            raise OptionError(f"--objective must be masked or neighbors, not {self.objective!r}") from None
        if self.bidirectional and self.objective == Objective.NEXT:
            self.objective = Objective.MASKED
        if not self.bidirectional and self.objective != Objective.NEXT:
            problems.append(f"--objective {self.objective} is for bidirectional models: add --bidirectional")
        if self.cell not in CELLS:
            problems.append(f"--cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"--activation must be tanh or relu, not {self.activation!r}")
        if self.hidden_size < 1:
            problems.append(f"--hidden-size must be at least 1, not {self.hidden_size}")
        if self.layers < 1:
            problems.append(f"--layers must be at least 1, not {self.layers}")
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), not {self.dropout}")
        if self.head < 0:
            problems.append(f"--head must be at least 0, not {self.head}")
        elif self.head and not self.bidirectional:
            problems.append("--head is for bidirectional models: add --bidirectional")
        if self.dtype not in DTYPES:
            problems.append(f"--dtype must be float32 or float64, not {self.dtype!r}")
        if self.vocab_size < 3:
            problems.append(f"vocabulary size must be at least 3, not {self.vocab_size}")
        if problems:
            raise OptionError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objective"] = self.objective.value
        if not self.bidirectional:
            del d["bidirectional"]  # so a forward model's file stays readable by charrnn before it (format 1)
        if self.objective != Objective.NEIGHBORS:
            del d["objective"]  # the same for masked models (format 2)
        if not self.head:
            del d["head"]  # and for neighbors models without one (format 3)
        return d


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
    mask_rate: float = 0.15  # bidirectional: fraction of characters masked per batch, in spans of 1-3

    def __post_init__(self) -> None:
        p = []
        if self.mode not in ("auto", *(m.value for m in Mode)):
            p.append(f"--mode must be one of auto, lines, stream, not {self.mode!r}")
        for name in ("seq_len", "batch_size", "min_count", "eval_every"):
            if getattr(self, name) < 1:
                p.append(f"{option(name)} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            p.append(f"--val-fraction must be in [0, 1), not {self.val_fraction}")
        if self.optimizer not in OPTIMIZERS:
            p.append(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            p.append(f"--lr must be positive, not {self.lr}")
        if not 0 < self.lr_decay <= 1:
            p.append(f"--lr-decay must be in (0, 1], not {self.lr_decay}")
        if not 0 < self.mask_rate <= 0.5:
            p.append(f"--mask-rate must be in (0, 0.5], not {self.mask_rate}")
        if not 0 < self.lr_plateau <= 1:
            p.append(f"--lr-plateau must be in (0, 1], not {self.lr_plateau}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            p.append(f"--clip must be 0 or more, not {self.clip}")
        if self.clip_mode not in CLIP_MODES:
            p.append(f"--clip-mode must be norm or value, not {self.clip_mode!r}")
        if self.seq_len > MAX_SEQ_LEN:
            p.append(f"--seq-len must be at most {MAX_SEQ_LEN:,}, not {self.seq_len:,}")
        for name in ("max_vocab", "steps", "epochs", "time_minutes", "patience", "seed", "val_max_chars"):
            if not 0 <= getattr(self, name) < math.inf:  # 0 is "no limit"; inf would overflow step counts
                p.append(f"{option(name)} must be 0 or more and finite, not {getattr(self, name)}")
        if p:
            raise OptionError("; ".join(p))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def option(field_name: str) -> str:
    """The command-line option of a config field: time_minutes -> --time, seq_len -> --seq-len."""
    return "--" + {"time_minutes": "time"}.get(field_name, field_name).replace("_", "-")


def minutes(value: float | str) -> float:
    """--time in minutes: a number (minutes), or one with a unit, as in 90s, 2m, 1.5h."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    scale = {"s": 1 / 60, "m": 1.0, "h": 60.0}.get(text[-1:], None)
    try:
        return float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        raise OptionError(f"--time must be minutes (2.5) or a duration with a unit (90s, 2m, 1h), not {value!r}"
                          ) from None


def plural(n: float, word: str) -> str:
    """'1 evaluation', '5 evaluations', '2,000 steps', '0.5 minutes': a count with its word."""
    number = f"{n:,}" if isinstance(n, int) else f"{n:,g}"
    return f"{number} {word}{'' if n == 1 else 's'}"


# Automatic learning rates by optimizer and data mode. Adam's were chosen with the full-length
# quality runs (benchmarks/quality.py); SGD's (momentum 0.9) and Adagrad's are the best of
# benchmarks/lr_sweep.py on names (lines) and tiny-shakespeare (stream). SGD at 3.0 wins by a
# hair on names but diverges on Shakespeare, so 1.0 serves both.
AUTO_LR: dict[str, dict[Mode, float]] = {
    "adam": {Mode.LINES: 3e-3, Mode.STREAM: 2e-3},
    "adagrad": {Mode.LINES: 0.1, Mode.STREAM: 0.03},
    "sgd": {Mode.LINES: 1.0, Mode.STREAM: 1.0},
}


def auto_settings(mode: Mode, train_chars: int, optimizer: str = "adam", bidirectional: bool = False
                  ) -> dict[str, Any]:
    """Defaults chosen from the data, for every option the user leaves out.

    Measured on names.txt and tiny-shakespeare (see benchmarks/quality.py): small line
    lists want a small, fast model; running text wants more capacity as it grows. The
    learning rate is the optimizer's own (AUTO_LR). A bidirectional line model, which learns
    only from its hidden characters, fills names better with less dropout (benchmarks/README.md)."""
    lr = AUTO_LR.get(optimizer, AUTO_LR["adam"])[Mode(mode)]
    objective = dict(objective=Objective.NEIGHBORS) if bidirectional else {}
    if mode == Mode.LINES:
        return dict(cell="lstm", hidden_size=256, layers=1, dropout=0.1 if bidirectional else 0.3, seq_len=64,
                    batch_size=64, lr=lr, eval_every=200, patience=5, epochs=30.0, **objective)
    if train_chars < 200_000:
        size = dict(hidden_size=128, layers=1, dropout=0.0)
    elif train_chars < 3_000_000:
        size = dict(hidden_size=256, layers=2, dropout=0.1)
    else:
        size = dict(hidden_size=512, layers=2, dropout=0.1)
    return dict(cell="lstm", seq_len=64, batch_size=32, lr=lr, eval_every=200, patience=5, epochs=30.0, **size,
                **objective)
