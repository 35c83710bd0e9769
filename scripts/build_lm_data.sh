#!/usr/bin/env bash
# Rebuilds the speech LM's training data on a fresh 2-core machine, in two lanes (one core each), then the token
# cache. Every step resumes where a killed run stopped; a rerun skips what is complete.
#   lane A: the frozen LLM's answers to the 3,096 rendered questions (s2t targets), then those answers said as
#           user turns in the train users' voices (asr over varied text, TAKES_ANSWERS takes)
#   lane B: the questions in the train users' voices (3 takes), then the small dialogue corpus (its dev/test
#           questions are the benchmarks')
#   READING=1 adds joe saying the questions (2 takes) and the answers (reading data, spoken replies for s2s):
#           Piper joe costs ~0.2 s a second of speech, so this lane adds ~2 h.
#   STEADY=1 (with READING=1) speaks joe's readings as Piper's one most likely take (`render --steady`, round 16:
#           one code sequence per text to learn; one take of each question) into answers-steady and joe-steady.
# Measured 2026-11-27 (round 14), both lanes at once: answers 26 min; questions 9,288 renderings 37 min; answers in
# users' voices 2,800 renderings 33 min; corpus 3 min (its answers cached); tokenising 12,400 utterances 2.5 min.
# Then the LLM's replies to those answers as the users said them (round 15: 2,782 speakable of 2,800, 16 min on
# 2 threads), more s2t targets, joined with the questions' answers in answers-all.jsonl.
# SYNTH=1 adds heard speech without audio (train/lm_synth.py, round 25): a code synthesiser fitted to the users'
#   utterances (10 min) says SYNTH_ROWS texts with the lexicon's words in the bank's carriers and the answers'
#   sentences (40,000: ~9 min on 2 threads) into synth.jsonl; tokens-heard.jsonl is the token cache with them.
#   OUT=/work/data CORPORA=/work/corpus scripts/build_lm_data.sh     # then: tokens $OUT/tokens.jsonl,
#                                                                  #       answers $OUT/answers-all.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-cache/lm}
CORPORA=${CORPORA:-corpus}
TAKES_ANSWERS=${TAKES_ANSWERS:-1}
CODEC=src/vivavoce/checkpoints/codec-lite-16k
if [ "${STEADY:-0}" = 1 ] && [ "${READING:-0}" != 1 ]; then
    echo "STEADY=1 chooses how joe's readings are spoken: it needs READING=1" >&2
    exit 2
fi
if [ "${STEADY:-0}" = 1 ]; then
    READ_FLAGS=(--steady); READ_TAKES=1; READ_KIND=steady
else
    READ_FLAGS=(); READ_TAKES=2; READ_KIND=align
fi
mkdir -p "$OUT" "$CORPORA"
data() { $PY -m vivavoce.train.lm_data "$@"; }

lane_a() {
    [ -s "$OUT/answers.jsonl" ] || data answers --preset small --out "$OUT/answers.jsonl"
    data render --answers "$OUT/answers.jsonl" --user-voices --takes "$TAKES_ANSWERS" --limit 0 \
        --out "$CORPORA/users-answers"
    if [ "${READING:-0}" = 1 ]; then
        data render --answers "$OUT/answers.jsonl" --limit 0 "${READ_FLAGS[@]}" --out "$CORPORA/answers-$READ_KIND"
    fi
}
lane_b() {
    data render --preset small --user-voices --takes 3 --limit 0 --out "$CORPORA/users-align"
    $PY -m vivavoce.cli --threads 1 data build --preset small --out "$CORPORA/small" --workers 1
    if [ "${READING:-0}" = 1 ]; then
        data render --preset small --takes "$READ_TAKES" --limit 0 "${READ_FLAGS[@]}" --out "$CORPORA/joe-$READ_KIND"
    fi
}
lane_a > "$OUT/lane-a.log" 2>&1 &
a=$!
lane_b > "$OUT/lane-b.log" 2>&1 &
b=$!
status=0
wait $a || { echo "lane A failed: see $OUT/lane-a.log" >&2; status=1; }
wait $b || { echo "lane B failed: see $OUT/lane-b.log" >&2; status=1; }
[ $status = 0 ] || exit 1

corpora=("$CORPORA/small" "$CORPORA/users-align" "$CORPORA/users-answers")
[ "${READING:-0}" = 1 ] && corpora+=("$CORPORA/joe-$READ_KIND" "$CORPORA/answers-$READ_KIND")
data tokenize "${corpora[@]}" --out "$OUT/tokens.jsonl" --codec "$CODEC"
[ -s "$OUT/answers-said.jsonl" ] || data answers "$OUT/tokens.jsonl" --said --threads 2 --out "$OUT/answers-said.jsonl"
cat "$OUT/answers.jsonl" "$OUT/answers-said.jsonl" > "$OUT/answers-all.jsonl"
if [ "${SYNTH:-0}" = 1 ]; then
    OMP_NUM_THREADS=2 $PY -m vivavoce.train.lm_synth --tokens "$OUT/tokens.jsonl" --answers "$OUT/answers.jsonl" \
        --work "$OUT/synth" --rows "${SYNTH_ROWS:-40000}" --out "$OUT/synth.jsonl"
    cat "$OUT/tokens.jsonl" "$OUT/synth.jsonl" > "$OUT/tokens-heard.jsonl"
fi
