"""The shared training loop: checkpoints (safetensors) that resume after a kill, CSV log, progress bar, loss plot.

A recipe gives the model to train and `step_losses(rng) -> {name: loss}`; the loop owns optimisation and files.
In `out_dir`: model.safetensors (trainable weights + config), optim.safetensors (optimizer state, flattened),
state.json (step, elapsed time, config), log.csv, eval.csv (held-out losses every `eval_every` steps), loss.png.
Each file is replaced atomically, state.json last,
so a kill at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vivavoce.codec.checkpoint import load_model, save_model
from vivavoce.errors import VivavoceError


@dataclass
class LoopConfig:
    manifest: str = "cache/codec-data/train.jsonl"
    cache_dir: str = "cache/codec-data"
    out_dir: str = "runs/codec"
    steps: int = 2000
    max_minutes: float = 0.0  # stop (after a checkpoint) once this much wall time is spent in all; 0 = no limit
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    eval_every: int = 0  # held-out losses (recipe.eval_losses) every this many steps and at the end; 0 = never
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False  # autocast matmuls to bfloat16 (CPU or CUDA)
    threads: int = 1
    init_from: str = ""  # warm start: a new run takes the tensors of this checkpoint whose names and shapes match
    keep_best: str = ""  # a held-out loss (e.g. "speech", or a sum "speech+text"): the weights at its lowest
    # evaluation go to best.safetensors
    cosine_by_time: bool = False  # the lr decays over max_minutes of wall time too (whichever ends first): a run on
    # hardware of unknown speed still ends its schedule inside its time
    stop_by: float = 0.0  # a Unix time by which the run must have stopped: when training begins (after the recipe's
    # set-up, whose length is not known in advance) max_minutes shrinks to the time left, so a call on a lent machine
    # ends with its weights saved


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], str]:
    """torch optimizer state_dict -> (flat tensors, JSON of the rest): safetensors holds tensors only."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, json.dumps({"param_groups": state["param_groups"], "scalars": scalars})


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: str) -> dict:
    meta = json.loads(rest)
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def plot_losses(csv_path: Path, png_path: Path, eval_path: Path | None = None) -> None:
    """Training losses (solid) and, when given, held-out losses (dashed, markers) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_csv(csv_path)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for series, style in ((rows, {}), (_read_csv(eval_path) if eval_path else [], {"ls": "--", "marker": "o"})):
        if not series:
            continue
        steps = [int(r["step"]) for r in series]
        for name in [k for k in series[0] if k not in ("step", "seconds", "lr")]:
            values = [float(r[name]) if r.get(name) not in (None, "") else float("nan") for r in series]
            if all(v > 0 or v != v for v in values):  # log axis: positive series only
                ax.plot(steps, values, label=name if not style else f"dev {name}", **style)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


class Recipe:
    """What a recipe provides to `train`."""

    kind: str  # "tokenizer" | "decoder" | "vocoder": the checkpoint's kind
    model: torch.nn.Module  # the trainable part, saved as model.safetensors
    model_cls: type
    config_cls: type

    def step_losses(self, rng: random.Random) -> dict[str, torch.Tensor]:  # "loss" is optimised
        raise NotImplementedError

    def eval_losses(self) -> dict[str, float]:  # held-out losses, no gradients; {} when the recipe has none
        return {}

    def to(self, device: str) -> None:
        self.model.to(device)

    def parameters(self) -> list[torch.nn.Parameter]:  # what the optimizer updates
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path: Path, step: int) -> None:
        save_model(path, self.model.cpu(), self.kind, step=step)

    def load(self, path: Path) -> None:
        self.model.load_state_dict(load_model(path, self.model_cls, self.config_cls, self.kind).state_dict())

    def adapt_warm_start(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A warm start's tensors, reshaped where the recipe knows how to carry them over to this model's shape."""
        return tensors


def warm_start(recipe: Recipe, path: Path) -> None:
    """Copy into the recipe's model every tensor of checkpoint `path` (same kind) whose name and shape match, so a
    bigger or re-headed model can start from a smaller trained one; what was taken is printed."""
    from vivavoce.codec.checkpoint import read_metadata

    if not path.is_file():
        raise VivavoceError(f"init_from: {path}: no such checkpoint")
    if read_metadata(path).get("kind") != recipe.kind:
        raise VivavoceError(f"init_from: {path} is not a {recipe.kind} checkpoint")
    own = recipe.model.state_dict()
    tensors = recipe.adapt_warm_start(load_file(str(path)))
    taken = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not taken:
        raise VivavoceError(f"init_from: {path} shares no tensor with this {recipe.kind}")
    recipe.model.load_state_dict(taken, strict=False)
    print(f"{recipe.kind}: {len(taken)} of {len(own)} tensors from {path}", flush=True)


