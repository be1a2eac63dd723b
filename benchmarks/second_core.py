"""An experiment for #17 (not used by charrnn): two ways to put the second core to work in the
LSTM's forward loop, besides OpenBLAS's own threads in each product.

    python benchmarks/second_core.py --threads 2   # ~1 minute
    python benchmarks/second_core.py --threads 1   # the split without OpenBLAS's own workers

At 2 threads OpenBLAS splits each recurrent product between the cores, but the cell's kernel
(fast.lstm_forward_step) runs on one. Both variants below are checked to give the same hidden
states as fast.lstm_forward first, then timed against it, alternating in one process (medians):

  prange: the same kernel compiled with numba's parallel=True, its rows split between numba's
          threads (whichever threading layer numba picks; NUMBA_THREADING_LAYER=workqueue or
          OMP_WAIT_POLICY=passive change how its threads and OpenBLAS's wait for each other).
  split:  the batch cut in two halves, each run by its own Python thread through the whole
          forward loop in one numba function that releases the GIL and calls OpenBLAS's
          cblas_sgemm itself (through ctypes, 1 BLAS thread): two independent recurrences, no GIL
          hand-offs at all (the hand-offs are what sank the earlier two-thread attempt). Needs the
          OpenBLAS that NumPy's wheels bundle (scipy_cblas_sgemm64_); skipped without it. Also
          timed: the same loop over half the rows alone, and over all of them, on one thread.
          Read it at --threads 1 as well: after a 2-thread product OpenBLAS's worker keeps
          spinning for a while, and at --threads 2 it takes a core from the split's threads.
  mkl split: the same with MKL's packed GEMM (cblas_sgemm_compute on W_h packed once per
          forward), when the `mkl` wheel is installed in the environment that runs this (as a
          separate venv: PYTHONPATH=. path/to/venv/bin/python benchmarks/second_core.py).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (sets the BLAS threads before numpy loads)
import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from charrnn import fast, model  # noqa: E402
from charrnn.cells import _with_h0  # noqa: E402
from charrnn.fast import FASTMATH, sigmoid, tanh  # noqa: E402

B, T = 32, 64


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True, parallel=True)
def lstm_step_prange(a, s, c_prev, gates, c, tc, h):
    """fast.lstm_forward_step with its rows shared out between numba's threads."""
    rows, H = c.shape
    for b in prange(rows):
        z, s_b, gate = a[b], s[b], gates[b]
        for j in range(3 * H):
            gate[j] = sigmoid(z[j] + s_b[j])
        for j in range(3 * H, 4 * H):
            gate[j] = tanh(z[j] + s_b[j])
        for j in range(H):
            c_t = gate[H + j] * c_prev[b, j] + gate[j] * gate[3 * H + j]
            tc_t = tanh(c_t)
            c[b, j], tc[b, j], h[b, j] = c_t, tc_t, gate[2 * H + j] * tc_t


def lstm_forward_with(step, A, W_h, h0, c0):
    """fast.lstm_forward's loop with another kernel; the hidden states (T, B, H)."""
    T_, rows, G = A.shape
    Hs0, Cs0 = _with_h0(h0, T_), _with_h0(c0, T_)
    TCs, s, gates = np.empty((T_, rows, G // 4), A.dtype), np.empty((rows, G), A.dtype), np.empty_like(A)
    for t in range(T_):
        np.matmul(Hs0[t], W_h, out=s)
        step(A[t], s, Cs0[t], gates[t], Cs0[t + 1], TCs[t], Hs0[t + 1])
    return Hs0[1:]


def openblas():
    """(cblas_sgemm as a ctypes function numba can call, set_num_threads), or None."""
    found = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    if not found:
        return None
    lib = ctypes.CDLL(found[0])
    if not hasattr(lib, "scipy_cblas_sgemm64_"):
        return None
    i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    kind = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, f32, ptr, i64, ptr, i64,
                            f32, ptr, i64)
    set_threads = lib.scipy_openblas_set_num_threads64_
    set_threads.argtypes = [ctypes.c_int]
    return kind(ctypes.cast(lib.scipy_cblas_sgemm64_, ptr).value), set_threads


def rows_loop(product):
    """The forward loop over rows b0:b1, without the GIL: product(h, W, s) writes s = h W_h (W is
    W_h itself, or however the BLAS stores it), then the step's kernel."""
    step = fast.lstm_forward_step

    @njit(nogil=True)
    def rows_forward(A, W, Hs0, Cs0, TCs, gates, s, b0, b1):
        for t in range(A.shape[0]):
            product(Hs0[t, b0:b1], W, s)
            step(A[t, b0:b1], s, Cs0[t, b0:b1], gates[t, b0:b1], Cs0[t + 1, b0:b1], TCs[t, b0:b1], Hs0[t + 1, b0:b1])

    return rows_forward


ROW_MAJOR, NO_TRANS, PACKED, B_MATRIX = 101, 111, 151, 162  # CBLAS and MKL constants


def openblas_rows(sgemm):
    """(rows_forward, prepare) on OpenBLAS's sgemm, which takes W_h as it is."""

    @njit(nogil=True)
    def product(h, W_h, s):
        (M, H), G = h.shape, s.shape[1]
        sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, M, G, H, np.float32(1), h.ctypes.data, H, W_h.ctypes.data, G,
              np.float32(0), s.ctypes.data, G)

    return rows_loop(product), lambda W_h, rows: W_h


