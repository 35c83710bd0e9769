"""A user turn streamed into an engine's live turn while it is spoken (`Session`, server VAD).

Engines that offer `live_turn(wait)` (the speech LM) encode and pre-fill the user's speech as it arrives, so that
at the end of the turn only the answer remains to compute. A `LiveFeed` owns one such live turn: the session puts
frames in from the event loop, a thread of its own pushes them into the engine, and the answer's worker thread
takes the live turn over (`take`) or the feed lets go of it (`close`). Every path ends in `_let_go`, which closes
the live turn (releasing the engine) and gives back the session's engine slot.

Why a thread and not the loop: a push is model compute (streaming codec encoder + LM positions): measured with
one torch thread on the shared 2-core machine, ~23 ms for one 32 ms frame and ~38 ms for a batch of 8, more for
the first push (the pre-roll and the speech before it was announced). On the loop that would hold up every
session's VAD, socket reads and answer audio for tens of ms at a time; here the loop only puts frames on a queue,
and torch releases the GIL while it computes.

The engine is opened lazily and never waited for: the feed tries the engine slot and the engine's lock without
blocking (same order as the answer workers: slot, then engine) at each push, keeping the frames until it gets
them. While an answer (another session's, or a barge-in's cancelled one finishing its last step) holds the engine,
the turn simply goes on collecting; if the engine never came free, `take` returns None and the answer falls back
to `respond()` with the whole turn's audio.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

TRAIL_FRAMES = 5  # non-speech frames kept after the last speech (160 ms), as trim_to_speech pads 150 ms
BATCH_FRAMES = 8  # frames pushed at once while the user speaks (256 ms, ~6 tokens)
_ANSWER, _CLOSE = object(), object()


class LiveFeed:
    def __init__(self, engine, item_id: str, first: np.ndarray, engine_slot: threading.Semaphore | None = None):
        self.item_id = item_id
        self.pushed = 0  # samples pushed into the live turn
        self.failure: BaseException | None = None  # the engine's error from opening or pushing
        self._engine, self._slot = engine, engine_slot
        self._live = None
        self._has_slot = False
        self._waiting: list[np.ndarray] = [first]  # frames collected until the engine is ours
        self._held: list[np.ndarray] = []  # the rest of a pause, past its first TRAIL_FRAMES
        self._let_go_lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"vivavoce-live-{item_id}", daemon=True)
        self._thread.start()

    # ---- from the event loop: never blocks -------------------------------------------------------------------
    def push(self, frame: np.ndarray, speech: bool) -> None:
        self._queue.put((frame, speech))

    def close(self) -> None:
        """The turn will not be answered from this feed: the thread lets go of the engine and ends."""
        self._queue.put(_CLOSE)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # ---- from the answer's worker thread -----------------------------------------------------------------------
    def take(self):
        """The live turn with every frame pushed, for `live.answer(options)`; None if the engine never came free
        (answer with `respond()`). Raises the engine's error from a push. The caller must call `finish()`."""
        self._queue.put(_ANSWER)
        self._thread.join()
        if self.failure is not None:
            raise self.failure
        return self._live

    def finish(self) -> None:
        """After the answer (or instead of it): the engine and the slot are free when this returns."""
        self._queue.put(_CLOSE)
        self._thread.join()
        self._let_go()

    # ---- the feed's thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        batch: list[np.ndarray] = []
        pause = 0  # non-speech frames since the last speech frame
        self._feed([])  # the pre-roll and the speech up to the announcement, at once
        while True:
            item = self._queue.get()
            if item is _CLOSE:  # what is still queued would be computed for nothing
                self._let_go()
                return
            if item is _ANSWER:
                self._feed(batch)
                return  # the live turn now belongs to the answer's worker
            frame, speech = item
            if speech:  # the rest of a pause goes in once speech goes on; the silence ending a turn never does
                batch += self._held + [frame]
                self._held, pause = [], 0
            else:
                pause += 1
                (batch if pause <= TRAIL_FRAMES else self._held).append(frame)
            # A push costs ~18 ms + ~2 ms a token (int8 LM, 1 thread): batches of 8 frames take ~16 % of a core
            # where frame by frame took ~70 %. A pause's first frame and its tail push at once, so that when the
            # turn ends only the encoder's last token is left; a backlog goes in one push.
            if batch and self._queue.empty() and (len(batch) >= BATCH_FRAMES or pause in (1, TRAIL_FRAMES)):
                self._feed(batch)
                batch = []

    def _feed(self, frames: list[np.ndarray]) -> None:
        if self.failure is not None:
            return
        self._waiting += frames
        try:
            if self._live is None and not self._open():
                return
            if self._waiting:
                audio = np.concatenate(self._waiting)
                self._waiting = []
                self._live.push(audio)
                self.pushed += audio.size
        except Exception as e:  # noqa: BLE001  (raised again by take(); the engine is freed at once meanwhile)
            self.failure = e
            self._let_go()

    def _open(self) -> bool:
        if self._slot is not None and not self._has_slot:
            self._has_slot = self._slot.acquire(blocking=False)
            if not self._has_slot:
                return False
        self._live = self._engine.live_turn(wait=False)
        if self._live is None and self._has_slot:  # don't sit on the slot while another answer has the engine
            self._slot.release()
            self._has_slot = False
        return self._live is not None

    def _let_go(self) -> None:
        with self._let_go_lock:
            live, self._live = self._live, None
            has_slot, self._has_slot = self._has_slot, False
        try:
            if live is not None:
                live.close()
        finally:
            if has_slot:
                self._slot.release()
