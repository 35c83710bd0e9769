"""Loopback load test of `vivavoce serve`: N simulated speakers talk to the Realtime WebSocket at once.

Each speaker streams a spoken question (Piper) in real time, 100 ms a message, then silence, and waits for the
answer. Measured per answer, on the client's clock:
- end of speech -> first answer audio (what a user feels), split into: VAD wait (end of speech ->
  speech_stopped), ASR (-> user transcript), LLM (-> first answer text), TTS (-> first audio);
- RTF: compute time of the answer (commit -> response.done) / seconds of answer audio;
- late frames: 100 ms answer pieces that arrive after a client playing from the first piece would need them
  (audible gaps), and dropped frames: answer audio the server cancelled or never sent (errors, cancels);
- server memory: peak RSS of the server process and its children (Piper), sampled every 0.2 s.

    .venv/bin/python benchmarks/realtime_load.py --speakers 1 4 8 --turns 2 [--json reports/bench-realtime.json]

`--engine instant` serves a zero-compute engine (it answers every turn at once with the same recorded
sentence): what is left is the server's own cost (VAD, resampling, protocol) and the end-of-turn silence.

The server is started here on 127.0.0.1 (a free port) and stopped at the end; every run is bounded by
--max-seconds. Run it alone: another CPU job on the machine skews every number.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

RATE = 24000
CHUNK_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    return None if not values else float(np.percentile(values, q))


class RSSWatch(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(pid), 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs) / 2**20)
            except Exception:
                pass
            time.sleep(0.2)


async def speaker(url: str, questions: list[tuple[np.ndarray, float]], turns: int, results: list, idx: int):
    import websockets

    async with websockets.connect(f"ws://{url}/v1/realtime", max_size=None) as ws:
        events: list[tuple[float, dict]] = []

        async def read():
            async for msg in ws:
                events.append((time.monotonic(), json.loads(msg)))

        reader = asyncio.create_task(read())
        for turn in range(turns):
            audio, speech_end_s = questions[(idx + turn) % len(questions)]
            mark = len(events)
            start = time.monotonic()
            step = int(CHUNK_S * RATE)
            t_speech_end = None
            done = None
            for n, i in enumerate(range(0, audio.size, step)):
                pcm = (np.clip(audio[i : i + step], -1, 1) * 32767).astype("<i2").tobytes()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
                if t_speech_end is None and (i + step) / RATE >= speech_end_s:
                    # the chunk holding the last speech sample just went out: speech ended this far into it
                    t_speech_end = time.monotonic() - ((i + step) / RATE - speech_end_s)
                await asyncio.sleep(max(0.0, start + (n + 1) * CHUNK_S - time.monotonic()))
            # keep sending silence (a live microphone) until the answer is done
            silence = base64.b64encode(bytes(2 * step)).decode()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = next((e for t, e in events[mark:] if e["type"] == "response.done"), None)
                if done:
                    break
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
                await asyncio.sleep(CHUNK_S)
            results.append(summarize_turn(events[mark:], t_speech_end, done))
        reader.cancel()


def summarize_turn(events, t_speech_end, done) -> dict:
    def first(kind):
        return next((t for t, e in events if e["type"] == kind), None)

    deltas = [(t, len(base64.b64decode(e["delta"])) // 2) for t, e in events if e["type"] == "response.audio.delta"]
    out = {"completed": bool(done and done["response"]["status"] == "completed")}
    if not deltas or t_speech_end is None:
        return out
    t_first = deltas[0][0]
    audio_s = sum(n for _, n in deltas) / RATE
    # a client playing from the first piece: piece k is needed at t_first + (samples before it) / RATE
    late, need = 0, t_first
    for t, n in deltas:
        if t > need + 0.02:
            late += 1
            need = t
        need += n / RATE
    t_commit, t_done = first("input_audio_buffer.committed"), first("response.done")
    ms = lambda a, b: None if a is None or b is None else 1000 * (b - a)  # noqa: E731
    out.update({
        "first_audio_ms": ms(t_speech_end, t_first),
        "vad_ms": ms(t_speech_end, first("input_audio_buffer.speech_stopped")),
        "asr_ms": ms(t_commit, first("conversation.item.input_audio_transcription.completed")),
        "llm_first_text_ms": ms(first("conversation.item.input_audio_transcription.completed"),
                                first("response.audio_transcript.delta")),
        "tts_first_audio_ms": ms(first("response.audio_transcript.delta"), t_first),
        "audio_s": audio_s,
        "rtf": (t_done - t_commit) / audio_s if t_done and t_commit and audio_s else None,
        "late_frames": late,
        "frames": len(deltas),
        "errors": [e["error"]["code"] for _, e in events if e["type"] == "error"],
        "answer": done["response"]["output"][0]["content"][0]["transcript"] if done else None,
    })  # fmt: skip
    return out


def load_questions(n: int) -> list[tuple[np.ndarray, float]]:
    from vivavoce.audio.io import resample
    from vivavoce.eval.prompts import PROMPTS, speak_prompt

    out = []
    for p in PROMPTS[:n]:
        q16 = speak_prompt(p, "piper")  # 0.3 s of silence either side of the speech
        speech_end = q16.size / 16000 - 0.3
        out.append((resample(q16, 16000, RATE), speech_end))
    return out


class InstantEngine:
    """Zero compute: the same espeak sentence for every turn, at once (measures the serving layer alone)."""

    name = "instant"

    def __init__(self):
        from vivavoce.speechtools.tts import espeak_synthesize

        self.audio, self.sample_rate = espeak_synthesize("The capital of France is Paris.")

    def respond(self, audio, history=None, options=None):
        from vivavoce.engine.base import AudioChunk, TextDelta, UserTranscript

        yield UserTranscript("(not transcribed)")
        yield TextDelta("The capital of France is Paris.")
        yield AudioChunk(self.audio, self.sample_rate)


def serve_instant(port: int, silence_ms: int, max_sessions: int) -> None:
    from dataclasses import replace

    from vivavoce.engine.session import SessionConfig
    from vivavoce.engine.turns import TurnConfig
    from vivavoce.serve.app import ServerConfig, serve

    session = SessionConfig(turns=replace(TurnConfig(), silence_ms=silence_ms))
    serve(ServerConfig(port=port, max_sessions=max_sessions, session=session), InstantEngine())


def main() -> None:
    if sys.argv[1:2] == ["--serve-instant"]:
        import torch

        torch.set_num_threads(1)
        return serve_instant(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speakers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--turns", type=int, default=2, help="questions each speaker asks")
    ap.add_argument("--engine", default="cascade")
    ap.add_argument("--engine-concurrency", type=int, default=1)
    ap.add_argument("--silence-ms", type=int, default=500)
    ap.add_argument("--speculative-ms", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=600, help="the whole benchmark stops after this")
    ap.add_argument("--json", default="reports/bench-realtime.json")
    args = ap.parse_args()

    questions = load_questions(4)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    cmd = [sys.executable, "-m", "vivavoce.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--engine", args.engine, "--max-sessions", str(max(args.speakers)), "--silence-ms", str(args.silence_ms),
           "--engine-concurrency", str(args.engine_concurrency), "--speculative-ms", str(args.speculative_ms)]  # fmt: skip
    if args.engine == "instant":
        cmd = [sys.executable, __file__, "--serve-instant", str(port), str(args.silence_ms), str(max(args.speakers))]
    server = subprocess.Popen(cmd, env=env)
    url = f"127.0.0.1:{port}"
    t0 = time.monotonic()
    report = {"command": " ".join(sys.argv), "runs": []}
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://{url}/health", timeout=2).read()
                break
            except Exception:
                if server.poll() is not None or time.monotonic() - t0 > 300:
                    raise SystemExit("server did not start")
                time.sleep(0.5)
        watch = RSSWatch(server.pid)
        watch.start()
        print(f"server up in {time.monotonic() - t0:.1f} s")
        for n in args.speakers:
            left = args.max_seconds - (time.monotonic() - t0)
            if left < 10:
                print(f"skipping {n} speakers: out of time")
                continue
            results: list[dict] = []

            async def run_all():
                await asyncio.gather(*(speaker(url, questions, args.turns, results, i) for i in range(n)))

            start = time.monotonic()
            try:
                asyncio.run(asyncio.wait_for(run_all(), left))
            except TimeoutError:
                print(f"{n} speakers: stopped at --max-seconds")
            ok = [r for r in results if "first_audio_ms" in r]
            fa = [r["first_audio_ms"] for r in ok]
            row = {
                "speakers": n, "answers": len(ok), "completed": sum(r["completed"] for r in results),
                "wall_s": round(time.monotonic() - start, 1),
                "first_audio_p50_ms": pct(fa, 50), "first_audio_p95_ms": pct(fa, 95),
                **{f"{k}_p50_ms": pct([r[k] for r in ok if r.get(k) is not None], 50)
                   for k in ("vad_ms", "asr_ms", "llm_first_text_ms", "tts_first_audio_ms")},
                "rtf_p50": pct([r["rtf"] for r in ok if r.get("rtf")], 50),
                "late_frames": sum(r["late_frames"] for r in ok), "frames": sum(r["frames"] for r in ok),
                "dropped_answers": len(results) - sum(r["completed"] for r in results),
                "errors": sorted({c for r in ok for c in r["errors"]}),
                "server_peak_rss_mb": round(watch.peak),
                "answers_sample": [r.get("answer") for r in ok[:2]],
            }  # fmt: skip
            report["runs"].append(row)
            print(json.dumps({k: (round(v) if isinstance(v, float) and k.endswith("_ms") else v)
                              for k, v in row.items()}))  # fmt: skip
        watch.stop.set()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print("report:", args.json)


if __name__ == "__main__":
    main()
