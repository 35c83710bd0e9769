"""Greedy, streamed text generation with the frozen backbone (its own KV cache, token by token).

Used by the cascade engine and by corpus synthesis to write the assistant's answers.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

from vivavoce.model.backbone import Backbone
from vivavoce.textnorm import ends_sentence

SPOKEN_STYLE_PROMPT = (
    "You are a friendly voice assistant. Your words will be spoken aloud, so answer in one or two short, "
    "plain sentences, with no lists, no markdown and no emoji."
)


@dataclass
class TextGenConfig:
    max_new_tokens: int = 60
    repetition_penalty: float = 1.1  # on tokens already generated; keeps a 135M model out of loops
    answer_words: int = 0  # > 0: stop at the first sentence end once the text has this many words (`answer_complete`)


# Where a spoken answer stops. The corpus keeps an answer's whole sentences up to 40 words; stopping at the first
# sentence end past 22 words gives the same text for 85 % of the LLM's 2,944 speakable answers to the alignment
# questions (WER 0.12 against it; the whole 60-token answer: 0.37, and 27 % of those break off mid-sentence).
SPOKEN_ANSWER_WORDS = 22


def answer_complete(text: str, min_words: int) -> bool:
    """True where `text` ends a sentence and has at least `min_words` words (0: never): a spoken answer stops
    there instead of running on to the token limit and breaking off mid-sentence."""
    return min_words > 0 and len(text.split()) >= min_words and ends_sentence(text)


class PrefixCache:
    """The KV cache of a fixed prompt prefix (the system prompt), computed once and copied per request:
    every answer then pre-fills only the user's turn."""

    def __init__(self, backbone: Backbone, prefix_ids: list[int]):
        self.ids = list(prefix_ids)
        with torch.inference_mode():
            self._cache = backbone.model(input_ids=torch.tensor([self.ids]), use_cache=True, logits_to_keep=1).cache
        self._lock = threading.Lock()

    def fork(self, prompt_ids: list[int]):
        """(cache copy, remaining ids) if `prompt_ids` starts with the prefix (and goes beyond it), else None."""
        n = len(self.ids)
        if len(prompt_ids) <= n or prompt_ids[:n] != self.ids:
            return None
        with self._lock:
            return copy.deepcopy(self._cache), prompt_ids[n:]


def penalise(logits: torch.Tensor, ids, penalty: float) -> torch.Tensor:
    """CTRL-style repetition penalty on the token `ids` already produced (on a copy of `logits`)."""
    if penalty == 1.0 or not len(ids):
        return logits
    logits = logits.clone()
    prev = torch.tensor(sorted(set(int(i) for i in ids)))
    vals = logits[prev]
    logits[prev] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return logits


@torch.inference_mode()
def stream_tokens(
    backbone: Backbone, prompt_ids: list[int], config: TextGenConfig = TextGenConfig(), prefix: PrefixCache | None = None
) -> Iterator[int]:
    """Greedy token ids after `prompt_ids`, one at a time, until an end-of-turn token or the length limit."""
    stops = set(backbone.stop_ids())
    forked = prefix.fork(prompt_ids) if prefix is not None else None
    past, rest = forked if forked is not None else (None, prompt_ids)
    ids = torch.tensor([rest])
    seen: list[int] = []
    for _ in range(config.max_new_tokens):
        out = backbone.model(input_ids=ids, cache=past, use_cache=True, logits_to_keep=1)
        past = out.cache
        logits = penalise(out.logits[0, -1].float(), seen, config.repetition_penalty)
        token = int(torch.argmax(logits))
        if token in stops:
            return
        seen.append(token)
        yield token
        ids = torch.tensor([[token]])


