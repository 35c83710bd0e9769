#!/usr/bin/env bash
# Trains the shipped lite-16k codec checkpoints on one CPU thread (about 25 minutes in all) and copies them into
# src/vivavoce/checkpoints/codec-lite-16k/. Re-running resumes any part whose run directory already exists.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
PY=${PYTHON:-python}
[ -f cache/codec-data/train.jsonl ] || $PY -m vivavoce.train.codec_data --out cache/codec-data --per-voice 45
$PY -m vivavoce.cli --threads 1 train tokenizer --config configs/codec/tokenizer-lite.yaml --steps 1500 --max-minutes 6
$PY -m vivavoce.cli --threads 1 train decoder --config configs/codec/decoder-lite.yaml --steps 1200 --max-minutes 5
$PY -m vivavoce.cli --threads 1 train vocoder --config configs/codec/vocoder-lite.yaml --steps 3000 --max-minutes 9
dest=src/vivavoce/checkpoints/codec-lite-16k
mkdir -p $dest
for part in tokenizer decoder vocoder; do cp runs/codec/$part/model.safetensors $dest/$part.safetensors; done
ls -l $dest
