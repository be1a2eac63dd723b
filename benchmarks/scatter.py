"""For #17: what the compiled input gradient (fast.scatter_rows) gains a numba training step.

    python benchmarks/scatter.py --threads 1
    python benchmarks/scatter.py --threads 2 --configs lstm-256,lstm-512 --reps 15

Training chars/s of `bench.CharrnnRun` on the numba backend, alternating in ~1 s blocks in one
process between the lookup layer's weight gradient as NumPy's one-hot product (what the NumPy
backend runs, and what numba training ran before) and as fast.scatter_rows; medians, and the
ratio of each pair of neighbouring blocks (the median of those is steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (sets the BLAS threads before numpy loads)

from charrnn import fast  # noqa: E402
from charrnn.data import make_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=bench.THREADS, help="BLAS threads [default: all cores]")
    ap.add_argument("--configs", default="lstm-256,gru-256,rnn-256,lstm-512", help="cell-hidden, comma separated")
    ap.add_argument("--reps", type=int, default=9, help="alternating blocks of each")
    ap.add_argument("--block-seconds", type=float, default=1.0)
    args = ap.parse_args()
    text, source = bench.load_text(bench.DATA)
    corpus = make_corpus(text, mode="stream", val_fraction=0.0)
    compiled = fast.scatter_rows

    def one_hot(ids, rows, n):  # model.scatter_rows's NumPy path for this vocabulary (n <= 256)
        return (ids[None, :] == bench.np.arange(n)[:, None]).astype(rows.dtype) @ rows

    print(f"numba training chars/s, {args.threads} thread(s), {source}; medians of {args.reps} alternating blocks")
    print(f"{'model':<10}{'one-hot':>10}{'compiled':>10}{'gain':>7}{'pairs':>7}")
    for cfg in args.configs.split(","):
        cell, hidden = cfg.split("-")
        run = bench.CharrnnRun(cell, int(hidden), corpus)

        def with_(scatter, run=run):
            def step():
                fast.scatter_rows = scatter
                try:
                    run.train_step()
                finally:
                    fast.scatter_rows = compiled
            return step

        bench.backend.use("numba")
        steps = max(1, round(args.block_seconds / bench.time_block(run.train_step, 2)))
        rates = bench.alternate({"one-hot": ("numba", with_(one_hot)), "compiled": ("numba", with_(compiled))},
                                args.reps, steps)
        a, b = statistics.median(rates["one-hot"]), statistics.median(rates["compiled"])
        pairs = statistics.median(y / x for x, y in zip(rates["one-hot"], rates["compiled"], strict=True))
        print(f"{cfg:<10}{a:>10,.0f}{b:>10,.0f}{b / a:>7.2f}{pairs:>7.2f}")


if __name__ == "__main__":
    main()