def stream_text(
    backbone: Backbone, prompt_ids: list[int], config: TextGenConfig = TextGenConfig(), prefix: PrefixCache | None = None
) -> Iterator[str]:
    """Text pieces as tokens arrive, decoded so that multi-token characters are never split."""
    tokens: list[int] = []
    sent = ""
    for token in stream_tokens(backbone, prompt_ids, config, prefix):
        tokens.append(token)
        text = backbone.tokenizer.decode(tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            continue
        if len(text) > len(sent):
            yield text[len(sent) :]
            sent = text
        if answer_complete(text, config.answer_words):
            return


def system_prefix_ids(backbone: Backbone, system: str = SPOKEN_STYLE_PROMPT) -> list[int]:
    """Token ids of the system turn alone: a prefix of every prompt built by `chat_messages` with it."""
    return backbone.chat_ids([{"role": "system", "content": system}], add_generation_prompt=False)


def chat_messages(user_text: str, history: list[tuple[str, str]] = (), system: str = SPOKEN_STYLE_PROMPT) -> list[dict]:
    """ChatML messages: the system prompt, earlier (role, text) turns, then the user's text."""
    messages = [{"role": "system", "content": system}]
    messages += [{"role": role, "content": text} for role, text in history]
    messages.append({"role": "user", "content": user_text})
    return messages


def answer(backbone: Backbone, user_text: str, config: TextGenConfig = TextGenConfig(), **kw) -> str:
    """The whole greedy answer to `user_text` as one string."""
    return "".join(stream_text(backbone, backbone.chat_ids(chat_messages(user_text, **kw)), config)).strip()


@torch.inference_mode()
def answer_batch(backbone: Backbone, user_texts: list[str], config: TextGenConfig = TextGenConfig(),
                 batch_size: int = 64, temperature: float = 0.0, generator: torch.Generator | None = None,
                 **kw) -> list[str]:  # fmt: skip
    """`answer` for many questions at once: the same greedy decoding and repetition penalty, rows left-padded
    (their positions start at their first real token), on whatever device the backbone is. For writing thousands
    of answers as training targets: on a GPU, or on 2 CPU threads at 0.24 s an answer in batches of 64 (`answer`
    one at a time: 8.4 s). `temperature` > 0 samples instead (from `generator`, on the CPU): other answers in the
    LLM's own words, as more text to learn from."""
    device = next(backbone.model.parameters()).device
    stops = torch.tensor(sorted(backbone.stop_ids()), device=device)
    out: list[str] = []
    for b in range(0, len(user_texts), batch_size):
        prompts = [backbone.chat_ids(chat_messages(t, **kw)) for t in user_texts[b : b + batch_size]]
        n, width = len(prompts), max(map(len, prompts))
        ids = torch.zeros(n, width, dtype=torch.long, device=device)
        mask = torch.zeros(n, width, dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, device=device)
            mask[i, width - len(p) :] = 1
        seen = torch.zeros(n, backbone.model.config.vocab_size, dtype=torch.bool, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        tokens = torch.zeros(n, 0, dtype=torch.long, device=device)
        past, step_ids = None, ids
        for _ in range(config.max_new_tokens):
            pos = (mask.cumsum(1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
            res = backbone.model(input_ids=step_ids, attention_mask=mask, position_ids=pos, past_key_values=past,
                                 use_cache=True, logits_to_keep=1)  # fmt: skip
            past = res.past_key_values
            logits = res.logits[:, -1].float()
            if config.repetition_penalty != 1.0:  # as `penalise`, on the tokens each row has produced
                pen = torch.where(logits > 0, logits / config.repetition_penalty, logits * config.repetition_penalty)
                logits = torch.where(seen, pen, logits)
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1).cpu()
                token = torch.multinomial(probs, 1, generator=generator)[:, 0].to(device)
            else:
                token = logits.argmax(-1)
            done |= torch.isin(token, stops)
            token = torch.where(done, stops[0], token)
            tokens = torch.cat([tokens, token[:, None]], 1)
            seen[torch.arange(n, device=device), token] |= ~done
            if bool(done.all()):
                break
            step_ids = token[:, None]
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], 1)
        for row in tokens.tolist():
            kept = [t for t in row if t not in set(stops.tolist())]
            out.append(backbone.tokenizer.decode(kept, skip_special_tokens=True).strip())
    return out
