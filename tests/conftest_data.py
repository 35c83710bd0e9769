"""Session fixture for the corpus tests: one real `tiny` build (backbone answers, Piper, espeak-ng, WORLD)."""

from __future__ import annotations

import pytest

from vivavoce.cli import main


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """(corpus dir, answers cache): built through the CLI with a fresh answers cache, so answers are generated."""
    root = tmp_path_factory.mktemp("corpus")
    out, cache = root / "tiny", root / "answers.jsonl"
    rc = main(["--threads", "1", "data", "build", "--preset", "tiny", "--out", str(out), "--answers-cache", str(cache),
               "--workers", "2"])  # fmt: skip
    assert rc == 0
    return out, cache
