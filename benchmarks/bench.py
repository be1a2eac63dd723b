"""Speed of charrnn against PyTorch on the same machine, in the same process.

    python benchmarks/bench.py                 # the table (~3 min with PyTorch installed)
    python benchmarks/bench.py --quick         # a seconds-long smoke of every measurement
    python benchmarks/bench.py --memory        # also peak memory on a generated 100 MB text
    python benchmarks/bench.py --json out.json # the results as JSON as well

Training: one step is what `Trainer.train_step` pays for, `model.loss_and_grads` +
`optim.clip_` (norm 5) + `optim.step_` (Adam), on consecutive tiny-shakespeare batches
(B = 32 streams, T = 64 steps, 1 layer, float32), the state carried between batches.
PyTorch does the same with nn.LSTM / nn.GRU / nn.RNN on one-hot inputs + nn.Linear,
F.cross_entropy, clip_grad_norm_ and torch.optim.Adam. The two alternate in blocks of
steps (one untimed step first, so neither inherits the other's spinning threads) and the
table shows medians: the machine may be shared, so only side-by-side ratios mean much.

With numba installed (`pip install 'charrnn[fast]'`), charrnn trains twice, alternating with
PyTorch in the same blocks: on its NumPy cells (the `charrnn` columns) and on the compiled
cells of charrnn/fast.py (`numba`); `--backend numpy` or `numba` times only one. Sampling
always runs NumPy (one step at a time: charrnn does not use the compiled cells there).

Both libraries get the same thread count (--threads, default: all cores): numpy's BLAS
through the usual environment variables, set before numpy is imported, and
torch.set_num_threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _threads_from_argv() -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return pre.parse_known_args()[0].threads


THREADS = _threads_from_argv()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)  # before numpy loads its BLAS

import numpy as np  # noqa: E402

from charrnn import backend, cells, checkpoint, fill, model, optim, sample  # noqa: E402
from charrnn.config import Mode, ModelConfig, Objective, TrainConfig  # noqa: E402
from charrnn.data import Batch, StreamLayout, make_corpus, masked_batch  # noqa: E402
from charrnn.vocab import Vocab  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
CONFIGS = [("lstm", 256), ("gru", 256), ("rnn", 256), ("lstm", 128), ("lstm", 512)]
BI_CONFIGS = ["lstm-256x1", "gru-256x1", "rnn-256x1", "lstm-256x2", "gru-256x2", "rnn-256x2"]
MASK_RATE = 0.15
B, T = 32, 64  # streams per batch, BPTT steps
LR, CLIP = 2e-3, 5.0


def load_text(path: Path) -> tuple[str, str]:
    if path.exists():
        return path.read_text(encoding="utf-8"), str(path)
    rng = np.random.default_rng(0)  # same alphabet size as tiny-shakespeare
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-&$3\n"))
    return "".join(alphabet[rng.integers(0, len(alphabet), 1_000_000)]), "random text (data file missing)"


def median_rate(samples: list[float]) -> float:
    return float(statistics.median(samples)) if samples else 0.0


def numba_available() -> bool:
    try:
        backend.use("numba")
    except Exception:
        return False
    finally:
        backend.use("numpy")
    return True


def alternate(runs: dict[str, tuple[str | None, Callable[[], Any]]], reps: int, steps: int) -> dict[str, list[float]]:
    """chars/s of each run, `reps` blocks of `steps` steps each, the runs alternating; a run
    names the charrnn backend it needs (None for PyTorch)."""
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, (name, step) in runs.items():
            if name:
                backend.use(name)
            rates[k].append(B * T / time_block(step, steps))
    backend.use("numpy")
    return rates


def median_ms(runs: dict[str, Callable[[], Any]], reps: int, calls: int) -> dict[str, float]:
    """Median milliseconds per call of each run: `reps` blocks of `calls` calls, the runs alternating."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, f in runs.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            times[k].append(1e3 * (time.perf_counter() - t0) / calls)
    return {k: statistics.median(v) for k, v in times.items()}


def time_block(step: Callable[[], Any], steps: int) -> float:
    """Seconds per step over `steps` timed steps, after one untimed step."""
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


# ---------------------------------------------------------------- charrnn


