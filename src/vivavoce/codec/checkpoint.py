"""Model weights as safetensors, with the model's config (JSON) in the file's metadata: one self-contained file."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from vivavoce.config import from_dict
from vivavoce.errors import VivavoceError


def save_model(path: str | Path, model: torch.nn.Module, kind: str, **meta) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"kind": kind, "config": json.dumps(dataclasses.asdict(model.cfg))}
    metadata.update({k: str(v) for k, v in meta.items()})
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise VivavoceError(f"{path}: not a readable safetensors checkpoint ({e})") from None


def load_model(path: str | Path, model_cls, config_cls, kind: str):
    """Build `model_cls(config)` from the config stored in `path` and load its weights (strict)."""
    path = Path(path)
    if not path.is_file():
        raise VivavoceError(f"{path}: no such checkpoint")
    meta = read_metadata(path)
    if meta.get("kind") != kind:
        raise VivavoceError(f"{path}: holds a {meta.get('kind', 'unknown')!r} model, not a {kind!r}")
    model = model_cls(from_dict(config_cls, json.loads(meta["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.eval()
