"""The built-in user turns: every template filled from its fact table, normalised, deduplicated, capped at 25 words.

The list itself is fixed by TEXT_VERSION (no randomness); a corpus's seed only chooses and orders from it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

from vivavoce.data.normalize import normalize_text, word_count
from vivavoce.data.text import tables as T

TEXT_VERSION = "v1"
MAX_USER_WORDS = 25


@dataclass(frozen=True)
class UserTurn:
    id: str  # stable: a hash of the text, so ids survive reordering of the tables
    text: str
    kind: str  # question | request | chitchat | instruction | follow_up | capital (a short factual question)


def _turn_id(text: str) -> str:
    return "p" + hashlib.sha1(text.encode()).hexdigest()[:10]


def _raw_turns() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for country, capital, adj in T.COUNTRIES:
        for i, t in enumerate(T.COUNTRY_TEMPLATES):
            out.append(("capital" if i == 0 else "question", t.format(country=country, capital=capital, adj=adj)))
    out += [("question", t.format(animal=a)) for a in T.ANIMALS for t in T.ANIMAL_TEMPLATES]
    for c in T.CONCEPTS:
        for t in T.CONCEPT_TEMPLATES:
            kind = "instruction" if t.startswith(("Explain", "Describe", "Can you explain")) else "question"
            out.append((kind, t.format(concept=c)))
    out += [("request", t.format(food=f)) for f in T.FOODS for t in T.FOOD_TEMPLATES]
    out += [("question", t.format(person=p)) for p in T.PEOPLE for t in T.PEOPLE_TEMPLATES]
    out += [("request", t.format(activity=a)) for a in T.ACTIVITIES for t in T.ACTIVITY_TEMPLATES]
    for topic in T.TOPICS:
        for t in T.TOPIC_TEMPLATES:
            kind = "follow_up" if "more about" in t or "else should" in t else "request"
            out.append((kind, t.format(topic=topic)))
    out += [("chitchat", t.format(feeling=f)) for f in T.FEELINGS for t in T.FEELING_TEMPLATES]
    out += [("chitchat", t.format(place=p)) for p in T.PLACES for t in T.PLACE_TEMPLATES]
    out += [("instruction", t.format(task=k)) for k in T.TASKS for t in T.TASK_TEMPLATES]
    nums = T.NUMBER_WORDS
    for i, a in enumerate(nums):
        for j, b in enumerate(nums):
            if i != j and (i * 7 + j * 3) % 4 == 0:  # a fixed quarter of the pairs, not a random one
                out.append(("question", T.MATH_TEMPLATES[(i + j) % len(T.MATH_TEMPLATES)].format(a=a, b=b)))
    for u, b in T.UNITS:
        out += [("question", T.UNIT_TEMPLATE.format(a=a, u=u, b=b)) for a in nums[:12]]
    out += [("chitchat", c) for c in T.CHITCHAT]
    # Follow-ups name a thing from another table, as a second turn would.
    follow = [c for c, _, _ in T.COUNTRIES] + T.ANIMALS + T.TOPICS + T.FOODS
    for i, x in enumerate(follow):
        out.append(("follow_up", T.FOLLOW_UPS[i % len(T.FOLLOW_UPS)].format(x=x)))
    # Spoken openers: the same request said the way people start talking (a fixed subset, every third turn).
    base = list(out)
    for i, (kind, text) in enumerate(base):
        if i % 3 == 0:
            opener = T.OPENERS[(i // 3) % len(T.OPENERS)]
            out.append((kind, f"{opener} {text[0].lower() + text[1:] if not text.startswith('I ') else text}"))
    return out


@lru_cache(maxsize=1)
def user_turns() -> tuple[UserTurn, ...]:
    """All built-in user turns, in table order, distinct by text."""
    seen: dict[str, UserTurn] = {}
    for kind, raw in _raw_turns():
        text = normalize_text(raw)
        if text in seen or word_count(text) > MAX_USER_WORDS:
            continue
        seen[text] = UserTurn(_turn_id(text), text, kind)
    return tuple(seen.values())


def sample_turns(n: int, seed: int, kinds: tuple[str, ...] = ()) -> list[UserTurn]:
    """`n` distinct turns (all when n <= 0), chosen and ordered by `seed`."""
    pool = [t for t in user_turns() if not kinds or t.kind in kinds]
    rng = random.Random(f"turns-{TEXT_VERSION}-{seed}")
    rng.shuffle(pool)
    return pool if n <= 0 else pool[:n]


def drill_things() -> list[str]:
    """The tables' things that a drill names: countries and their capitals, animals, concepts, foods, people,
    activities, topics and places."""
    things = [c for c, _, _ in T.COUNTRIES] + [cap for _, cap, _ in T.COUNTRIES]
    things += T.ANIMALS + T.CONCEPTS + T.FOODS + T.PEOPLE + T.ACTIVITIES + T.TOPICS + T.PLACES
    return list(dict.fromkeys(things))


@lru_cache(maxsize=1)
def drill_texts() -> tuple[str, ...]:
    """Every drill thing in every carrier (`T.DRILL_CARRIERS`), normalised, distinct, none a built-in user turn:
    asr data in which each thing of the tables recurs (`lm_data render --drill`). Not part of the bank, whose
    version and splits it leaves alone."""
    bank = {t.text for t in user_turns()}
    texts = (normalize_text(c.format(x=x)) for x in drill_things() for c in T.DRILL_CARRIERS)
    return tuple(t for t in dict.fromkeys(texts) if t not in bank)