class CharrnnRun:
    """Training steps and one-stream sampling of a charrnn model."""

    def __init__(self, cell: str, hidden: int, corpus: Any) -> None:
        self.cfg = ModelConfig(len(corpus.vocab), cell, hidden, layers=1)
        rng = np.random.default_rng(0)
        self.params = model.init_params(self.cfg, rng)
        self.opt = optim.init_state("adam", self.params)
        self.corpus = corpus
        self.layout = StreamLayout(len(corpus.train), B, T)
        self.k = 0
        self.state: model.State | None = None

    def train_step(self) -> float:
        """One update; returns the batch's loss before it."""
        x, y = self.layout.batch(self.corpus.train, self.k)
        self.k = (self.k + 1) % self.layout.chunks
        loss, grads, self.state = model.loss_and_grads(self.params, self.cfg, x, y, None, self.state)
        optim.clip_(grads, CLIP)
        optim.step_("adam", self.params, grads, self.opt, LR)
        return loss

    def sample(self, length: int) -> float:
        """Characters per second generating one stream."""
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        sample.generate(self.params, self.cfg, self.corpus.vocab, "stream", n=1, length=length, rng=rng)
        return length / (time.perf_counter() - t0)


class BiCharrnnRun:
    """Training steps of a bidirectional charrnn model: the chunks of CharrnnRun, characters hidden
    as `charrnn train --bidirectional` hides them, no state carried; the loss at every character
    (neighbors objective) or at the hidden ones (masked)."""

    def __init__(self, cell: str, hidden: int, layers: int, corpus: Any, objective: str = "neighbors",
                 head: int = 0) -> None:
        self.cfg = ModelConfig(len(corpus.vocab), cell, hidden, layers=layers, bidirectional=True,
                               objective=objective, head=head)
        self.params = model.init_params(self.cfg, np.random.default_rng(0))
        self.opt = optim.init_state("adam", self.params)
        self.corpus = corpus
        self.layout = StreamLayout(len(corpus.train), B, T)
        self.k = 0

    def batch(self, k: int) -> Any:
        x, y = self.layout.batch(self.corpus.train, k % self.layout.chunks)
        return masked_batch(Batch(x, y, None), Mode.STREAM, MASK_RATE, np.random.default_rng(k), len(self.corpus.vocab),
                            every=self.cfg.objective == Objective.NEIGHBORS)

    def train_step(self) -> float:
        mb = self.batch(self.k)
        self.k += 1
        loss, grads, _ = model.loss_and_grads(self.params, self.cfg, mb.x, mb.y, mb.weights, None)
        optim.clip_(grads, CLIP)
        optim.step_("adam", self.params, grads, self.opt, LR)
        return loss


def fill_seconds(cell: str, bidirectional: bool, reps: int) -> float:
    """Median seconds of `fill.fill` on one 20-character line with one blank (a names-sized model,
    1 x 256): one pass for a bidirectional model, every candidate scored for a forward one."""
    vocab = Vocab("abcdefghijklmnopqrstuvwxyz")
    cfg = ModelConfig(len(vocab), cell, 256, layers=1, bidirectional=bidirectional, head=256 if bidirectional else 0)
    meta = checkpoint.Meta(mode=Mode.LINES, train=TrainConfig(seq_len=64))
    ck = checkpoint.Checkpoint(cfg, vocab, model.init_params(cfg, np.random.default_rng(0)), meta=meta)
    text = "christophermarlo_ewe"  # 20 characters, one blank
    fill.fill(ck, text)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fill.fill(ck, text)
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def names_model() -> tuple[Vocab, ModelConfig, model.Params]:
    """A names-sized model (LSTM 1x256, 26 letters), untrained."""
    vocab = Vocab("abcdefghijklmnopqrstuvwxyz")
    cfg = ModelConfig(len(vocab), "lstm", 256, layers=1)
    return vocab, cfg, model.init_params(cfg, np.random.default_rng(0))


def names_seconds(n: int = 1000, length: int = 20) -> float:
    """Seconds to sample n names from `names_model()`. Untrained, its names average ~13.5 of
    the 20 characters allowed (46 % run all 20), against ~7 for a trained model: an upper bound."""
    vocab, cfg, params = names_model()
    t0 = time.perf_counter()
    sample.generate(params, cfg, vocab, "lines", n=n, length=length, rng=np.random.default_rng(0))
    return time.perf_counter() - t0


# ---------------------------------------------------------------- PyTorch


