"""Would an accelerated backend speed up charrnn's hot loops on this machine? (issue #17)

    python benchmarks/backends.py                  # ~2 minutes
    python benchmarks/backends.py --threads 1,2    # thread counts [default: 1, 2, all cores]
    python benchmarks/backends.py --quick          # a seconds-long smoke
    python benchmarks/backends.py --mkl /path/to/libmkl_rt.so.3
    python benchmarks/backends.py --rows 16        # half a batch: what each of two threads would get

It times the candidates the issue lists against what charrnn does today, on the shapes of
the benchmark model (B = 32 streams, T = 64 steps, LSTM, hidden 256 and 512, float32),
side by side in one process: the variants alternate, every figure is a median.

1. products: one recurrent product (B, H) @ (H, 4H), whole (today) and as column tiles
   small enough for OpenBLAS's small-matrix path.
2. numexpr (if installed): tanh, and the LSTM cell's elementwise forward math as fused,
   multi-threaded expressions, against charrnn's in-place NumPy passes.
3. Intel MKL through ctypes (if the `mkl` wheel is installed, or --mkl names its
   libmkl_rt): sgemm and vsTanh against numpy's OpenBLAS and np.tanh.
4. thread placement: a whole LSTM training step (model.loss_and_grads, clipping, Adam) with
   every product on N BLAS threads (today's `--threads N`), against the T small recurrent
   products on one thread and only the large products (weight gradients, output layer) on N.

Thread counts change inside the process (OpenBLAS's own set_num_threads, numexpr's, MKL's),
so all variants share one process and one machine state. Nothing here is part of charrnn.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from charrnn import cells, model, optim
from charrnn.config import ModelConfig
from charrnn.data import StreamLayout, make_corpus

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
B, T = 32, 64

try:
    import numexpr
except ImportError:
    numexpr = None


def find_openblas_setter() -> Callable[[int], None]:
    """numpy's bundled OpenBLAS's set_num_threads (its symbol names vary between builds)."""
    pattern = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")
    for path in glob.glob(pattern):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            f = getattr(lib, name, None)
            if f is not None:
                f.argtypes = [ctypes.c_int]
                return f
    raise SystemExit("cannot find numpy's OpenBLAS (this script needs numpy's own wheel)")


def find_mkl(path: str | None) -> ctypes.CDLL | None:
    candidates = [path] if path else glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*"))
    for p in candidates:
        lib = ctypes.CDLL(p)
        P, I = ctypes.c_void_p, ctypes.c_int
        lib.vsTanh.argtypes = [I, P, P]
        lib.cblas_sgemm.argtypes = [I] * 6 + [ctypes.c_float, P, I, P, I, ctypes.c_float, P, I]
        lib.MKL_Set_Num_Threads.argtypes = [I]
        lib.cblas_sgemm_pack_get_size.argtypes = [I] * 4
        lib.cblas_sgemm_pack_get_size.restype = ctypes.c_size_t
        lib.cblas_sgemm_pack.argtypes = [I] * 6 + [ctypes.c_float, P, I, P]
        lib.cblas_sgemm_compute.argtypes = [I] * 6 + [P, I, P, I, ctypes.c_float, P, I]
        return lib
    return None


def per_call_us(variants: dict[str, Callable[[], object]], rounds: int, seconds: float) -> dict[str, float]:
    """Median microseconds per call of each variant, the variants alternating in rounds of
    about `seconds` each."""
    calls = {}
    for name, f in variants.items():  # calibrate: how many calls fill `seconds`
        f()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds / 4:
            f()
            n += 1
        calls[name] = max(1, 4 * n)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, f in variants.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                f()
            times[name].append((time.perf_counter() - t0) / calls[name] * 1e6)
    return {name: statistics.median(v) for name, v in times.items()}


def products(H: int, threads: int, rounds: int, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    G = 4 * H
    h = rng.standard_normal((B, H), dtype=np.float32)
    W = rng.standard_normal((H, G), dtype=np.float32)
    out = np.empty((B, G), np.float32)
    variants: dict[str, Callable[[], object]] = {"whole": lambda: np.matmul(h, W, out=out)}
    for k in (64, 128):  # B * H * k below OpenBLAS's small-matrix limits
        tiles = [np.ascontiguousarray(W[:, j : j + k]) for j in range(0, G, k)]
        outs = [out[:, j : j + k] for j in range(0, G, k)]

        def tiled(tiles=tiles, outs=outs) -> None:
            for w, o in zip(tiles, outs, strict=True):
                o[...] = h @ w
        variants[f"tiles of {k}"] = tiled
    # the same numbers the other way round, (G, H) @ (H, B): OpenBLAS then sees B first (orientation.py)
    WT, hT, outT = np.ascontiguousarray(W.T), np.ascontiguousarray(h.T), np.empty((G, B), np.float32)
    variants["transposed, W^T h^T"] = lambda: np.matmul(WT, hT, out=outT)
    if MKL is not None:
        MKL.MKL_Set_Num_Threads(threads)
        variants["mkl sgemm"] = lambda: MKL.cblas_sgemm(101, 111, 111, B, G, H, 1.0, h.ctypes.data, H,
                                                        W.ctypes.data, G, 0.0, out.ctypes.data, G)
        # W_h is the same for all T steps of a batch: MKL can pack it once (row-major 101, B matrix
        # 162, no transpose 111) and reuse the packed copy (packed 151) in every product
        packed = np.empty(MKL.cblas_sgemm_pack_get_size(162, B, G, H) // 4 + 1, np.float32)
        MKL.cblas_sgemm_pack(101, 162, 111, B, G, H, 1.0, W.ctypes.data, G, packed.ctypes.data)
        variants["mkl packed sgemm"] = lambda: MKL.cblas_sgemm_compute(101, 111, 151, B, G, H, h.ctypes.data, H,
                                                                      packed.ctypes.data, G, 0.0, out.ctypes.data, G)
    return per_call_us(variants, rounds, seconds)


def elementwise(H: int, threads: int, rounds: int, seconds: float) -> dict[str, float]:
    """tanh over a (B, 4H) gate row, and the LSTM cell's forward math after the product."""
    rng = np.random.default_rng(0)
    a0 = rng.standard_normal((B, 4 * H), dtype=np.float32)
    s = rng.standard_normal((B, 4 * H), dtype=np.float32)
    c_prev = rng.standard_normal((B, H), dtype=np.float32)
    a, y = a0.copy(), np.empty_like(a0)
    c, tc, h, ig = (np.empty((B, H), np.float32) for _ in range(4))

    def numpy_cell() -> None:
        a[...] = a0
        cells._lstm_cell(a, s, c_prev, c, tc, h, ig)

    variants: dict[str, Callable[[], object]] = {"np.tanh (B, 4H)": lambda: np.tanh(a0, out=y),
                                                 "charrnn LSTM cell": numpy_cell}
    if numexpr is not None:
        numexpr.set_num_threads(threads)
        z = np.empty_like(a0)

        def numexpr_cell() -> None:
            numexpr.evaluate("a0 + s", {"a0": a0, "s": s}, out=z)
            zi, zf, zo, zg = (z[:, j * H : (j + 1) * H] for j in range(4))
            numexpr.evaluate("1 / (1 + exp(-zf)) * c_prev + 1 / (1 + exp(-zi)) * tanh(zg)",
                             {"zf": zf, "zi": zi, "zg": zg, "c_prev": c_prev}, out=c)
            numexpr.evaluate("1 / (1 + exp(-zo)) * tanh(c)", {"zo": zo, "c": c}, out=h)

        variants["numexpr tanh (B, 4H)"] = lambda: numexpr.evaluate("tanh(a0)", {"a0": a0}, out=y)
        variants["numexpr LSTM cell"] = numexpr_cell
    if MKL is not None:
        variants["mkl vsTanh (B, 4H)"] = lambda: MKL.vsTanh(a0.size, a0.ctypes.data, y.ctypes.data)
    return per_call_us(variants, rounds, seconds)


