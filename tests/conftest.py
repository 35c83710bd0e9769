"""Shared fixtures: real models, loaded once per test session; speech synthesised on the spot."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def piper():
    from vivavoce.speechtools.tts import PiperTTS

    tts = PiperTTS()
    yield tts
    tts.close()


@pytest.fixture(scope="session")
def whisper():
    from vivavoce.speechtools.asr import WhisperASR

    return WhisperASR()


@pytest.fixture(scope="session")
def backbone():
    from vivavoce.model.backbone import load_backbone

    return load_backbone()


@pytest.fixture(scope="session")
def question_16k(piper) -> np.ndarray:
    """'What is the capital of France?' spoken by Piper (steady: the same audio every run), padded with silence, at
    16 kHz."""
    from vivavoce.eval.prompts import speak_prompt

    return speak_prompt("What is the capital of France?", "piper", steady=True)
