"""Each optimizer's automatic learning rate: a sweep on names and tiny-shakespeare (#19 item 5).

    python benchmarks/lr_sweep.py                 # both corpora, every optimizer (~25 minutes)
    python benchmarks/lr_sweep.py --task names --optimizers sgd
    python benchmarks/lr_sweep.py --steps-scale 0.02   # a seconds-long smoke

Every run is `charrnn train` as a user runs it, with the automatic settings for the corpus, a
fixed seed, one BLAS thread, and a fixed number of steps rather than a time limit, so the
figures do not depend on how busy the machine is. The table shows the best validation loss
(nats/char) of each (optimizer, learning rate); the lowest of each row is marked *.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charrnn import checkpoint

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {"names": ("names.txt", 600), "shakespeare": ("tinyshakespeare.txt", 400)}  # file, steps
GRID = {
    "sgd": [0.1, 0.3, 1.0, 3.0],
    "adagrad": [0.01, 0.03, 0.1, 0.3],
    "adam": [1e-3, 2e-3, 3e-3, 1e-2],
}


def best_val(text: Path, optimizer: str, lr: float, steps: int, work: Path) -> tuple[float, float]:
    out = work / f"{optimizer}-{lr}.npz"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "charrnn", "train", str(text), "--optimizer", optimizer,
                        "--lr", str(lr), "--steps", str(steps), "--eval-every", str(max(1, steps // 4)),
                        "--seed", "0", "--threads", "1", "-q", "--force", "-o", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"training failed ({r.returncode}):\n{r.stderr}")
    loss = checkpoint.load(out).meta.best_val_loss
    return (float("nan") if loss is None else loss), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=[*TASKS, "all"], default="all")
    ap.add_argument("--optimizers", default=",".join(GRID))
    ap.add_argument("--steps-scale", type=float, default=1.0)
    args = ap.parse_args()
    tasks = list(TASKS) if args.task == "all" else [args.task]
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            name, steps = TASKS[task]
            steps = max(2, round(steps * args.steps_scale))
            print(f"\n{task}: {steps} steps, automatic settings, seed 0, 1 thread; best validation loss")
            for opt in args.optimizers.split(","):
                results = [(lr, *best_val(DATA / name, opt, lr, steps, Path(tmp))) for lr in GRID[opt]]
                low = min(loss for _, loss, _ in results)
                cells = [f"lr {lr:g}: {loss:.4f}{'*' if loss == low else ' '} ({secs:.0f} s)"
                         for lr, loss, secs in results]
                print(f"  {opt:8s} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
