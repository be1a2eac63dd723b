"""Speed of two versions of charrnn side by side: this checkout against a git revision.

    python benchmarks/compare_trees.py --base 03d49e6            # the table (~4 min)
    python benchmarks/compare_trees.py --base HEAD~1 --quick     # a seconds-long smoke

For a change that must not cost speed (a refactor): the base revision is checked out in a
temporary git worktree, and each measurement runs in a fresh process per version, the two
versions alternating, so a slow moment of a shared machine hits both; the table shows medians
and the ratio new / base. Measured: training chars/s (what `Trainer.train_step` pays for:
`model.loss_and_grads` + `optim.clip_` + `optim.step_`, B = 32, T = 64, one layer, state
carried), sampling chars/s (one stream, `sample.generate`), and the wall time of a whole
`charrnn sample CKPT -n 1` process (start-up, load, one name).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# One measurement, run in a child process with PYTHONPATH set to the version under test. It uses
# only functions whose signatures both versions share.
CHILD = r"""
import json, sys, time
import numpy as np
from charrnn import model, optim, sample
from charrnn.data import make_corpus
from charrnn.model import ModelConfig
kind, cell, H, steps, chars = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
import charrnn  # the version under test, or the comparison means nothing
if not charrnn.__file__.startswith(sys.argv[7]):
    sys.exit(f"imported {charrnn.__file__}, not the version in {sys.argv[7]}")
text = open(sys.argv[6], encoding="utf-8").read()[:400_000]
corpus = make_corpus(text, "stream", val_fraction=0.0)
cfg = ModelConfig(len(corpus.vocab), cell, H, layers=1)
params = model.init_params(cfg, np.random.default_rng(0))
if kind == "train":
    opt = optim.init_state("adam", params)
    B, T = 32, 64
    L = (len(corpus.train) - 1) // B
    state = None
    def step(k):
        global state
        pos = np.arange(B)[None, :] * L + (k * T) % (L - T) + np.arange(T)[:, None]
        x, y = corpus.train[pos].astype(np.int32), corpus.train[pos + 1].astype(np.int32)
        loss, grads, state = model.loss_and_grads(params, cfg, x, y, None, state)
        optim.clip_(grads, 5.0)
        optim.step_("adam", params, grads, opt, 2e-3)
    step(0)
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        step(k)
    print(json.dumps(B * T * steps / (time.perf_counter() - t0)))
else:  # the median of 5 runs: one run of 2,000 characters takes ~70 ms, and a slow moment swamps it
    sample.generate(params, cfg, corpus.vocab, "stream", n=1, length=20, rng=np.random.default_rng(0))
    rates = []
    for k in range(5):
        t0 = time.perf_counter()
        sample.generate(params, cfg, corpus.vocab, "stream", n=1, length=chars, rng=np.random.default_rng(k))
        rates.append(chars / (time.perf_counter() - t0))
    print(json.dumps(sorted(rates)[2]))
"""

CHECKPOINT = r"""
import sys
from charrnn.cli import main
main(["train", sys.argv[1], "--out", sys.argv[2], "--hidden-size", "256", "--layers", "1", "--steps", "2",
      "--eval-every", "2", "--quiet"])
"""


def run_child(tree: Path, env: dict[str, str], *args: str) -> float:
    # cwd=tree: `python -c` and `-m` put the working directory first on sys.path, so run from the
    # repository root they would import this checkout's charrnn for both versions
    r = subprocess.run([sys.executable, "-c", CHILD, *args, str(tree.resolve())], env=dict(env, PYTHONPATH=str(tree)),
                       cwd=tree, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{tree}: {r.stderr[-2000:]}")
    return float(json.loads(r.stdout))


def whole_sample(tree: Path, env: dict[str, str], ckpt: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charrnn", "sample", str(ckpt), "-n", "1"],
                   env=dict(env, PYTHONPATH=str(tree)), cwd=tree, capture_output=True, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare this checkout with")
    ap.add_argument("--reps", type=int, default=5, help="alternating runs per version and measurement")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per run")
    ap.add_argument("--sample-chars", type=int, default=2000, help="characters per sampling run")
    ap.add_argument("--configs", default="lstm-256,gru-256,rnn-256,lstm-512", help="cell-hidden, comma separated")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS threads")
    ap.add_argument("--kinds", default="train,sample", help="which of train and sample to time")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole `charrnn sample` process")
    ap.add_argument("--quick", action="store_true", help="1 run of 2 steps each: a smoke test")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.steps, a.sample_chars, a.configs = 1, 2, 50, "lstm-32,gru-32"
    blas = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    env = dict(os.environ, **{v: str(a.threads) for v in blas})
    data = DATA if DATA.exists() else ROOT / "corpora" / "shakespeare.txt"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), a.base], check=True)
        try:
            trees = {"base": base, "new": ROOT}
            rows = {}
            for config in a.configs.split(","):
                cell, H = config.split("-")
                for kind, n in (("train", a.steps), ("sample", a.sample_chars)):
                    if kind not in a.kinds.split(","):
                        continue
                    rates: dict[str, list[float]] = {"base": [], "new": []}
                    for _ in range(a.reps):
                        for name, tree in trees.items():
                            rates[name].append(run_child(tree, env, kind, cell, H, str(n), str(n), str(data)))
                    rows[f"{config} {kind}"] = {k: statistics.median(v) for k, v in rates.items()}
                    r = rows[f"{config} {kind}"]
                    print(f"{config:>9} {kind:>6}  base {r['base']:>10,.0f} ch/s  new {r['new']:>10,.0f} ch/s  "
                          f"new/base {r['new'] / r['base']:.3f}", flush=True)
            if not a.no_whole:
                names = Path(tmp) / "names.txt"
                names.write_text((ROOT / "corpora" / "names.txt").read_text(encoding="utf-8"), encoding="utf-8")
                times: dict[str, list[float]] = {"base": [], "new": []}
                ckpts = {}
                for name, tree in trees.items():
                    ckpts[name] = Path(tmp) / f"{name}.npz"
                    subprocess.run([sys.executable, "-c", CHECKPOINT, str(names), str(ckpts[name])],
                                   env=dict(env, PYTHONPATH=str(tree)), cwd=tree, check=True)
                for _ in range(max(a.reps * 2, 3)):
                    for name, tree in trees.items():
                        times[name].append(whole_sample(tree, env, ckpts[name]))
                rows["whole sample -n 1 (s)"] = {k: statistics.median(v) for k, v in times.items()}
                r = rows["whole sample -n 1 (s)"]
                print(f"whole `charrnn sample CKPT -n 1`  base {r['base']:.3f} s  new {r['new']:.3f} s  "
                      f"new/base {r['new'] / r['base']:.3f}")
            print(f"medians of {a.reps} alternating runs, {a.threads} BLAS threads, base = {a.base}")
            if a.json:
                a.json.write_text(json.dumps({"base": a.base, "threads": a.threads, "reps": a.reps, "rows": rows},
                                             indent=2))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
