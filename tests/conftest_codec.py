"""Session fixtures for the codec tests: real espeak-ng speech and the shipped lite-16k codec."""

from __future__ import annotations

import numpy as np
import pytest

from vivavoce.audio.io import resample, write_audio
from vivavoce.speechtools.tts import EspeakSettings, espeak_synthesize


def espeak16k(text: str, voice: str = "en-us") -> np.ndarray:
    audio, rate = espeak_synthesize(text, EspeakSettings(voice))
    return resample(audio, rate, 16000)


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    return espeak16k("The weather today is cold, but tomorrow should be a little warmer.")


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory, speech):
    return write_audio(tmp_path_factory.mktemp("codec") / "speech.wav", speech, 16000)


@pytest.fixture(scope="session")
def codec():
    from vivavoce.codec import Codec

    return Codec.load()


@pytest.fixture(scope="session")
def dvector(speech):
    from vivavoce.audio.speaker import speaker_embedding

    return speaker_embedding(speech)