@contextmanager
def swapped(obj: object, name: str, new: object):
    old = getattr(obj, name)
    setattr(obj, name, new)
    try:
        yield
    finally:
        setattr(obj, name, old)


def placement(H: int, threads: int, rounds: int, seconds: float, text: str) -> dict[str, float]:
    """Training chars/s with every product on `threads` BLAS threads, and with the recurrent
    loop on one thread and the large products on `threads`."""
    corpus = make_corpus(text, mode="stream", val_fraction=0.0)
    cfg = ModelConfig(len(corpus.vocab), "lstm", H, layers=1)
    params = model.init_params(cfg, np.random.default_rng(0))
    opt = optim.init_state("adam", params)
    layout = StreamLayout(len(corpus.train), B, T)
    k = [0]

    def step() -> None:
        x, y = layout.batch(corpus.train, k[0] % layout.chunks)
        k[0] += 1
        _, grads, _ = model.loss_and_grads(params, cfg, x, y)
        optim.clip_(grads, 5.0)
        optim.step_("adam", params, grads, opt, 2e-3)

    def on(n: int, f):
        def g(*args):
            SET_THREADS(n)
            try:
                return f(*args)
            finally:
                SET_THREADS(threads if n == 1 else 1)
        return g

    def all_n() -> None:
        SET_THREADS(threads)
        step()

    def mixed() -> None:
        SET_THREADS(threads)
        with swapped(cells, "_lstm_forward", on(1, cells._lstm_forward)), \
             swapped(cells, "_lstm_backward", on(1, cells._lstm_backward)), \
             swapped(cells, "_weight_grad", on(threads, cells._weight_grad)):
            step()

    us = per_call_us({"all products on N": all_n, "recurrent on 1, rest on N": mixed}, rounds, seconds)
    SET_THREADS(threads)
    return {name: B * T / (t / 1e6) for name, t in us.items()}


