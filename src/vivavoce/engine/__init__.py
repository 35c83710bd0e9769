"""Dialogue engines: audio in, a stream of text and audio events out."""

from vivavoce.engine.base import (
    INPUT_RATE,
    AudioChunk,
    Engine,
    Response,
    ResponseOptions,
    TextDelta,
    Turn,
    UserTranscript,
    collect,
)

__all__ = [
    "INPUT_RATE",
    "AudioChunk",
    "Engine",
    "Response",
    "ResponseOptions",
    "TextDelta",
    "Turn",
    "UserTranscript",
    "collect",
]