class TorchRun:
    """The same model, data and optimizer in PyTorch."""

    def __init__(self, torch: Any, cell: str, hidden: int, corpus: Any) -> None:
        self.torch = torch
        nn = torch.nn
        self.V = len(corpus.vocab)
        torch.manual_seed(0)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](self.V, hidden)
        self.out = nn.Linear(hidden, self.V)
        self.params = list(self.rnn.parameters()) + list(self.out.parameters())
        self.opt = torch.optim.Adam(self.params, lr=LR)
        self.corpus = corpus
        self.layout = StreamLayout(len(corpus.train), B, T)
        self.k = 0
        self.state: Any = None

    def train_step(self) -> Any:
        """One update; returns the batch's loss before it (a tensor: no sync in timed loops)."""
        torch = self.torch
        x, y = self.layout.batch(self.corpus.train, self.k)
        self.k = (self.k + 1) % self.layout.chunks
        x1 = torch.nn.functional.one_hot(torch.from_numpy(x).long(), self.V).float()  # (T, B, V)
        if self.state is not None:
            self.state = tuple(s.detach() for s in self.state) if isinstance(self.state, tuple) else self.state.detach()
        hs, self.state = self.rnn(x1, self.state)
        logits = self.out(hs)  # (T, B, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.V), torch.from_numpy(y).long().reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.opt.step()
        return loss.detach()

    def sample(self, length: int) -> float:
        torch = self.torch
        gen = torch.Generator().manual_seed(0)
        x = torch.zeros(1, 1, self.V)
        state = None
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(length):
                hs, state = self.rnn(x, state)
                p = torch.softmax(self.out(hs[0, 0]), dim=-1)
                i = int(torch.multinomial(p, 1, generator=gen))
                x.zero_()
                x[0, 0, i] = 1
            return length / (time.perf_counter() - t0)


class BiTorchRun:
    """The same bidirectional model and objective in PyTorch, on one-hot inputs of V + 1 (<MASK>) and
    nn.Linear(2H, V), cross-entropy at the same positions. masked, and neighbors with 1 layer:
    nn.LSTM/GRU/RNN(bidirectional=True); neighbors with more layers: one stack per direction (the
    right-to-left one on the flipped chunk), as charrnn's. neighbors: the output reads the shifted
    states [h→_{t-1} ; h←_{t+1}]. With a head: nn.Linear(2H, n_z) and tanh before the output."""

    def __init__(self, torch: Any, cell: str, hidden: int, layers: int, ours: BiCharrnnRun) -> None:
        self.torch, self.ours = torch, ours
        nn = torch.nn
        self.V, self.H = len(ours.corpus.vocab), hidden
        self.neighbors = ours.cfg.objective == Objective.NEIGHBORS
        torch.manual_seed(0)
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        if self.neighbors and layers > 1:
            self.stacks = [kind(self.V + 1, hidden, num_layers=layers) for _ in range(2)]
        else:
            self.stacks = [kind(self.V + 1, hidden, num_layers=layers, bidirectional=True)]
        head = ours.cfg.head
        self.head = nn.Sequential(nn.Linear(2 * hidden, head), nn.Tanh()) if head else nn.Identity()
        self.out = nn.Linear(head or 2 * hidden, self.V)
        self.params = ([p for rnn in self.stacks for p in rnn.parameters()] + list(self.head.parameters())
                       + list(self.out.parameters()))
        self.opt = torch.optim.Adam(self.params, lr=LR)
        self.k = 0

    def train_step(self) -> Any:
        torch = self.torch
        mb = self.ours.batch(self.k)  # the same hidden positions as charrnn's k-th step
        self.k += 1
        x1 = torch.nn.functional.one_hot(torch.from_numpy(mb.x).long(), self.V + 1).float()  # (T, B, V + 1)
        if len(self.stacks) == 2:
            hs = torch.cat([self.stacks[0](x1)[0], self.stacks[1](x1.flip(0))[0].flip(0)], dim=2)
        else:
            hs, _ = self.stacks[0](x1)
        if self.neighbors:
            zero = hs.new_zeros(1, *hs.shape[1:-1], self.H)
            hs = torch.cat([torch.cat([zero, hs[:-1, :, : self.H]]), torch.cat([hs[1:, :, self.H :], zero])], dim=2)
        logits = self.out(self.head(hs))  # (T, B, V)
        keep = torch.from_numpy(mb.weights.reshape(-1) > 0)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.V)[keep],
                                                 torch.from_numpy(mb.y).long().reshape(-1)[keep])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.opt.step()
        return loss.detach()


