"""Loss per step of charrnn and PyTorch on the same batches: does charrnn learn as fast?

    python benchmarks/curve.py                       # LSTM-256, 250 steps (~1 min)
    python benchmarks/curve.py --cell gru --steps 500

Both models train as in bench.py (tiny-shakespeare, B = 32, T = 64, 1 layer, Adam 2e-3,
clip norm 5, state carried) on identical batches, each with its own default
initialisation. The table shows the mean training loss (nats/char, measured before each
update) over windows of steps. This is how the slow start of charrnn's earlier
initialisation was found: it sat near the unigram loss for ~100 steps while PyTorch moved on.
Needs torch (`pip install torch==2.13.0`); without it only charrnn's column is filled.
"""

from __future__ import annotations

import argparse

import bench  # sets the BLAS thread count before numpy loads
import numpy as np

from charrnn.data import make_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--threads", type=int, default=bench.THREADS, help="BLAS / torch threads")
    args = ap.parse_args()

    torch = bench.import_torch(True)
    text, source = bench.load_text(bench.DATA)
    corpus = make_corpus(text, mode="stream", val_fraction=0.0)
    ours = bench.CharrnnRun(args.cell, args.hidden, corpus)
    theirs = bench.TorchRun(torch, args.cell, args.hidden, corpus) if torch else None
    losses: dict[str, list[float]] = {"charrnn": [], "torch": []}
    for _ in range(args.steps):  # both walk the same StreamLayout: identical batches
        losses["charrnn"].append(ours.train_step())
        if theirs:
            losses["torch"].append(float(theirs.train_step()))
    print(f"{args.cell}-{args.hidden} on {source}; mean training loss per {args.window}-step window")
    print(f"{'steps':>11}{'charrnn':>10}{'torch':>10}")
    for s in range(0, args.steps, args.window):
        cells = [np.mean(v[s : s + args.window]) if v else None for v in losses.values()]
        print(f"{s + 1:>5}-{min(s + args.window, args.steps):<5}"
              + "".join(f"{c:>10.3f}" if c is not None else f"{'-':>10}" for c in cells))


if __name__ == "__main__":
    main()
