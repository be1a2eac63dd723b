"""Learning quality against published anchors, through the CLI exactly as a user runs it.

    python benchmarks/quality.py                      # both tasks, full time budgets (~21 min)
    python benchmarks/quality.py --task names         # names only (5 min)
    python benchmarks/quality.py --minutes-scale 0.02 # a seconds-long smoke
    python benchmarks/quality.py --extra "--hidden-size 512"   # try other settings

names: makemore's split of names.txt (1,000 random names held out as the test set, seed
fixed here), train on the rest with default settings and `--time 4.75`, then `charrnn eval`
on the 1,000 test names (nats/char with <EOS> included, as makemore reports).
shakespeare: train on tinyshakespeare.txt with `--val-fraction 0.1` (the last 10 % held out,
as nanoGPT does) and `--time 14.75`; report the best validation loss and `charrnn eval` on that tail.

Data comes from ../shared/data/ (names.txt, tinyshakespeare.txt); the tasks are skipped
with a message when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ANCHORS = {
    "names": "makemore transformer ~1.92 (README); 1.966 after ~4 min and GRU 2.041 after 1.5 min on this machine kind",
    "shakespeare": "nanoGPT CPU recipe 1.88; char-rnn README 1.395 (30 epochs, GPU)",
}
TARGETS = {"names": 1.95, "shakespeare": 1.50}
MINUTES = {"names": 5.0, "shakespeare": 15.0}
SLACK = 0.25  # minutes kept for start-up and the final evaluation, so the whole run fits the budget


def train_minutes(budget: float) -> float:
    """The --time to ask for so the whole run fits `budget` minutes (5 % slack for short smokes)."""
    return budget - min(SLACK, 0.05 * budget)
NOVELTY_SAMPLES = 1000  # names sampled to measure the novel fraction (+-1.5 % standard error at 80 %)


def charrnn(*args: str, capture: bool = True) -> str:
    r = subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=capture, text=True)
    if r.returncode != 0:
        raise SystemExit(f"charrnn {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout or ""


def names_task(work: Path, minutes: float, extra: list[str]) -> dict:
    words = (DATA / "names.txt").read_text().split()
    order = list(range(len(words)))
    random.Random(3407).shuffle(order)  # makemore-style: 1,000 random names held out
    test = [words[i] for i in order[:1000]]
    train = [words[i] for i in order[1000:]]
    (work / "names_train.txt").write_text("\n".join(train) + "\n")
    (work / "names_test.txt").write_text("\n".join(test) + "\n")
    ckpt = work / "names.npz"
    t = time.perf_counter()
    charrnn("train", str(work / "names_train.txt"), "--out", str(ckpt), "--time", str(train_minutes(minutes)),
            "--quiet", *extra)
    wall = time.perf_counter() - t
    ev = json.loads(charrnn("eval", str(ckpt), str(work / "names_test.txt"), "--json"))
    info = json.loads(charrnn("inspect", str(ckpt), "--json"))
    r = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(ckpt), "-n", str(NOVELTY_SAMPLES),
                        "--seed", "1", "--allow-seen"],
                       capture_output=True, text=True, check=True)
    samples = r.stdout.split()
    seen = set(train)
    novel = [s for s in samples if s not in seen]
    shown = charrnn("sample", str(ckpt), "-n", "200", "--seed", "2").split()  # the default: new lines first
    shown_novel = sum(s not in seen for s in shown) / max(len(shown), 1)
    return {"task": "names", "test_loss": ev["loss"], "bits_per_char": ev["bits_per_char"], "wall_s": wall,
            "steps": info["training"]["steps"], "settings": info["config"],
            "best_val_loss": info["training"]["best_val_loss"],
            "novel_fraction": len(novel) / max(len(samples), 1), "default_sample_novel_fraction": shown_novel,
            "samples": samples[:20]}


def shakespeare_task(work: Path, minutes: float, extra: list[str]) -> dict:
    text = (DATA / "tinyshakespeare.txt").read_text()
    tail = text[len(text) - int(len(text) * 0.1) :]
    (work / "shakespeare_tail.txt").write_text(tail)
    ckpt = work / "shakespeare.npz"
    t = time.perf_counter()
    charrnn("train", str(DATA / "tinyshakespeare.txt"), "--out", str(ckpt), "--val-fraction", "0.1",
            "--time", str(train_minutes(minutes)), "--quiet", *extra)
    wall = time.perf_counter() - t
    info = json.loads(charrnn("inspect", str(ckpt), "--json"))
    ev = json.loads(charrnn("eval", str(ckpt), str(work / "shakespeare_tail.txt"), "--json"))
    sample = charrnn("sample", str(ckpt), "-n", "1", "--length", "600", "--seed", "1", "--prime", "ROMEO:")
    return {"task": "shakespeare", "val_loss": info["training"]["best_val_loss"], "tail_eval_loss": ev["loss"],
            "bits_per_char": ev["bits_per_char"], "wall_s": wall, "steps": info["training"]["steps"],
            "settings": info["config"], "samples": [sample]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["names", "shakespeare", "both"], default="both")
    ap.add_argument("--minutes-scale", type=float, default=1.0, help="scale the time budgets (0.02 for a smoke)")
    ap.add_argument("--extra", default="", help="extra options for `charrnn train`")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--workdir", type=Path,
                    help="keep the split files and checkpoints here [default: a temporary directory]")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the shared benchmark data sets)")
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) if args.workdir is None else args.workdir
        work.mkdir(parents=True, exist_ok=True)
        for task, fn in (("names", names_task), ("shakespeare", shakespeare_task)):
            if args.task not in (task, "both"):
                continue
            r = fn(work, MINUTES[task] * args.minutes_scale, args.extra.split())
            loss = r.get("test_loss", r.get("val_loss"))
            r.update(target=TARGETS[task], anchor=ANCHORS[task], minutes=MINUTES[task] * args.minutes_scale,
                     met=loss <= TARGETS[task])
            results.append(r)
            print(f"{task:12s} loss {loss:.4f} nats/char ({r['bits_per_char']:.3f} bits/char via eval)  "
                  f"target <= {TARGETS[task]}  {'MET' if r['met'] else 'not met'}  "
                  f"wall {r['wall_s']:.0f} s, {r['steps']} steps")
            print("   anchors:", ANCHORS[task])
            m = r["settings"]["model"]
            print(f"   model: {m['cell']} {m['layers']}x{m['hidden_size']} dropout {m['dropout']}; "
                  f"extra: {args.extra!r}")
            for s in r["samples"][:12]:
                print("   " + s.replace("\n", "\n   "))
            if "novel_fraction" in r:
                print(f"   novel (not in training set): {r['novel_fraction']:.1%} of {NOVELTY_SAMPLES} samples "
                      f"(--allow-seen); {r['default_sample_novel_fraction']:.1%} of 200 shown by default "
                      "`charrnn sample`")
            sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
