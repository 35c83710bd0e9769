#!/usr/bin/env bash
# Trains the shipped lite-16k codec checkpoints on one CPU thread and copies them into
# src/vivavoce/checkpoints/codec-lite-16k/ (the hq-48k vocoder into codec-hq-48k/). Re-running resumes any part
# whose run directory already exists. Round 1 (v1) is the small first set; round 2 (v2) starts from it on the
# 2.1 h mixed set; round 3 (v3) moves the tokenizer to 25 Hz. See src/vivavoce/checkpoints/codec-lite-16k/TRAINED.md
# for times and figures.
#   CORPUS=/path/to/corpus/small ALIGN=/path/to/corpus/joe-align scripts/train_codec_lite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
PY=${PYTHON:-python}
CORPUS=${CORPUS:-corpus/small}
ALIGN=${ALIGN:-corpus/joe-align}
train() { $PY -m vivavoce.cli --threads 1 train "$@"; }

# data: Piper + espeak sets (the test set of cache/codec-data is the benchmark's), the corpus, joe renderings
[ -f cache/codec-data/train.jsonl ] || $PY -m vivavoce.train.codec_data --out cache/codec-data --per-voice 45
[ -f cache/codec-extra/train.jsonl ] || $PY -m vivavoce.train.codec_data --out cache/codec-extra --per-voice 80 \
    --seed 7 --more-voices --exclude cache/codec-data/test.jsonl
[ -d "$CORPUS" ] || vivavoce --threads 1 data build --preset small --out "$CORPUS" --workers 1
[ -d "$ALIGN" ] || $PY -m vivavoce.train.lm_data render --preset small --out "$ALIGN" --limit 1500
if [ ! -f cache/codec-mix.jsonl ]; then
    $PY -m vivavoce.train.codec_data merge cache/codec-mix-a.jsonl cache/codec-data/train.jsonl \
        cache/codec-extra/train.jsonl "$CORPUS"/manifests/train-shard-0-of-1.jsonl
    $PY -m vivavoce.train.codec_data merge cache/codec-mix-b.jsonl "$ALIGN"/manifests/train-align.jsonl --max-rows 500
    cat cache/codec-mix-a.jsonl cache/codec-mix-b.jsonl > cache/codec-mix.jsonl
fi

# round 1: 17 minutes of speech, ~20 min of training
train tokenizer --config configs/codec/tokenizer-lite.yaml --steps 1500 --max-minutes 6
train decoder --config configs/codec/decoder-lite.yaml --steps 1200 --max-minutes 5
train vocoder --config configs/codec/vocoder-lite.yaml --steps 3000 --max-minutes 9
# round 2: level-invariant, stability-trained tokenizer; decoder over it; vocoder continued; hq-48k from lite
train tokenizer --config configs/codec/tokenizer-lite-v2.yaml
train decoder --config configs/codec/decoder-lite-v2.yaml --steps 13000 --max-minutes 60
train vocoder --config configs/codec/vocoder-lite.yaml --manifest cache/codec-mix.jsonl --out runs/codec/vocoder-v2 \
    --init-from runs/codec/vocoder/model.safetensors --steps 45000 --max-minutes 62
train vocoder --config configs/codec/vocoder-hq48k.yaml
# round 3: the tokenizer at 25 Hz (warm start from v2 across the rate change), a decoder over it; vocoders kept.
# The tokenizer run stopped at its 36-minute limit (step 4,836 of 8,000), then was resumed with a shorter cosine
# schedule (--steps 6000) so that its learning rate anneals.
train tokenizer --config configs/codec/tokenizer-lite-v3.yaml
train tokenizer --config configs/codec/tokenizer-lite-v3.yaml --steps 6000 --max-minutes 47
train decoder --config configs/codec/decoder-lite-v3.yaml
# round 4: decoder v4 (token look-ahead 4) from the shipped v3 decoder, on the mix plus the alignment questions said
# in the train users' voices (see src/vivavoce/checkpoints/codec-lite-16k/TRAINED.md)
USERS=${USERS:-corpus/users-align}
[ -d "$USERS" ] || $PY -m vivavoce.train.lm_data render --preset small --out "$USERS" --limit 0 --user-voices --takes 3
if [ ! -f cache/codec-mix-v4.jsonl ]; then
    $PY -m vivavoce.train.codec_data merge cache/codec-mix-c.jsonl "$USERS"/manifests/train-align-users.jsonl
    cat cache/codec-mix.jsonl cache/codec-mix-c.jsonl > cache/codec-mix-v4.jsonl
fi
train decoder --config configs/codec/decoder-lite-v4.yaml
# round 5: decoder v7 = a token stage twice as deep (v5, from v4) + the re-tokenisation loss (v7, from v5), same
# clips. Tried beside it, not shipped (docs/codec.md): v6 (v4 + the loss) and the vocoder on decoder mels
train decoder --config configs/codec/decoder-lite-v5.yaml
train decoder --config configs/codec/decoder-lite-v7.yaml
# round 6: decoder v8 = v7 fine-tuned with joe saying the frozen LLM's answers (new text; the speech LM's data:
# `python -m vivavoce.train.lm_data render --answers ...`, docs/speechlm-training.md), 150 of them held out
ANSWERS=${ANSWERS:-corpus/answers-align}
$PY -m vivavoce.train.codec_data merge cache/codec-mix-v8.jsonl cache/codec-mix-v4.jsonl \
    "$ANSWERS"/manifests/train-align-answers.jsonl --exclude-ids configs/codec/heldout-answers-r8.txt
train decoder --config configs/codec/decoder-lite-v8.yaml
# round 7 (shipped with the speech LM of round 10, which was retrained on its codes): tokenizer v9 = v3
# fine-tuned on v8's clips plus joe saying sampled answers (SAMPLED: a manifest of `lm_data render --answers` over
# `lm_data answers --samples 2`; round 7 took its first 2,900 rows), then decoder v9 onto its codes. v10 (v3 twice
# as deep) was tried beside it and dropped (docs/codec.md)
if [ -n "${SAMPLED:-}" ]; then
    $PY -m vivavoce.train.codec_data merge cache/codec-mix-v9.jsonl cache/codec-mix-v8.jsonl "$SAMPLED" \
        --exclude-ids configs/codec/heldout-answers-r9.txt
    train tokenizer --config configs/codec/tokenizer-lite-v9.yaml
    train decoder --config configs/codec/decoder-lite-v9.yaml
fi

dest=src/vivavoce/checkpoints/codec-lite-16k
tok=tokenizer-v3 dec=decoder-v8  # rounds 3 and 6; with SAMPLED, round 7's (shipped)
[ -z "${SAMPLED:-}" ] || { tok=tokenizer-v9; dec=decoder-v9; }
cp runs/codec/$tok/model.safetensors $dest/tokenizer.safetensors
cp runs/codec/$dec/model.safetensors $dest/decoder.safetensors
cp runs/codec/vocoder-v2/model.safetensors $dest/vocoder.safetensors
mkdir -p src/vivavoce/checkpoints/codec-hq-48k
cp runs/codec/vocoder-hq48k/model.safetensors src/vivavoce/checkpoints/codec-hq-48k/vocoder.safetensors
ls -l $dest src/vivavoce/checkpoints/codec-hq-48k
