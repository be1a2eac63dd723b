"""Train a charrnn model with PyTorch on several processes (DistributedDataParallel), and save it in the
layout `charrnn export` writes, so `charrnn import` reads it back. Not part of charrnn: it needs torch.

    charrnn export names.npz names.safetensors
    torchrun --nproc-per-node 4 examples/torch_train.py corpora/names.txt --init names.safetensors \
        --steps 2000 --out trained.safetensors
    charrnn import trained.safetensors --out trained.npz && charrnn sample trained.npz

Without --init it starts fresh: the vocabulary is every character of the text, the sizes come from
--cell, --hidden-size and --layers. One process per GPU (nccl), or per CPU core group (gloo).

The text is read as one stream in every data mode: a lines-mode model sees its lines separated by
<EOS> with the state carried across them (charrnn itself starts every line from a zero state).
The recurrent biases bias_hh stay frozen at zero: for the LSTM and RNN bias_ih alone is as good,
and charrnn's GRU has no recurrent bias of n, so a trained one could not be imported.
Forward (left-to-right) models only: a bidirectional export is refused, since its objective and
masking are charrnn's own (`charrnn train --bidirectional`).
"""

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

UNK, EOS = 0, 1  # special ids; the vocabulary's characters follow them


class CharModel(nn.Module):
    """nn.LSTM / nn.GRU / nn.RNN on one-hot characters, then nn.Linear named `out`: charrnn's model."""

    def __init__(self, cell: str, vocab_size: int, hidden_size: int, layers: int, nonlinearity: str = "tanh"):
        super().__init__()
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = kind(vocab_size, hidden_size, layers, **extra)  # time-major: (T, B, ·)
        self.out = nn.Linear(hidden_size, vocab_size)
        self.vocab_size = vocab_size

    def forward(self, x, state=None):  # x (T, B) ids -> logits (T, B, V), final state
        h, state = self.rnn(F.one_hot(x, self.vocab_size).to(self.out.weight.dtype), state)
        return self.out(h), state


def load(path):
    """Metadata (JSON values decoded) and the model of a charrnn-torch file."""
    with safe_open(path, framework="pt") as f:
        meta = {k: v if k.startswith("format") else json.loads(v) for k, v in f.metadata().items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta.get("format") == "charrnn-torch", f"{path}: not a file from `charrnn export`"
    m = meta["model"]
    if m.get("bidirectional"):  # a version-2 file (with a head) is always bidirectional
        sys.exit(f"{path}: a bidirectional model; this example trains forward models only "
                 "(its objective and masking are charrnn's own: train it with `charrnn train --bidirectional`)")
    assert meta["format_version"] == "1", f"{path}: format version {meta['format_version']}, this example reads 1"
    model = CharModel(m["cell"], m["input_size"], m["hidden_size"], m["num_layers"], m["nonlinearity"])
    model.to(getattr(torch, m["dtype"]))
    model.load_state_dict({(k if k.startswith("out.") else "rnn." + k): v for k, v in tensors.items()})
    return meta, model


def fresh(text, args):
    chars = "".join(sorted(set(text)))
    meta = {"format": "charrnn-torch", "format_version": "1",
            "vocab": {"chars": chars, "specials": {"<UNK>": UNK, "<EOS>": EOS}, "first_char_id": 2},
            "model": {"cell": args.cell, "input_size": len(chars) + 2, "hidden_size": args.hidden_size,
                      "num_layers": args.layers, "nonlinearity": "tanh", "dtype": "float32",
                      "output_size": len(chars) + 2, "input": "one-hot", "batch_first": False},
            "data": {"mode": "stream", "objective": "next", "source": "", "seq_len": args.seq_len}}
    return meta, CharModel(args.cell, len(chars) + 2, args.hidden_size, args.layers)


def encode(text, meta):
    ids = {ch: i + meta["vocab"]["first_char_id"] for i, ch in enumerate(meta["vocab"]["chars"])}
    if meta["data"]["mode"] == "lines":
        ids["\n"] = EOS
    return torch.tensor([ids.get(ch, UNK) for ch in text], dtype=torch.long)  # (N,)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("text")
    p.add_argument("--init", help="a file from `charrnn export` to start from (else: fresh)")
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32, help="streams per process")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--out", default="trained.safetensors")
    args = p.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if cuda else "cpu")
    torch.manual_seed(0)  # the same fresh weights in every process (DDP also broadcasts rank 0's)

    text = open(args.text, encoding="utf-8").read()
    meta, model = load(args.init) if args.init else fresh(text, args)
    for name, param in model.rnn.named_parameters():
        if name.startswith("bias_hh"):
            param.data.zero_()
            param.requires_grad_(False)
    model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=args.lr)

    # this process's shard of the text, cut into batch-size parallel streams: (B, n)
    ids = encode(text, meta)
    shard = ids[rank * len(ids) // world : (rank + 1) * len(ids) // world]
    B, T = args.batch_size, args.seq_len
    n = len(shard) // B
    assert n > T, f"{args.text}: too short for {world} processes x {B} streams x {T} steps"
    streams = shard[: B * n].view(B, n).to(device)
    state, pos = None, 0
    for step in range(1, args.steps + 1):
        if pos + T + 1 > n:  # wrapped around: the streams start again, from zero state
            state, pos = None, 0
        chunk = streams[:, pos : pos + T + 1].t()  # (T + 1, B)
        logits, state = ddp(chunk[:-1], state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        pos += T
        if step % 100 == 0 or step == args.steps:
            dist.all_reduce(mean := loss.detach().clone())
            if rank == 0:
                print(f"step {step:>6}  loss {mean.item() / world:.4f} nats/char", flush=True)

    if rank == 0:
        tensors = {k.removeprefix("rnn."): v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, args.out, metadata={k: v if k.startswith("format") else json.dumps(v)
                                               for k, v in meta.items()})
        print(f"saved {args.out} ({world} processes x {B} streams x {T} steps per step)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