# ---------------------------------------------------------------- measurements


def useful_flops_per_char(cell: str, hidden: int, V: int) -> float:
    """6 x the weights a one-hot-input model multiplies by: 2 forward, 4 backward."""
    G = cells.GATES[cell] * hidden
    return 6.0 * (V * G + hidden * G + hidden * V)


def products_only_rate(cell: str, hidden: int, V: int, reps: int) -> float:
    """Chars/s if a charrnn training step were nothing but its matrix products (same shapes:
    T recurrent products forward and backward, the weight gradient, output layer, input
    scatter): a ceiling for any NumPy step, whatever its elementwise work costs."""
    G = cells.GATES[cell] * hidden
    rng = np.random.default_rng(0)
    f32 = np.float32
    W_h, W_hT = rng.random((hidden, G), f32), rng.random((G, hidden), f32)
    h, s, d = rng.random((B, hidden), f32), np.empty((B, G), f32), rng.random((B, G), f32)
    dh = np.empty((B, hidden), f32)
    Hs, dA = rng.random((T * B, hidden), f32), rng.random((T * B, G), f32)
    W_y, dlog, onehot = rng.random((hidden, V), f32), rng.random((T * B, V), f32), rng.random((V, T * B), f32)

    def products() -> None:
        for _ in range(T):
            np.matmul(h, W_h, out=s)
        for _ in range(T):
            np.matmul(d, W_hT, out=dh)
        Hs.T @ dA, Hs @ W_y, Hs.T @ dlog, dlog @ W_y.T, onehot @ dA  # noqa: B018

    return B * T / statistics.median(time_block(products, 1) for _ in range(reps))


