"""Engines by name, built once per process (models are large; sessions share them)."""

from __future__ import annotations

import threading

from vivavoce.errors import VivavoceError

_engines: dict[str, object] = {}
_lock = threading.Lock()


def available() -> list[str]:
    return ["cascade", "speechlm"]


def load_engine(name: str = "cascade"):
    with _lock:
        if name not in _engines:
            if name == "cascade":
                from vivavoce.engine.cascade import CascadeEngine

                _engines[name] = CascadeEngine()
            elif name == "speechlm":
                from vivavoce.engine.speechlm import SpeechLMEngine

                _engines[name] = SpeechLMEngine()
            else:
                raise VivavoceError(f"unknown engine {name!r}; choose from {', '.join(available())}")
        return _engines[name]
