"""End to end with the real cascade engine (Whisper -> SmolLM2 -> Piper): a spoken question over the Realtime
protocol, and the web page in a real headless Chromium with a fake microphone playing the question."""

from __future__ import annotations

import asyncio
import numpy as np
import pytest
from conftest_serve import RATE, Client, chromium, running_server, silence, wait_page

from vivavoce.audio.io import resample
from vivavoce.engine.base import INPUT_RATE
from vivavoce.engine.session import SessionConfig
from vivavoce.engine.turns import TurnConfig
from vivavoce.serve.app import ServerConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cascade():
    from vivavoce.engine.registry import load_engine

    return load_engine("cascade")


def test_realtime_question_gets_a_spoken_answer_about_paris(cascade, question_16k):
    question = np.concatenate([resample(question_16k, INPUT_RATE, RATE), silence(1.0)])

    async def go(url):
        c = await Client.connect(url)
        await c.wait_for("session.created")
        await c.send_audio(question)
        done = await c.wait_for("response.done", timeout=180)
        await c.close()
        return c, done

    with running_server(ServerConfig(), cascade) as (url, app):
        c, done = asyncio.run(go(url))
    assert done["response"]["status"] == "completed", done
    heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert "capital" in heard.lower() and "france" in heard.lower()
    answer = c.audio_of(done["response"]["id"])
    assert answer.size > RATE  # more than a second of speech
    spoken = cascade.asr.transcribe(resample(answer, RATE, INPUT_RATE))
    assert "paris" in spoken.lower(), spoken
    assert "paris" in done["response"]["output"][0]["content"][0]["transcript"].lower()
    assert done["response"]["vivavoce"]["first_audio_ms"] > 0


def test_browser_page_plays_an_answer_about_paris(cascade, question_16k, tmp_path):
    import soundfile as sf

    # The fake microphone loops this file: the question, then a long silence for the answer to play in. Once, on a
    # busy CI machine, the page answered "The capital of the United States is New York City.": most likely Chromium
    # filled late microphone audio with silence and the turn ended at "capital of". The long lead silence (the page
    # settles before the question) and end-of-turn silence guard this test of the page against that.
    wav = tmp_path / "question.wav"
    sf.write(wav, np.concatenate([np.zeros(2 * INPUT_RATE, np.float32), question_16k,
                                  np.zeros(25 * INPUT_RATE, np.float32)]), INPUT_RATE, subtype="PCM_16")  # fmt: skip
    server = ServerConfig(session=SessionConfig(turns=TurnConfig(silence_ms=1000)))
    with running_server(server, cascade) as (url, app), chromium(wav) as driver:
        driver.get(f"http://{url}/")
        driver.find_element("id", "start").click()
        state = wait_page(driver, lambda s: s["assistant"] and s["played"] > RATE, timeout=150)
    assert state.get("assistant"), state
    assert state["played"] > RATE, state  # the page played over a second of the answer
    heard = f"the page heard {state.get('user')} and answered {state.get('assistant')}"
    assert "paris" in " ".join(state["assistant"]).lower(), heard
    assert "paris" in state["page"].lower()
    assert state["latencies"] and state["latencies"][0] > 0