def main() -> None:
    global MKL, SET_THREADS, B
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = os.cpu_count() or 1
    ap.add_argument("--threads", default=",".join(str(n) for n in sorted({1, min(2, cores), cores})))
    ap.add_argument("--hidden", default="256,512")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="length of one timed round")
    ap.add_argument("--mkl", help="path of libmkl_rt (default: the mkl wheel's, if installed)")
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke: 1 round, hidden 64")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rows", type=int, default=B, help=f"batch rows B [default: {B}]")
    args = ap.parse_args()
    B = args.rows
    if args.quick:
        args.rounds, args.seconds, args.hidden = 1, 0.02, "64"
    SET_THREADS = find_openblas_setter()
    MKL = find_mkl(args.mkl)
    if args.data.exists():
        text = args.data.read_text(encoding="utf-8")[: 200_000 if args.quick else None]
    else:  # timing needs text of about the right alphabet, not this text
        print(f"{args.data} not found: training steps run on a pangram repeated")
        text = "Sphinx of black quartz, judge my vow; THE FIVE BOXING WIZARDS JUMP QUICKLY!\n" * 4000
    print(f"numpy {np.__version__}, numexpr {numexpr.__version__ if numexpr else '-'}, "
          f"mkl {'yes' if MKL else '-'}; {os.cpu_count()} cores; B = {B}, T = {T}, float32; "
          f"medians of {args.rounds} alternating rounds")
    for H in (int(h) for h in args.hidden.split(",")):
        for n in (int(t) for t in args.threads.split(",")):
            SET_THREADS(n)
            print(f"\nLSTM, hidden {H}, {n} thread{'s' if n > 1 else ''}")
            for name, t in products(H, n, args.rounds, args.seconds).items():
                print(f"  product (B, H) @ (H, 4H)   {name:26s} {t:9.1f} us")
            for name, t in elementwise(H, n, args.rounds, args.seconds).items():
                print(f"  elementwise                {name:26s} {t:9.1f} us")
            for name, rate in placement(H, n, args.rounds, 3 * args.seconds, text).items():
                print(f"  training step              {name:26s} {rate:9,.0f} chars/s")


MKL: ctypes.CDLL | None = None
SET_THREADS: Callable[[int], None]

if __name__ == "__main__":
    main()