def cosine_lr(cfg: LoopConfig, step: int, elapsed: float) -> float:
    """Linear warm-up, then a cosine to 0 over the steps (or over max_minutes, if cosine_by_time ends it sooner)."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    done = step / max(1, cfg.steps)
    if cfg.cosine_by_time and cfg.max_minutes > 0:
        done = max(done, elapsed / (cfg.max_minutes * 60))
    return cfg.lr * warm * 0.5 * (1 + np.cos(np.pi * min(1.0, done)))


def train(recipe: Recipe, cfg: LoopConfig, full_config: dict) -> Path:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise VivavoceError("--device cuda: no CUDA GPU is available here")
    model = recipe.model
    params = recipe.parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.8, 0.99))
    step, elapsed = 0, 0.0
    state_path = out / "state.json"
    if state_path.is_file():  # resume
        state = json.loads(state_path.read_text())
        if state.get("kind") != recipe.kind:
            raise VivavoceError(f"{out}: holds a {state.get('kind')} run, not a {recipe.kind} run")
        recipe.load(out / "model.safetensors")
        from safetensors import safe_open

        with safe_open(str(out / "optim.safetensors"), "pt") as f:
            rest = f.metadata()["rest"]
        opt.load_state_dict(unflatten_optimizer(load_file(str(out / "optim.safetensors")), rest))
        step, elapsed = state["step"], state["elapsed"]
        print(f"resuming {recipe.kind} from step {step}", flush=True)
    elif cfg.init_from:
        warm_start(recipe, Path(cfg.init_from))
    recipe.to(cfg.device)
    for group in opt.state.values():
        for k, v in group.items():
            if torch.is_tensor(v) and k != "step":
                group[k] = v.to(cfg.device)
    if cfg.stop_by > 0:
        left = cfg.stop_by - time.time()
        if left <= 0:
            raise VivavoceError(f"stop_by: the deadline passed {-left:.0f} s before training could begin")
        minutes = (elapsed + left) / 60
        if cfg.max_minutes <= 0 or minutes < cfg.max_minutes:
            cfg = dataclasses.replace(cfg, max_minutes=minutes)
            print(f"stop_by: {left / 60:.1f} min of training left, max_minutes {minutes:.2f}", flush=True)
    rng = random.Random(cfg.seed * 1_000_003 + step)
    torch.manual_seed(cfg.seed * 1_000_003 + step)
    np.random.seed((cfg.seed * 1_000_003 + step) % 2**32)

    def lr_at(s: int) -> float:
        return cosine_lr(cfg, s, elapsed)

    def checkpoint() -> None:
        recipe.save(out / "model.safetensors", step)
        model.to(cfg.device)
        tensors, rest = flatten_optimizer(opt.state_dict())
        tmp = out / "optim.tmp"
        save_file(tensors, str(tmp), metadata={"rest": rest})
        os.replace(tmp, out / "optim.safetensors")
        _atomic_json(state_path, {"kind": recipe.kind, "step": step, "elapsed": elapsed, "config": full_config})
        if (out / "log.csv").is_file():
            plot_losses(out / "log.csv", out / "loss.png", out / "eval.csv")

    def evaluate() -> None:
        model.eval()
        with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.bf16):
            losses = recipe.eval_losses()
        if not losses:
            return
        path = out / "eval.csv"
        new = not path.is_file() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", *losses])
            if new:
                w.writeheader()
            w.writerow({"step": step, **{k: f"{float(v):.5g}" for k, v in losses.items()}})
        print(f"step {step} dev: " + " ".join(f"{k}={float(v):.4g}" for k, v in losses.items()), flush=True)
        if cfg.keep_best:
            names = cfg.keep_best.split("+")
            if any(n not in losses for n in names):
                raise VivavoceError(f"keep_best: {cfg.keep_best!r} is not a held-out loss ({', '.join(losses)})")
            value = sum(float(losses[n]) for n in names)
            if value < best.get("value", float("inf")):
                best.update(value=value, step=step)
                recipe.save(out / "best.safetensors", step)
                model.to(cfg.device)
                _atomic_json(out / "best.json", {"loss": cfg.keep_best, **best})

    best = json.loads((out / "best.json").read_text()) if (out / "best.json").is_file() else {}  # kept over resumes
    log_path = out / "log.csv"
    log_file = log_path.open("a", newline="")
    writer = None
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    start = time.time() - elapsed
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {recipe.kind}", dynamic_ncols=True, mininterval=2)
    device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    try:
        while step < cfg.steps:
            model.train()
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.bf16):
                losses = recipe.step_losses(rng)
            opt.zero_grad(set_to_none=True)
            losses["loss"].float().backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            for k, v in losses.items():  # a NaN metric was not measured this step: each averages over its own
                v = float(v.detach() if torch.is_tensor(v) else v)
                sums.setdefault(k, 0.0)
                counts.setdefault(k, 0)
                if not math.isnan(v):
                    sums[k], counts[k] = sums[k] + v, counts[k] + 1
            bar.update(1)
            elapsed = time.time() - start
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "seconds": round(elapsed, 1), "lr": f"{lr_at(step):.3g}"}
                row.update({k: f"{v / counts[k]:.5g}" if counts[k] else "" for k, v in sums.items()})
                if writer is None:
                    writer = csv.DictWriter(log_file, fieldnames=list(row))
                    if log_path.stat().st_size == 0:
                        writer.writeheader()
                writer.writerow(row)
                log_file.flush()
                bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.4g}")
                sums, counts = {}, {}
            out_of_time = cfg.max_minutes > 0 and elapsed > cfg.max_minutes * 60
            if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.steps or out_of_time):
                evaluate()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                checkpoint()
            if out_of_time:
                print(f"stopping at step {step}: max_minutes {cfg.max_minutes} reached", flush=True)
                break
    finally:
        bar.close()
        log_file.close()
    return out / "model.safetensors"


def loop_config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(LoopConfig)}
