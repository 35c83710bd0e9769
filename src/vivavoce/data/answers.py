"""The assistant's answers, written by the frozen backbone and cached on disk so that a rebuild never regenerates.

The cache is JSONL, one line per (backbone, system prompt, generation settings, user text), keyed by a hash of
all of them; a line cut off by a kill is ignored and written again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from vivavoce.model.textgen import SPOKEN_STYLE_PROMPT, TextGenConfig


def answer_key(text: str, source: str, config: TextGenConfig, system: str = SPOKEN_STYLE_PROMPT) -> str:
    spec = json.dumps([source, system, config.max_new_tokens, config.repetition_penalty, text])
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


class AnswerCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a half-written last line from a killed run

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, prompt: str, raw: str) -> None:
        entry = {"key": key, "prompt": prompt, "raw": raw}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            if f.tell() > 0 and not self._ends_with_newline():
                f.write("\n")
            f.write(json.dumps(entry) + "\n")
        self.entries[key] = entry

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


def write_answers(
    prompts: Iterable[str],
    cache: AnswerCache,
    config: TextGenConfig,
    source: str = "smollm2",
    progress: Callable[[Iterable], Iterable] = lambda x: x,
    batch_size: int = 1,
    device: str = "cpu",
) -> dict[str, str]:
    """{prompt: raw answer}; the backbone is loaded only if some prompt is not cached yet. `batch_size` > 1
    writes the missing answers in batches (`textgen.answer_batch`, the same answers), for a GPU `device`."""
    prompts = list(prompts)
    missing = [p for p in prompts if cache.get(answer_key(p, source, config)) is None]
    if missing:
        from vivavoce.model.backbone import BackboneConfig, load_backbone
        from vivavoce.model.textgen import answer, answer_batch

        backbone = load_backbone(BackboneConfig(source=source))
        backbone.model.to(device)
        size = max(1, batch_size)
        batches = [missing[b : b + size] for b in range(0, len(missing), size)]
        for batch in progress(batches):
            if size > 1:
                raw = answer_batch(backbone, batch, config, size)
            else:
                raw = [answer(backbone, batch[0], config)]
            for p, a in zip(batch, raw):
                cache.put(answer_key(p, source, config), p, a)
        del backbone
    return {p: cache.get(answer_key(p, source, config))["raw"] for p in prompts}
