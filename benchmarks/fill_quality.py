"""How well blanks are filled: a bidirectional model against a count baseline and a forward
model's exact whole-line scoring, through the CLI and the library as a user would use them.

    python benchmarks/fill_quality.py                       # names, 5 min per model (~11 min)
    python benchmarks/fill_quality.py --minutes 0.05        # a smoke
    python benchmarks/fill_quality.py --workdir runs/fill   # keep the checkpoints (reused if there)
    python benchmarks/fill_quality.py --task shakespeare --minutes 15   # tiny-shakespeare (~17 min)

names: the split of benchmarks/quality.py (1,000 random names held out, seed 3407). Both models
train on the rest with default settings and `--time MINUTES` (the forward one exactly as
`charrnn train` picks, the bidirectional one with `--bidirectional`). Each held-out name gets one
random position blanked (fixed seed); reported: top-1 fill accuracy of
  - count baseline: the most frequent character between the same two characters on each side in
    the training names (line ends count as characters), backing off to one on each side, then to
    the most frequent character;
  - the forward model, scoring the whole name (with its end) for every candidate: exact;
  - the bidirectional model, one pass;
with names per second of both models (batched, in process), and for spans: 3 consecutive
letters blanked in names of 5+ letters, the rate at which the whole span is exactly right
(forward: beam search of 8; bidirectional: surest blank first).

shakespeare: both models train at the same time (one BLAS thread each, one per core) on
tinyshakespeare.txt with `--val-fraction 0.1`, so the last 10 % is held out; 2,000 windows of 64
characters spread through that tail get one random position blanked each (fill.blank_one_each);
the count baseline is the same two-characters-each-side table, from the first 90 %.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from charrnn import checkpoint, fill
from charrnn.config import Mode

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPAN = 3


def train_together(text: Path, jobs: dict[Path, list[str]], minutes: float) -> None:
    """`charrnn train text -o CKPT --time minutes --quiet EXTRA` for every job whose checkpoint is
    not there yet, all at the same time (one BLAS thread each, the default); says how long it took."""
    todo = {ckpt: extra for ckpt, extra in jobs.items() if not ckpt.exists()}
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(text), "-o", str(ckpt), "--time",
                               str(minutes), "--quiet", *extra], stdout=subprocess.DEVNULL)
             for ckpt, extra in todo.items()]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"training {', '.join(c.name for c in todo)} failed")
    if todo:
        print(f"trained {' and '.join(c.name for c in todo)} in {time.perf_counter() - t0:.0f} s (load average at "
              f"start {load0:.2f})", flush=True)


def count_baseline(train: list[str]) -> tuple[dict, dict, str]:
    two: dict[tuple[str, str, str, str], Counter] = {}
    one: dict[tuple[str, str], Counter] = {}
    every: Counter = Counter()
    for name in train:
        s = "^^" + name + "$$"
        for i in range(2, len(s) - 2):
            two.setdefault((s[i - 2], s[i - 1], s[i + 1], s[i + 2]), Counter())[s[i]] += 1
            one.setdefault((s[i - 1], s[i + 1]), Counter())[s[i]] += 1
            every[s[i]] += 1
    return ({k: c.most_common(1)[0][0] for k, c in two.items()}, {k: c.most_common(1)[0][0] for k, c in one.items()},
            every.most_common(1)[0][0])


def baseline_fill(tables: tuple[dict, dict, str], name: str, p: int, wide: bool = True) -> str:
    two, one, top = tables
    s = "^^" + name + "$$"
    i = p + 2
    if wide and (s[i - 2], s[i - 1], s[i + 1], s[i + 2]) in two:
        return two[(s[i - 2], s[i - 1], s[i + 1], s[i + 2])]
    return one.get((s[i - 1], s[i + 1]), top)


def timed_fill_each(ck: checkpoint.Checkpoint, texts: list[np.ndarray], positions: list[int]
                    ) -> tuple[np.ndarray, float]:
    fill.fill_each(ck, texts[:20], positions[:20])  # warm up
    t0 = time.perf_counter()
    got = fill.fill_each(ck, texts, positions)
    return got, time.perf_counter() - t0


def shakespeare(minutes: float, work: Path) -> dict:
    path = DATA / "tinyshakespeare.txt"
    load0 = os.getloadavg()[0]
    held_out = ["--val-fraction", "0.1"]
    train_together(path, {work / "shakespeare-forward.npz": held_out,
                          work / "shakespeare-bidirectional.npz": [*held_out, "--bidirectional"]}, minutes)
    runs = {kind: checkpoint.load(work / f"shakespeare-{kind}.npz") for kind in ("forward", "bidirectional")}
    text = path.read_text(encoding="utf-8")
    vocab = runs["forward"].vocab
    ids, _ = vocab.encode(text)  # one id per character in stream mode
    n_val = int(len(ids) * 0.1)
    texts, positions = fill.blank_one_each(Mode.STREAM, ids[len(ids) - n_val :], np.zeros(0, np.int64), 64,
                                           seed=0, spread=2000)
    truth = np.array([t[p] for t, p in zip(texts, positions, strict=True)])
    two: dict[str, Counter] = {}
    one: dict[str, Counter] = {}
    train = text[: len(ids) - n_val]
    for i in range(2, len(train) - 2):
        two.setdefault(train[i - 2 : i] + train[i + 1 : i + 3], Counter())[train[i]] += 1
        one.setdefault(train[i - 1] + train[i + 1], Counter())[train[i]] += 1
    every = Counter(train).most_common(1)[0][0]
    right = 0
    for t, p, want in zip(texts, positions, truth, strict=True):
        s = "".join(vocab.token(int(i)) for i in t)
        key2, key1 = s[max(0, p - 2) : p] + s[p + 1 : p + 3], s[p - 1 : p] + s[p + 1 : p + 2]
        table = two.get(key2) if len(key2) == 4 else None
        guess = (table or one.get(key1) or Counter(every)).most_common(1)[0][0]
        right += guess == vocab.token(int(want))
    result: dict = {"minutes": minutes, "positions": len(texts), "load_average_start": load0,
                    "count_baseline": right / len(texts)}
    for kind, ck in runs.items():
        got, seconds = timed_fill_each(ck, texts, positions)
        result[kind] = {"accuracy": float((got == truth).mean()), "windows_per_s": len(texts) / seconds,
                        "steps": ck.meta.progress.step, "best_val_loss": ck.meta.best_val_loss}
    result["load_average_end"] = os.getloadavg()[0]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="training time of each model")
    ap.add_argument("--workdir", type=Path, help="keep split files and checkpoints here (reused when present)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--task", choices=["names", "shakespeare"], default="names")
    ap.add_argument("--masked", action="store_true", help="also a bidirectional model with --objective masked")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=OPTIONS",
                    help="names: also a bidirectional model trained with these options, side by side with the "
                         "default one, e.g. 'mask 5%%=--mask-rate 0.05' (repeatable)")
    a = ap.parse_args()
    if a.task == "shakespeare":
        with tempfile.TemporaryDirectory() as tmp:
            work = a.workdir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            r = shakespeare(a.minutes, work)
        print(json.dumps(r, indent=2))
        f, b = r["forward"], r["bidirectional"]
        print(f"count baseline {r['count_baseline']:.1%}; forward exact {f['accuracy']:.1%} at "
              f"{f['windows_per_s']:,.0f} windows/s; bidirectional {b['accuracy']:.1%} at {b['windows_per_s']:,.0f} "
              f"windows/s")
        if a.json:
            a.json.write_text(json.dumps(r, indent=2))
        return
    if not (DATA / "names.txt").exists():
        print(f"skipped: {DATA / 'names.txt'} not found")
        return
    words = (DATA / "names.txt").read_text().split()
    order = list(range(len(words)))
    random.Random(3407).shuffle(order)  # the split of benchmarks/quality.py
    test, train = [words[i] for i in order[:1000]], [words[i] for i in order[1000:]]
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "names_train.txt").write_text("\n".join(train) + "\n")
        kinds = {"forward": [], "bidirectional": ["--bidirectional"]}
        if a.masked:
            kinds["bidirectional, masked"] = ["--bidirectional", "--objective", "masked"]
        for v in a.variant:
            label, _, options = v.partition("=")
            kinds[f"bidirectional, {label}"] = ["--bidirectional", *shlex.split(options)]
        ckpts = {k: work / f"names-{re.sub(r'[^A-Za-z0-9]+', '-', k)}.npz" for k in kinds}
        # the forward model alone, then the bidirectional ones side by side: one core and one BLAS thread each
        for group in (["forward"], [k for k in kinds if k != "forward"]):
            train_together(work / "names_train.txt", {ckpts[k]: kinds[k] for k in group}, a.minutes)
        runs = {k: checkpoint.load(ckpts[k]) for k in kinds}
        rng = np.random.default_rng(0)
        positions = [int(rng.integers(len(n))) for n in test]
        truth = np.array([n[p] for n, p in zip(test, positions, strict=True)])
        long = [(n, int(rng.integers(len(n) - SPAN + 1))) for n in test if len(n) >= 5]  # the same spans for all
        tables = count_baseline(train)
        result: dict = {"minutes": a.minutes, "names": len(test), "cpu_count": os.cpu_count()}
        result["count_baseline"] = float(np.mean([baseline_fill(tables, n, p) == t
                                                  for n, p, t in zip(test, positions, truth, strict=True)]))
        result["count_baseline_one_each_side"] = float(np.mean([
            baseline_fill(tables, n, p, wide=False) == t for n, p, t in zip(test, positions, truth, strict=True)]))
        for kind, ck in runs.items():
            texts = [ck.vocab.encode(n)[0].astype(np.int64) for n in test]
            got, seconds = timed_fill_each(ck, texts, positions)
            chars = np.array([ck.vocab.token(int(g)) for g in got])
            result[kind] = {"accuracy": float((chars == truth).mean()), "names_per_s": len(test) / seconds,
                            "steps": ck.meta.progress.step, "best_val_loss": ck.meta.best_val_loss,
                            "objective": ck.cfg.objective.value}
            right = 0
            t0 = time.perf_counter()
            for n, s in long:
                f = fill.fill(ck, n[:s] + "_" * SPAN + n[s + SPAN :])
                right += f.text == n
            result[kind]["span_exact"] = right / len(long)
            result[kind]["span_names"] = len(long)
            result[kind]["span_seconds"] = time.perf_counter() - t0
        result["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    b, f = result["bidirectional"], result["forward"]
    one_side = result["count_baseline_one_each_side"]
    print(f"count baseline {result['count_baseline']:.1%} (one each side {one_side:.1%}); "
          f"forward exact {f['accuracy']:.1%} at {f['names_per_s']:,.0f} names/s; bidirectional {b['accuracy']:.1%} "
          f"at {b['names_per_s']:,.0f} names/s ({b['names_per_s'] / f['names_per_s']:.0f}x); spans of {SPAN}: "
          f"forward {f['span_exact']:.1%}, bidirectional {b['span_exact']:.1%}")
    for kind in kinds:
        if kind.startswith("bidirectional, "):
            m = result[kind]
            print(f"{kind}: {m['accuracy']:.1%}; spans {m['span_exact']:.1%} ({m['steps']:,} steps)")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
