"""Run a dialogue engine over spoken prompts and score its answers (agreement with its own text, quality, speed)."""

from __future__ import annotations

import time
from pathlib import Path

from vivavoce.engine.base import Response, ResponseOptions, collect
from vivavoce.eval.prompts import PROMPTS, Prompt, speak_prompt
from vivavoce.eval.report import Evaluator, ItemResult, plot


def timed_response(engine, audio, options: ResponseOptions | None = None) -> tuple[Response, float]:
    start = time.perf_counter()
    response = collect(engine.respond(audio, [], options or ResponseOptions()))
    return response, time.perf_counter() - start


def evaluate_engine(
    engine,
    evaluator: Evaluator,
    prompts: tuple[Prompt, ...] = PROMPTS,
    voice: str = "piper",
    plots_dir: str | Path | None = None,
) -> list[ItemResult]:
    """Each prompt spoken by `voice`, answered by `engine`; the answer's transcript is compared with the text
    the engine meant to say (where it produces text) and checked for the prompt's keywords."""
    items = []
    for n, prompt in enumerate(prompts):
        response, compute_s = timed_response(engine, speak_prompt(prompt, voice))
        name = f"{n:02d} {prompt.text}"
        item = evaluator.score(
            name, response.audio, response.rate, reference=response.text or None, keywords=prompt.keywords,
            first_audio_s=response.first_audio_s, compute_s=compute_s,
        )  # fmt: skip
        if plots_dir is not None:
            plot(response.audio, response.rate, Path(plots_dir) / f"answer-{n:02d}.png", title=prompt.text)
        items.append(item)
    return items
