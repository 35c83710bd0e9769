"""The web page's push-to-talk in headless Chromium (fake microphone), against a fast fake engine (tests only).
Hands-free with the real cascade is in test_serve_e2e.py."""

from __future__ import annotations

import time

import numpy as np
from conftest_serve import FakeEngine, answer_speech, chromium, running_server, silence, speech, wait_page  # noqa: F401

from vivavoce.serve.app import ServerConfig


def test_push_to_talk_sends_only_while_held_and_plays_the_answer(answer_speech, tmp_path):
    import soundfile as sf
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    wav = tmp_path / "mic.wav"
    sf.write(wav, np.concatenate([silence(0.5, 16000), speech("What is the capital of France?", 16000),
                                  silence(30, 16000)]), 16000, subtype="PCM_16")  # fmt: skip
    engine = FakeEngine(*answer_speech, text="Paris, of course.")
    with running_server(ServerConfig(), engine) as (url, app), chromium(wav) as driver:
        driver.get(f"http://{url}/")
        Select(driver.find_element("id", "mode")).select_by_value("push-to-talk")
        driver.find_element("id", "start").click()
        wait_page(driver, lambda s: s["connected"], timeout=20)
        time.sleep(4)  # the question plays into the microphone while the button is up: nothing may be sent
        session = next(iter(app.state.connections.values())).session
        assert not session.config.server_vad and session._buffer_samples == 0 and not engine.opened
        talk = driver.find_element("id", "talk")
        ActionChains(driver).click_and_hold(talk).perform()
        time.sleep(2.0)
        ActionChains(driver).release(talk).perform()
        state = wait_page(driver, lambda s: s["assistant"] and s["played"] > 24000, timeout=30)
    assert engine.opened == 1
    assert 1.5 * 16000 < engine.heard[0] < 3.0 * 16000  # about the 2 s the button was held
    assert "Paris, of course." in " ".join(state["assistant"])
    assert state["played"] > 24000 and state["latencies"], state