def sgemm_gflops(n: int, repeats: int) -> float:
    """Best float32 matmul rate at n x n x n, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = min(time_block(lambda: np.matmul(a, b, out=out), 1) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def names_checkpoint(path: Path) -> Path:
    """`names_model()` saved as a checkpoint with 32,000 line hashes (so novelty is checked)."""
    vocab, cfg, params = names_model()
    hashes = np.unique(np.random.default_rng(0).integers(0, 2**63, 32_000, dtype=np.uint64))
    corpus = checkpoint.CorpusInfo(chars=8 * len(hashes))  # the text they stand for: a file holds no more lines
    meta = checkpoint.Meta(mode=Mode.LINES, train=TrainConfig(seq_len=20), corpus=corpus)
    ck = checkpoint.Checkpoint(cfg, vocab, params, meta=meta, line_hashes=hashes)
    checkpoint.save(path, ck)
    return path


def startup_seconds(repeats: int) -> dict[str, float] | None:
    """Median wall times of `charrnn --help` and of a whole `charrnn sample names.npz -n 1`
    (start-up, loading and one name: an upper bound on start-up before work), or None
    without the console script."""
    beside = Path(sys.executable).with_name("charrnn")  # this environment's script, not a shim on PATH
    exe = str(beside) if beside.exists() else shutil.which("charrnn")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(names_checkpoint(Path(tmp) / "names.npz"))
        commands = {"help": [exe, "--help"], "sample": [exe, "sample", ckpt, "-n", "1", "--seed", "0"]}
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(repeats):  # alternating
            for k, argv in commands.items():
                t0 = time.perf_counter()
                subprocess.run(argv, capture_output=True, check=True)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


PEAK_WRAPPER = """
import resource, runpy, sys
what, out, *sys.argv[1:] = sys.argv[1:]
try:
    if what == "encode":
        from charrnn.data import make_corpus, read_text
        make_corpus(read_text(sys.argv[1]), mode="stream")
    else:
        sys.argv[0] = "charrnn"
        runpy.run_module("charrnn", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
finally:
    try:  # this process's own high-water mark (ru_maxrss would include the forking parent's)
        status = open("/proc/self/status").read()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    except OSError:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    open(out, "w").write(str(kib))
"""


def peak_memory(source: str, megabytes: int, workdir: Path) -> dict[str, float]:
    """Peak resident memory (MB) and wall time of encoding, and of two training steps
    through the CLI, on a text of `megabytes` MB made by repeating `source`."""
    path = workdir / "big.txt"
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < megabytes * 1_000_000:
            f.write(source)
            written += len(source.encode("utf-8"))
    train_args = ["train", str(path), "--out", str(workdir / "m.npz"), "--cell", "lstm", "--hidden-size", "256",
                  "--layers", "1", "--batch-size", str(B), "--seq-len", str(T), "--steps", "2", "--mode", "stream"]
    result: dict[str, float] = {"text_mb": path.stat().st_size / 1e6}
    for name, job_args in (("encode", [str(path)]), ("train", train_args)):
        out = workdir / f"{name}.peak"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, name, str(out), *job_args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stderr[-500:]}")
        result[f"{name}_seconds"] = time.perf_counter() - t0
        result[f"{name}_peak_mb"] = int(out.read_text()) / 1024
    return result


def import_torch(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run: 1 repetition of 2 steps")
    ap.add_argument("--reps", type=int, default=7, help="alternating blocks per library and model")
    ap.add_argument("--block-seconds", type=float, default=1.5, help="target length of one timed block")
    ap.add_argument("--threads", type=int, default=THREADS, help="BLAS / torch threads [default: all cores]")
    ap.add_argument("--configs", default=",".join(f"{c}-{h}" for c, h in CONFIGS), help="cell-hidden, comma separated")
    ap.add_argument("--objective", choices=["neighbors", "masked"], default="neighbors",
                    help="the bidirectional rows' objective (default: what train --bidirectional uses)")
    ap.add_argument("--head", type=int, default=-1,
                    help="bidirectional rows: width of the head (default: as train, H for neighbors, 0 for masked)")
    ap.add_argument("--bi-configs", default=",".join(BI_CONFIGS),
                    help="bidirectional rows, cell-hidden x layers, comma separated ('' for none)")
    ap.add_argument("--sample-chars", type=int, default=2000, help="characters generated per sampling measurement")
    ap.add_argument("--no-torch", action="store_true", help="charrnn only")
    ap.add_argument("--memory", action="store_true", help="also peak memory on a generated text (slow)")
    ap.add_argument("--memory-mb", type=int, default=100, help="size of that text in MB")
    ap.add_argument("--data", type=Path, default=DATA, help="training text [default: tiny-shakespeare]")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--backend", choices=("both", "numpy", "numba"), default="both",
                    help="charrnn's cells: NumPy, compiled (numba), or both alternating [default: both, "
                         "NumPy only without numba]")
    args = ap.parse_args()
    if args.backend == "numba" and not numba_available():
        sys.exit("--backend numba: numba does not import (pip install 'charrnn[fast]')")
    backends = [b for b in ("numpy", "numba") if args.backend in (b, "both")]
    if args.backend == "both" and not numba_available():
        backends = ["numpy"]
    backend.use("numpy")
    if args.quick:
        args.reps, args.sample_chars = 1, 50
        if args.bi_configs == ",".join(BI_CONFIGS):
            args.bi_configs = "gru-32x1,lstm-32x2"  # the code paths, not the sizes

    torch = import_torch(not args.no_torch)
    text, source = load_text(args.data)
    corpus = make_corpus(text, mode="stream", val_fraction=0.0)
    V = len(corpus.vocab)
    gemm = sgemm_gflops(256 if args.quick else 2048, 2 if args.quick else 5)
    torch_note = torch.__version__ if torch else "(off)" if args.no_torch else "(not installed)"
    print(f"charrnn vs PyTorch {torch_note}; numpy {np.__version__}; "
          f"{THREADS} threads; {platform.processor() or platform.machine()}")
    print(f"data: {source}, V = {V}; B = {B}, T = {T}, 1 layer, float32, Adam, clip norm {CLIP}")
    print(f"float32 matmul rate (numpy, {256 if args.quick else 2048}^3): {gemm:.1f} GFLOP/s")
    fast = "numba" in backends
    print("charrnn backends: " + ", ".join(backends) + "\n")

    head = (f"{'model':<10}{'charrnn ch/s':>14}" + (f"{'numba ch/s':>12}" if fast else "")
            + f"{'torch ch/s':>12}{'ratio':>7}" + (f"{'numba':>7}" if fast else "")
            + f"{'% sgemm':>9}{'torch %':>9}{'products':>10}{'sample ch/s':>13}{'torch':>9}{'ratio':>7}")
    print(head)
    print("-" * len(head))
    rows = []
    for spec in filter(None, args.configs.split(",")):
        cell, hidden = spec.split("-")[0], int(spec.split("-")[1])
        ours = CharrnnRun(cell, hidden, corpus)
        theirs = TorchRun(torch, cell, hidden, corpus) if torch else None
        per_step = time_block(ours.train_step, 1)
        steps = 2 if args.quick else max(2, int(args.block_seconds / per_step))
        runs: dict[str, tuple[str | None, Callable[[], Any]]] = {
            b: (b, ours.train_step) for b in backends}  # one model: both backends train it in turn
        if theirs:
            runs["torch"] = (None, theirs.train_step)
        rates = alternate(runs, args.reps, steps)
        ours_rates, theirs_rates = rates.get("numpy", []), rates.get("torch", [])
        numba_rates = rates.get("numba", [])
        main_rates = ours_rates or numba_rates  # --backend numba: the charrnn columns are numba's
        ours_samples: list[float] = []
        theirs_samples: list[float] = []
        for _ in range(1 if args.quick else 5):  # alternating too
            ours_samples.append(ours.sample(args.sample_chars))
            if theirs:
                theirs_samples.append(theirs.sample(args.sample_chars))
        ours_sample = median_rate(ours_samples)
        theirs_sample = median_rate(theirs_samples) if theirs else None
        flops = useful_flops_per_char(cell, hidden, V)
        ceiling = products_only_rate(cell, hidden, V, 1 if args.quick else 9)
        numba_rate = median_rate(numba_rates) if numba_rates else None
        row = {
            "cell": cell,
            "hidden": hidden,
            "steps_per_block": steps,
            "backend": "numpy" if ours_rates else "numba",
            "charrnn_chars_per_s": median_rate(main_rates),
            "numba_chars_per_s": numba_rate,
            "torch_chars_per_s": median_rate(theirs_rates) if theirs else None,
            "ratio": median_rate(main_rates) / median_rate(theirs_rates) if theirs else None,
            "numba_ratio": numba_rate / median_rate(theirs_rates) if theirs and numba_rate else None,
            "charrnn_fraction_of_sgemm": median_rate(main_rates) * flops / (gemm * 1e9),
            "torch_fraction_of_sgemm": median_rate(theirs_rates) * flops / (gemm * 1e9) if theirs else None,
            "charrnn_sample_chars_per_s": ours_sample,
            "torch_sample_chars_per_s": theirs_sample,
            "sample_ratio": ours_sample / theirs_sample if theirs_sample else None,
            "products_only_chars_per_s": ceiling,
            "charrnn_all": main_rates,
            "numba_all": numba_rates,
            "torch_all": theirs_rates,
        }
        rows.append(row)

        def fmt(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        print(f"{spec:<10}{fmt(row['charrnn_chars_per_s'], ',.0f'):>14}"
              + (f"{fmt(numba_rate, ',.0f'):>12}" if fast else "")
              + f"{fmt(row['torch_chars_per_s'], ',.0f'):>12}{fmt(row['ratio'], '.2f'):>7}"
              + (f"{fmt(row['numba_ratio'], '.2f'):>7}" if fast else "")
              + f"{fmt(100 * row['charrnn_fraction_of_sgemm'], '.0f'):>9}"
              f"{fmt(row['torch_fraction_of_sgemm'] and 100 * row['torch_fraction_of_sgemm'], '.0f'):>9}"
              f"{fmt(ceiling, ',.0f'):>10}"
              f"{fmt(ours_sample, ',.0f'):>13}{fmt(theirs_sample, ',.0f'):>9}{fmt(row['sample_ratio'], '.1f'):>7}",
              flush=True)
    if fast:
        print("\nnumba: charrnn on its compiled cells (charrnn/fast.py); ratio and numba: each over torch")
    print(f"\nmedians of {args.reps} alternating blocks; % sgemm = 6 x weights x chars/s over the matmul rate;")
    print("products: chars/s of a step that did only charrnn's matrix products (a ceiling for NumPy);")
    print(f"sampling: one stream, {args.sample_chars} characters, median of {1 if args.quick else 5} alternating runs")
    bi_rows = []
    if args.bi_configs:
        print(f"\nbidirectional, {args.objective} objective ({MASK_RATE:.0%} hidden in spans of 1-3), H per direction, "
              f"{'a head of ' + str(args.head) if args.head > 0 else 'no head' if args.head == 0 else 'default head'}, "
              "no state carried")
        print(f"{'model':<14}{'charrnn ch/s':>14}" + (f"{'numba ch/s':>12}" if fast else "")
              + f"{'torch ch/s':>12}{'ratio':>7}" + (f"{'numba':>7}" if fast else ""))
    for spec in filter(None, args.bi_configs.split(",")):
        cell, size = spec.split("-")
        hidden, layers = (int(v) for v in size.split("x"))
        head = args.head if args.head >= 0 else hidden if args.objective == "neighbors" else 0
        bi_ours = BiCharrnnRun(cell, hidden, layers, corpus, args.objective, head)
        bi_theirs = BiTorchRun(torch, cell, hidden, layers, bi_ours) if torch else None
        per_step = time_block(bi_ours.train_step, 1)
        steps = 2 if args.quick else max(2, int(args.block_seconds / per_step))
        runs = {b: (b, bi_ours.train_step) for b in backends}
        if bi_theirs:
            runs["torch"] = (None, bi_theirs.train_step)
        rates = alternate(runs, args.reps, steps)
        ours_rates, theirs_rates = rates.get("numpy") or rates["numba"], rates.get("torch", [])
        r_ours, r_theirs = median_rate(ours_rates), median_rate(theirs_rates) if bi_theirs else None
        r_numba = median_rate(rates["numba"]) if fast else None
        bi_rows.append({"cell": cell, "hidden": hidden, "layers": layers, "head": head, "charrnn_chars_per_s": r_ours,
                        "numba_chars_per_s": r_numba,
                        "torch_chars_per_s": r_theirs, "ratio": r_ours / r_theirs if r_theirs else None,
                        "charrnn_all": ours_rates, "numba_all": rates.get("numba", []), "torch_all": theirs_rates})
        print(f"bi-{spec:<11}{r_ours:>14,.0f}" + (f"{r_numba:>12,.0f}" if r_numba else "")
              + f"{'-' if r_theirs is None else format(r_theirs, ',.0f'):>12}"
              + f"{'-' if r_theirs is None else format(r_ours / r_theirs, '.2f'):>7}"
              + (f"{r_numba / r_theirs:>7.2f}" if r_numba and r_theirs else ""), flush=True)
    fills = {kind: fill_seconds("lstm", kind == "bidirectional", 3 if args.quick else 21)
             for kind in ("bidirectional", "forward")}
    print(f"fill one blank in a 20-character line (LSTM 1x256): bidirectional {1000 * fills['bidirectional']:.1f} ms, "
          f"forward (every candidate scored) {1000 * fills['forward']:.1f} ms")
    names = names_seconds(100 if args.quick else 1000)
    print(f"{100 if args.quick else 1000:,} names (LSTM 1x256, up to 20 characters each): {names:.3f} s")

    startup = startup_seconds(1 if args.quick else 9)
    if startup is None:
        print("start-up: console script not installed")
    else:
        print(f"`charrnn --help`: {startup['help']:.2f} s; whole `charrnn sample names.npz -n 1` "
              f"(start-up + load + 1 name): {startup['sample']:.2f} s")
    memory = None
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            memory = peak_memory(text, 1 if args.quick else args.memory_mb, Path(tmp))
        print(f"{memory['text_mb']:.0f} MB text: encoding peaks at {memory['encode_peak_mb']:.0f} MB "
              f"({memory['encode_seconds']:.1f} s), 2 training steps via the CLI at "
              f"{memory['train_peak_mb']:.0f} MB ({memory['train_seconds']:.1f} s)")

    if args.json:
        results = {
            "threads": THREADS,
            "numpy": np.__version__,
            "backends": backends,
            "torch": torch.__version__ if torch else None,
            "data": source,
            "vocab_size": V,
            "batch_size": B,
            "seq_len": T,
            "reps": args.reps,
            "sgemm_gflops": gemm,
            "train": rows,
            "bidirectional_objective": args.objective, "bidirectional_train": bi_rows,
            "fill_seconds": fills,
            "names_seconds": names,
            "startup_seconds": startup,
            "memory": memory,
        }
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
