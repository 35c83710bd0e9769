"""The engine interface every dialogue engine (cascade, speech LM) implements, and the events it streams.

An engine answers one user turn as a generator of events. Streaming is the generator; cancelling an answer is
closing it (`gen.close()`), which must free everything the answer held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np

INPUT_RATE = 16000  # every engine takes user speech as mono float32 at this rate


@dataclass
class Turn:
    """One turn of the conversation so far. Audio, where kept, is at INPUT_RATE (user) or the engine's rate."""

    role: str  # "user" | "assistant"
    text: str | None = None
    audio: np.ndarray | None = None


@dataclass
class ResponseOptions:
    """Controls of the spoken answer. Engines apply what they can and ignore the rest."""

    voice: str | None = None  # engine-specific voice name; None = the default voice
    speed: float = 1.0  # >1 speaks faster
    emotion: str | None = None  # e.g. "happy", "sad"; None = neutral
    emotion_intensity: float = 0.0  # 0..1
    max_answer_tokens: int = 60
    instructions: str | None = None  # replaces the engine's default system prompt where it has one
    # speechlm: "true" (speech only) | "guided" (text-guided speech) | "text" (the written answer alone, S→T);
    # None = its default
    mode: str | None = None


@dataclass
class UserTranscript:
    """What the engine understood the user to say (only engines that produce text)."""

    text: str


@dataclass
class TextDelta:
    """A piece of the assistant's answer text, as it is produced."""

    text: str


@dataclass
class AudioChunk:
    """A piece of the spoken answer: mono float32 samples at `rate`."""

    samples: np.ndarray
    rate: int


EngineEvent = UserTranscript | TextDelta | AudioChunk


class Engine(Protocol):
    name: str
    sample_rate: int  # rate of the AudioChunks it yields

    def respond(
        self, audio: np.ndarray, history: list[Turn] | None = None, options: ResponseOptions | None = None
    ) -> Iterator[EngineEvent]:
        """Answer the user's `audio` (mono float32, INPUT_RATE), given the turns before it."""
        ...


@dataclass
class Response:
    """All events of one answer gathered, for non-streaming callers (CLI, HTTP)."""

    user_text: str | None = None
    text: str = ""
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    rate: int = 0
    first_audio_s: float | None = None  # seconds from the call to the first audio chunk


def collect(events: Iterator[EngineEvent]) -> Response:
    import time

    start = time.perf_counter()
    out = Response()
    pieces: list[np.ndarray] = []
    for ev in events:
        if isinstance(ev, UserTranscript):
            out.user_text = ev.text
        elif isinstance(ev, TextDelta):
            out.text += ev.text
        elif isinstance(ev, AudioChunk):
            if out.first_audio_s is None:
                out.first_audio_s = time.perf_counter() - start
            out.rate = ev.rate
            pieces.append(ev.samples)
    if pieces:
        out.audio = np.concatenate(pieces).astype(np.float32)
    return out
