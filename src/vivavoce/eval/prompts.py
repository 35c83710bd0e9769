"""Built-in spoken prompts for benchmarks: questions with the keywords a right answer contains."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vivavoce.audio.io import resample
from vivavoce.engine.base import INPUT_RATE


@dataclass(frozen=True)
class Prompt:
    text: str
    keywords: tuple[str, ...] = ()  # any one of them in the answer counts as a hit; () = open question


PROMPTS = (
    Prompt("What is the capital of France?", ("paris",)),
    Prompt("What is the capital of Japan?", ("tokyo",)),
    Prompt("How many days are there in a week?", ("seven", "7")),
    Prompt("What color is the sky on a clear day?", ("blue",)),
    Prompt("What is the largest planet in our solar system?", ("jupiter",)),
    Prompt("Who wrote Romeo and Juliet?", ("shakespeare",)),
    Prompt("What do bees make?", ("honey",)),
    Prompt("What is the opposite of hot?", ("cold",)),
    Prompt("How many legs does a spider have?", ("eight", "8")),
    Prompt("What is frozen water called?", ("ice",)),
    Prompt("Can you tell me a fun fact about dolphins?"),
    Prompt("Good morning, how are you today?"),
)


def speak_prompt(prompt: Prompt | str, voice: str = "piper", steady: bool = False) -> np.ndarray:
    """The prompt spoken by Piper (joe) or espeak-ng, as engine input: mono float32 at 16 kHz. `steady`: Piper
    without its sampling noise, the same audio every time (Piper otherwise varies rhythm and intonation per call,
    and a test's input should not)."""
    from vivavoce.speechtools.tts import PiperSettings, PiperTTS, espeak_synthesize

    text = prompt.text if isinstance(prompt, Prompt) else prompt
    if voice == "piper":
        global _piper
        if _piper is None:
            _piper = PiperTTS()
        settings = PiperSettings().steady() if steady else PiperSettings()
        audio, rate = _piper.synthesize(text, settings)
    elif voice == "espeak":
        audio, rate = espeak_synthesize(text)
    else:
        raise ValueError(f"voice must be 'piper' or 'espeak', not {voice!r}")
    # A little silence either side, as a person's recording would have.
    pad = np.zeros(int(0.3 * rate), dtype=np.float32)
    return resample(np.concatenate([pad, audio, pad]), rate, INPUT_RATE)


_piper = None
