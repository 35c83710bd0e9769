"""Split a safetensors checkpoint into parts under a size limit (bf16), or merge the parts back.

A lent GPU machine returns files of at most 16 MiB; the speech LM's trainable weights are ~30 MiB in bf16.
    python scripts/checkpoint_parts.py split RUN/best.safetensors OUTDIR [--max-mib 15]
    python scripts/checkpoint_parts.py merge OUTDIR/best.part*.safetensors -o best.safetensors
Every part carries the checkpoint's metadata, so any one of them still says what it belongs to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def split(src: Path, out: Path, max_mib: float) -> list[Path]:
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    parts: list[dict] = []
    room: list[float] = []
    for k in sorted(state, key=lambda k: -state[k].nbytes):  # first fit, largest first
        n = state[k].nbytes
        if n > max_mib * 2**20:
            raise SystemExit(f"{k}: {n / 2**20:.1f} MiB alone is over --max-mib {max_mib}")
        i = next((i for i, r in enumerate(room) if r >= n), None)
        if i is None:
            parts.append({})
            room.append(max_mib * 2**20)
            i = len(parts) - 1
        parts[i][k] = state[k]
        room[i] -= n
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(parts):
        path = out / f"{src.stem}.part{i + 1}of{len(parts)}.safetensors"
        save_file(part, str(path), metadata=meta)
        paths.append(path)
    return paths


def merge(parts: list[Path], dst: Path) -> None:
    state, meta = {}, None
    for p in parts:
        with safe_open(str(p), framework="pt") as f:
            meta = meta or dict(f.metadata() or {})
            state.update({k: f.get_tensor(k) for k in f.keys()})
    save_file(state, str(dst), metadata=meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("src", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--max-mib", type=float, default=15.8)
    m = sub.add_parser("merge")
    m.add_argument("parts", type=Path, nargs="+")
    m.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args()
    if a.cmd == "split":
        for p in split(a.src, a.out, a.max_mib):
            print(p, f"{p.stat().st_size / 2**20:.1f} MiB")
    else:
        merge(a.parts, a.out)
        print(a.out)


if __name__ == "__main__":
    main()