def mkl():
    """MKL's packed GEMM (the issue's third candidate), if the `mkl` wheel is installed in this
    environment: (rows_forward, pack, set_threads), or None. W_h is packed once per forward, as it
    would be once per batch, and both halves read the same packed copy."""
    found = glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*"))
    if not found:
        return None
    lib = ctypes.CDLL(found[0])
    i32, ptr, f32 = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
    lib.MKL_Set_Num_Threads.argtypes = [i32]
    lib.cblas_sgemm_pack_get_size.argtypes = [i32] * 4
    lib.cblas_sgemm_pack_get_size.restype = ctypes.c_size_t
    lib.cblas_sgemm_pack.argtypes = [i32] * 6 + [f32, ptr, i32, ptr]
    compute = ctypes.CFUNCTYPE(None, *[i32] * 6, ptr, i32, ptr, i32, f32, ptr, i32)(
        ctypes.cast(lib.cblas_sgemm_compute, ptr).value)

    def pack(W_h, rows):
        H, G = W_h.shape
        packed = np.empty(lib.cblas_sgemm_pack_get_size(B_MATRIX, rows, G, H) // 4 + 1, np.float32)
        lib.cblas_sgemm_pack(ROW_MAJOR, B_MATRIX, NO_TRANS, rows, G, H, 1.0, W_h.ctypes.data, G, packed.ctypes.data)
        return packed

    @njit(nogil=True)
    def product(h, packed, s):
        (M, H), G = h.shape, s.shape[1]
        compute(ROW_MAJOR, NO_TRANS, PACKED, M, G, H, h.ctypes.data, H, packed.ctypes.data, G, np.float32(0),
                s.ctypes.data, G)

    return rows_loop(product), pack, lib.MKL_Set_Num_Threads


def make_split(rows_forward, prepare, set_threads):
    pool = ThreadPoolExecutor(2)

    def forward(A, W_h, h0, c0, parts=((0, 0.5), (0.5, 1))):
        """The forward over the given fractions of the rows, each on its own thread (the rest left
        empty), with 1 BLAS thread; the hidden states."""
        T_, rows, G = A.shape
        Hs0, Cs0 = _with_h0(h0, T_), _with_h0(c0, T_)
        TCs, gates = np.empty((T_, rows, G // 4), A.dtype), np.empty_like(A)
        cuts = [(int(a * rows), int(b * rows)) for a, b in parts]
        set_threads(1)  # each part's products on its own core
        try:
            W = prepare(W_h, cuts[0][1] - cuts[0][0])
            jobs = [pool.submit(rows_forward, A, W, Hs0, Cs0, TCs, gates, np.empty((b1 - b0, G), A.dtype), b0, b1)
                    for b0, b1 in cuts]
            for job in jobs:
                job.result()
        finally:
            set_threads(bench.THREADS)
        return Hs0[1:]

    return forward


def measure(H: int, ways: dict, reps: int, rng: np.random.Generator) -> dict[str, float]:
    """Median ms per forward of fast.lstm_forward and of each way, alternating, after checking them."""
    A = rng.standard_normal((T, B, 4 * H)).astype(np.float32)
    W = (0.05 * rng.standard_normal((H, 4 * H))).astype(np.float32)
    h0 = (0.1 * rng.standard_normal((B, H))).astype(np.float32)
    c0 = h0.copy()
    want = fast.lstm_forward(A, W, h0, c0)[0]
    for name, way in ways.items():
        assert np.allclose(want, way(A, W, h0, c0), rtol=1e-5, atol=1e-6), f"{name} differs"
    runs = {"fast": fast.lstm_forward, **ways}
    for way in ("split", "mkl split"):  # why it wins or not: one half alone, and the whole batch on one thread
        if way in ways:
            runs[f"{way} half"] = lambda *a, f=ways[way]: f(*a, parts=((0, 0.5),))
            runs[f"{way} whole"] = lambda *a, f=ways[way]: f(*a, parts=((0, 1),))
    return bench.median_ms({k: (lambda f=f: f(A, W, h0, c0)) for k, f in runs.items()}, reps, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=bench.THREADS, help="BLAS threads [default: all cores]")
    ap.add_argument("--hidden", default="256,512", help="LSTM sizes, comma separated")
    ap.add_argument("--reps", type=int, default=9, help="alternating blocks")
    args = ap.parse_args()
    model._keep_freed_memory()  # as training does
    blas = openblas()
    ways = {"prange": lambda A, W, h0, c0: lstm_forward_with(lstm_step_prange, A, W, h0, c0)}
    if blas is not None:
        ways["split"] = make_split(*openblas_rows(blas[0]), blas[1])
    if (packed := mkl()) is not None:
        ways["mkl split"] = make_split(*packed)
    rng = np.random.default_rng(0)
    print(f"LSTM forward, B {B}, T {T}, float32, {bench.THREADS} BLAS thread(s); ms per batch, median of {args.reps}")
    print(f"{'H':>5}{'fast.lstm_forward':>19}" + "".join(f"{k:>9}{'ratio':>7}" for k in ways))
    for H in map(int, args.hidden.split(",")):
        m = measure(H, ways, args.reps, rng)
        print(f"{H:>5}{m['fast']:>19.2f}" + "".join(f"{m[k]:>9.2f}{m['fast'] / m[k]:>7.2f}" for k in ways))
        for way in ("split", "mkl split"):
            if way in ways:
                print(f"{'':>5}{way}'s loop on 1 BLAS thread: half the rows {m[way + ' half']:.2f}, "
                      f"all of them {m[way + ' whole']:.2f}")
    print(f"numba threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    main()
