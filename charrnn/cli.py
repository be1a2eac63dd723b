"""The `charrnn` command: a thin Typer skin over the library.

Heavy imports (numpy, rich, tqdm, the model) happen inside the commands, so that
`charrnn --help` starts fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from charrnn.config import CELLS, OPTIMIZERS

app = typer.Typer(
    name="charrnn",
    help="Train character-level RNN/GRU/LSTM language models on any text file, and generate from them.\n\n"
    "Example: charrnn train corpora/names.txt --time 2 && charrnn sample names.npz -n 20",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from charrnn import __version__

        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="Print the version."),
) -> None:
    """Train character-level RNN/GRU/LSTM language models on any text file, and generate from them."""


# Options and arguments that several commands share, declared once.
CheckpointArg = Annotated[Path, typer.Argument(help="Checkpoint written by `charrnn train`.")]
EncodingOpt = Annotated[str, typer.Option(help="Encoding of TEXT_FILE.")]
ErrorsOpt = Annotated[str, typer.Option(help="What to do with bytes that do not decode: strict, replace or ignore.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


class Stopped(BaseException):
    """SIGTERM or SIGHUP outside training: raised where the program is, so that `finally` and the
    atomic writes clean up (no temporary file is left behind) before the exit with 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


# out of memory, JSON nested too deep, a number too large, text no codec can handle: whatever their
# source, one `Error:` line rather than a traceback (the library names the cause where it can)
LAST_RESORT = {MemoryError: "out of memory", RecursionError: "input nested too deeply",
               OverflowError: "a number too large", UnicodeError: "text that cannot be encoded or decoded"}


def finish(command: Callable[[], int]) -> NoReturn:
    """Run a command to its exit code. Ctrl-C ends a line of output already started and exits 130;
    SIGTERM and SIGHUP exit 143 and 129; a closed pipe (`charrnn sample ... | head`) is a normal end,
    exit 0. (Typer would report Ctrl-C as a clean exit and a closed pipe as an error.)"""
    import os
    import signal

    stops = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, _raise_stopped) for s in stops}
    try:
        code = command()
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)  # end a line a live sample left open
        print("Error: interrupted", file=sys.stderr)
        code = 130
    except Stopped as e:
        print(f"Error: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        code = 128 + e.signum
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        code = 0
    except tuple(LAST_RESORT) as e:
        from charrnn.errors import visible

        what = next(v for k, v in LAST_RESORT.items() if isinstance(e, k))
        print(f"Error: {what} ({type(e).__name__}: {visible(str(e)[:200]) or 'no details'})", file=sys.stderr)
        code = 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    sys.exit(code)


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


# ---------------------------------------------------------------- train
# Parameter names are the config fields they set (charrnn.config); the configs check the values.


@app.command(
    help="Train a model on TEXT_FILE and save it as a checkpoint (.npz).\n\n"
    "Options left out are chosen from the text (its size and whether it is a list of lines or "
    "running text) and printed before training starts. Press Ctrl-C to stop: the checkpoint is "
    "saved and can be resumed.\n\n"
    "Example: charrnn train corpora/names.txt --time 2\n\n"
    "Example: charrnn train corpora/shakespeare.txt --cell lstm --hidden-size 512 --time 15"
)
def train(
    ctx: typer.Context,
    text_file: Path = typer.Argument(..., help="UTF-8 text to learn from."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Checkpoint to write [default: TEXT_FILE's stem + .npz here]."),
    cell: Optional[str] = typer.Option(None, help=f"Recurrent cell: {_choices(CELLS)}."),
    hidden_size: Optional[int] = typer.Option(None, help="Hidden units per layer."),
    layers: Optional[int] = typer.Option(None, help="Stacked recurrent layers."),
    activation: str = typer.Option(
        "tanh", help="Activation of the vanilla RNN: tanh or relu (relu starts from an identity recurrence)."),
    dropout: Optional[float] = typer.Option(None, help="Dropout on each layer's output while training, in [0, 1)."),
    mode: str = typer.Option(
        "auto", help="lines: each line is one example (names, words); stream: running text; auto: decide from the "
        "text."),
    seq_len: Optional[int] = typer.Option(
        None, help="stream: characters per BPTT chunk; lines: longest line modelled."),
    batch_size: Optional[int] = typer.Option(None, help="Lines or streams per step."),
    val_fraction: float = typer.Option(
        0.1, help="Fraction held out for validation, in [0, 1) (random lines, or the end of running text)."),
    min_count: int = typer.Option(1, help="Characters seen fewer times become <UNK>."),
    max_vocab: int = typer.Option(0, help="Keep only the most frequent characters (0: all)."),
    optimizer: str = typer.Option("adam", help=f"Optimizer: {_choices(OPTIMIZERS)}."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    lr_decay: float = typer.Option(1.0, help="Multiply the learning rate by this after each epoch, in (0, 1]."),
    lr_plateau: float = typer.Option(
        0.5, help="Multiply the learning rate by this when validation did not improve, in (0, 1] (1: off)."),
    clip: float = typer.Option(5.0, help="Gradient clipping threshold (0: off)."),
    clip_mode: str = typer.Option("norm", help="norm: rescale the global gradient norm; value: clip each element."),
    steps: Optional[int] = typer.Option(None, help="Stop after this many steps in all (0: no limit)."),
    epochs: Optional[float] = typer.Option(
        None, help="Stop after this many passes over the training text (0: no limit)."),
    time_minutes: Optional[str] = typer.Option(
        None, "--time", metavar="MINUTES", help="Stop this run after this many minutes, or 90s, 2m, 1h (0: no limit; "
        "a resumed run keeps the limit)."),
    eval_every: Optional[int] = typer.Option(
        None, help="Steps between validation, sample preview and checkpoint save."),
    patience: Optional[int] = typer.Option(
        None, help="Stop when validation has not improved for this many evaluations (0: never)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same model."),
    dtype: str = typer.Option("float32", help="Floating-point type of the model: float32 or float64."),
    bidirectional: bool = typer.Option(
        False, "--bidirectional", help="Read both ways and learn to fill in hidden characters (for `charrnn fill` "
        "and `embed`; such a model does not `sample`). Stream text is read in --seq-len chunks, no state carried."),
    objective: Optional[str] = typer.Option(
        None, metavar="neighbors|masked", help="Bidirectional: predict every character from the states on either "
        "side of it (neighbors, the default: every character teaches), or only the hidden ones, from states that "
        "read <MASK> there (masked, like BERT; the only objective of earlier versions)."),
    head: Optional[int] = typer.Option(
        None, metavar="N", help="Bidirectional: width of a tanh layer where the two directions meet before the "
        "output (0: none, the output reads them side by side) [default: --hidden-size with --objective neighbors, "
        "else 0]."),
    mask_rate: Optional[float] = typer.Option(
        None, help="Bidirectional: fraction of characters hidden in each batch, in spans of 1-3 [default: 0.15]."),
    resume: Optional[Path] = typer.Option(
        None, help="Continue training from this checkpoint (same optimizer state, data position and RNG)."),
    init_from: Optional[Path] = typer.Option(
        None, help="Start from this checkpoint's weights and vocabulary on TEXT_FILE, with a fresh optimizer "
        "(fine-tuning; characters it does not know become <UNK>)."),
    encoding: EncodingOpt = "utf-8",
    errors: ErrorsOpt = "strict",
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No settings, progress bar or previews: only the result and the saved path."),
    threads: int = typer.Option(
        1, help="BLAS threads for the matrix products. One is the default: on a busy machine more threads wait "
        "on each other (2x to 10x slower measured); on an idle one, 2 gain 15-25 %. OPENBLAS_NUM_THREADS, if set, "
        "wins."),
    force: bool = typer.Option(False, "--force", help="Replace an existing checkpoint at --out (not resumed)."),
) -> None:
    from charrnn.commands import run_train

    explicit = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
    finish(lambda: run_train(dict(ctx.params), explicit))


# ---------------------------------------------------------------- sample


@app.command(
    help="Generate text from a checkpoint. Samples go to stdout, one per line for line-trained "
    "models (names); samples of running text, and blocks of several temperatures, each follow a line "
    "'=== sample K of N ==='. Notes go to stderr.\n\n"
    "Example: charrnn sample names.npz -n 20 --temperature 0.8\n\n"
    "Example: charrnn sample shakespeare.npz --prime 'ROMEO:' --length 500"
)
def sample(
    ckpt: CheckpointArg,
    num: Optional[int] = typer.Option(
        None, "--num", "-n",
        help="How many samples, generated together as one batch [default: 10 from line models, 1 from running text]."),
    length: Optional[int] = typer.Option(
        None, help="Characters per sample [lines: at most the training line limit; stream: 500]."),
    temperature: str = typer.Option(
        "1.0", help="Sharpness: below 1 is safer, above 1 wilder, 0 is greedy. Several, as 0.2,0.5,1.0: a block "
        "of samples for each, labelled."),
    top_k: int = typer.Option(0, help="Sample only among the K most likely characters (0: off)."),
    top_p: float = typer.Option(
        1.0, help="Sample only among the most likely characters whose probabilities add up to P."),
    prime: str = typer.Option("", help="Text to start from; samples continue it."),
    prime_file: Optional[Path] = typer.Option(None, help="Start from the text of this file (UTF-8) instead."),
    seed: Optional[int] = typer.Option(None, help="Random seed for reproducible samples."),
    allow_unk: bool = typer.Option(False, help="Allow the <UNK> token (shown as U+FFFD) in samples."),
    novel: Optional[bool] = typer.Option(
        None, "--novel/--allow-seen",
        help="Line models: --novel keeps only samples that are not lines of the training text; "
        "--allow-seen skips the check. [default: new samples first, topped up with seen ones if too few turn up]"),
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per sample and line: sample, temperature, "
                                        "text.")] = False,
) -> None:
    from charrnn.commands import run_sample

    finish(lambda: run_sample(ckpt, num, length, temperature, top_k, top_p, prime, prime_file, seed, allow_unk,
                              novel, json_))


# ---------------------------------------------------------------- inspect / eval


@app.command(
    help="Show what is inside a checkpoint: model, data, vocabulary, parameters and training curves.\n\n"
    "Example: charrnn inspect names.npz\n\nExample: charrnn inspect names.npz --json | jq .training.best_val_loss"
)
def inspect(
    ckpt: CheckpointArg,
    json_: JsonOpt = False,
) -> None:
    from charrnn.commands import run_inspect

    finish(lambda: run_inspect(ckpt, json_))


@app.command(
    name="eval",
    help="Loss of a checkpoint on another text file, in nats and bits per character and as perplexity.\n\n"
    "Example: charrnn eval names.npz held_out_names.txt --json",
)
def eval_(
    ckpt: CheckpointArg,
    text_file: Path = typer.Argument(..., help="Text to score."),
    json_: JsonOpt = False,
    encoding: EncodingOpt = "utf-8",
    errors: ErrorsOpt = "strict",
) -> None:
    from charrnn.commands import run_eval

    finish(lambda: run_eval(ckpt, text_file, json_, encoding, errors))


# ---------------------------------------------------------------- fill / embed


@app.command(
    help="Fill in missing characters: every BLANK in TEXT (default '_') becomes the model's choice.\n\n"
    "A bidirectional model (train --bidirectional) reads the text both ways and fills the blank it is "
    "surest of first, then the next. A forward model also works, more slowly: it scores the whole text "
    "for every candidate (exact for one blank; a beam search over several, slow for many).\n\n"
    "TEXT '-' or left out: fill each line of stdin, one result per line as it is ready.\n\n"
    "Example: charrnn fill words.npz 'c_o_s_o_d' --top 3\n\n"
    "Example: printf 'an_a\\nm_rgaret\\n' | charrnn fill names.npz"
)
def fill(
    ckpt: CheckpointArg,
    text: Optional[str] = typer.Argument(None, help="Text with blanks; '-' or nothing: lines from stdin."),
    blank: str = typer.Option("_", help="The character that marks a missing one."),
    top: int = typer.Option(1, help="Also list the N likeliest characters for each blank, with probabilities."),
    json_: JsonOpt = False,
    beam: int = typer.Option(8, help="Forward models with several blanks: partial fillings kept by the beam search."),
) -> None:
    from charrnn.commands import run_fill

    finish(lambda: run_fill(ckpt, text, blank, top, json_, beam))


@app.command(
    help="One vector per line of TEXT_FILE: a forward model's final state, or a bidirectional model's "
    "[left-to-right state at the last character ; right-to-left state at the first].\n\n"
    "Example: charrnn embed names.npz corpora/names.txt --out names.npy\n\n"
    "Example: charrnn embed words.npz corpora/words.txt --nearest 5 --query 'castle'"
)
def embed(
    ckpt: CheckpointArg,
    text_file: Path = typer.Argument(..., help="Lines to embed (empty lines are skipped)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the vectors here as a float32 .npy (lines, width)."),
    nearest: int = typer.Option(0, help="Print the K lines nearest to --query by cosine similarity."),
    query: Optional[str] = typer.Option(None, help="Text to find the nearest lines to."),
    encoding: EncodingOpt = "utf-8",
    errors: ErrorsOpt = "strict",
) -> None:
    from charrnn.commands import run_embed

    finish(lambda: run_embed(ckpt, text_file, out, nearest, query, encoding, errors))


# ---------------------------------------------------------------- export / import


@app.command(
    help="Write a checkpoint's best weights as PyTorch nn.LSTM/nn.GRU/nn.RNN + nn.Linear tensors in a "
    ".safetensors file, with the vocabulary and config in its metadata. An existing OUT is replaced "
    "only if it is a charrnn export you may write.\n\n"
    "Example: charrnn export names.npz names.safetensors"
)
def export(
    ckpt: CheckpointArg,
    out: Path = typer.Argument(..., help="The .safetensors file to write."),
) -> None:
    from charrnn.commands import run_export

    finish(lambda: run_export(ckpt, out))


@app.command(
    name="import",
    help="Read a .safetensors file written by `charrnn export` (or by a PyTorch program that keeps its "
    "layout) into a checkpoint that sample, inspect and eval use. It has no optimizer state: training "
    "it further with --resume starts a fresh optimizer.\n\n"
    "Example: charrnn import trained.safetensors --out trained.npz"
)
def import_(
    source: Path = typer.Argument(..., help="The .safetensors file to read."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Checkpoint to write [default: the file's stem + .npz here]."),
) -> None:
    from charrnn.commands import run_import

    finish(lambda: run_import(source, out))


# ---------------------------------------------------------------- show


@app.command(
    help="Colour a text by what a model makes of it: how surprised it is at each character, or what one "
    "hidden unit or gate does there.\n\n"
    "Colours need a terminal; NO_COLOR or a pipe gives one line per character with its number instead.\n\n"
    "Example: charrnn show shakespeare.npz corpora/shakespeare.txt --chars 500\n\n"
    "Example: charrnn show shakespeare.npz --text 'ROMEO: (aside) \"No.\"' --unit 1:42 --gate f\n\n"
    "Example: charrnn show sqlite3.npz corpora/sqlite3.h --find --html units.html"
)
def show(
    ckpt: CheckpointArg,
    text_file: Optional[Path] = typer.Argument(None, help="Text to show; - reads stdin."),
    text: Optional[str] = typer.Option(None, "--text", help="Show this text instead of a file."),
    chars: int = typer.Option(2000, help="Show the first N characters (line models: the whole lines that fit)."),
    top: Optional[int] = typer.Option(
        None, help="List the K characters the model expected at --at (in --json: at every character)."),
    at: Optional[int] = typer.Option(
        None, help="Character position (from 0) for --top (alone: --top 5) [default: the most surprising one]."),
    unit: Optional[str] = typer.Option(None, help="Colour by hidden unit LAYER:UNIT (e.g. 0:5), from -1 to 1."),
    gate: Optional[str] = typer.Option(None, help="With --unit: colour by that unit's gate (lstm i f o g; gru r u n)."),
    find: bool = typer.Option(
        False, "--find", help="Find the units that follow quotes, brackets, line position, words, indentation."),
    saturation: bool = typer.Option(False, "--saturation", help="How often each gate is saturated, as scatter plots."),
    json_: JsonOpt = False,
    html: Optional[Path] = typer.Option(
        None, help="Write a self-contained HTML page to explore the text (every view, hover for predictions) "
        "instead of printing."),
    encoding: EncodingOpt = "utf-8",
    errors: ErrorsOpt = "strict",
) -> None:
    from charrnn.commands import run_show

    finish(lambda: run_show(ckpt, text_file, text, chars, top, at, unit, gate, find, saturation, json_, html, encoding,
                      errors))


BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads(argv: list[str]) -> int:
    """BLAS threads for this run: `train --threads N`, else 1. Measured (benchmarks/threads.py, 2
    cores): with another process busy on one core, training with 2 threads took 2.1x as long as with
    one (the issue that asked for this saw 9x); idle, one thread is 15-25 % slower. Machines are rarely
    idle, so one thread is the default and more is asked for."""
    for i, a in enumerate(argv):
        value = a.split("=", 1)[1] if a.startswith("--threads=") else argv[i + 1] if a == "--threads" and \
            i + 1 < len(argv) else None
        if value is not None:
            return int(value) if value.isdigit() and int(value) > 0 else 1  # a bad value: train refuses it
    return 1


QUICK_TYPES: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, Path: Path}


def quick_parse(command: Any, args: list[str]) -> dict[str, Any] | None:
    """The values of a command line made only of plain options (numbers, text, paths, flags), read
    from the command as typer built it but without typer's coercion, which imports pydantic: 0.1 to
    0.3 s, most of what `charrnn sample` waits on before it starts. None for anything else (--help,
    an unknown option, a value that does not convert): typer parses that line and says what is wrong."""
    options: dict[str, tuple[Any, bool]] = {}  # "--num" -> (its parameter, the value of a flag)
    positional = []
    for p in command.params:
        if p.param_type_name == "argument":
            positional.append(p)
        options.update({o: (p, True) for o in p.opts if o.startswith("-")})
        options.update({o: (p, False) for o in getattr(p, "secondary_opts", ())})
    values = {p.name: p.default for p in command.params}
    rest = iter(args)
    for arg in rest:
        if arg.startswith("-") and arg != "-":
            name, eq, text = arg.partition("=")
            if name not in options:
                return None
            p, flag_value = options[name]
            if getattr(p, "is_flag", False):
                if eq:
                    return None
                values[p.name] = flag_value
                continue
            if not eq:
                following = next(rest, None)
                if following is None:
                    return None
                text = following
        elif positional:
            p, text = positional.pop(0), arg
        else:
            return None
        convert = QUICK_TYPES.get(getattr(getattr(p, "type_descriptor", None), "annotation", None))
        if convert is None:  # another type, or a typer that describes its parameters otherwise
            return None
        try:
            values[p.name] = convert(text)
        except ValueError:
            return None
    return None if positional else values


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one `Error:` line on stderr, never a traceback."""
    import os

    from charrnn.errors import CharrnnError, OptionError, visible

    args = sys.argv[1:] if argv is None else argv
    if "numpy" not in sys.modules and not any(v in os.environ for v in BLAS_THREADS):  # BLAS reads them once, at load
        n = blas_threads(args)
        os.environ.update({v: str(n) for v in BLAS_THREADS})

    command = typer.main.get_command(app)
    try:
        quick = quick_parse(command.commands["sample"], args[1:]) if args[:1] == ["sample"] else None  # type: ignore[attr-defined]
        if quick is not None:
            sample(**quick)  # exits, as every command does (finish)
        command.main(args=argv, prog_name="charrnn", standalone_mode=False)
    except CharrnnError as e:
        print(f"Error: {visible(e)}", file=sys.stderr)
        sys.exit(2 if isinstance(e, OptionError) else 1)  # a bad option value is a usage error
    except (KeyboardInterrupt, typer.Abort):
        print("Error: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `charrnn sample ... | head`
        sys.stderr.close()
        sys.exit(0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        # click's usage errors (typer may bundle its own click, so match by shape, not by class)
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help(), file=sys.stderr)
            sys.exit(2)
        name = getattr(ctx, "info_name", "charrnn")
        hint = f" (see 'charrnn {name} --help')" if name and name != "charrnn" else ""
        print(f"Error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
