#!/usr/bin/env bash
# Stage 1 of the speech LM on one CUDA GPU (configs/lm/stage1-gpu.yaml), as run on a lent H100 (see
# src/vivavoce/checkpoints/speechlm/TRAINED.md):
#   TOKENS=cache/lm/tokens.jsonl [GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf] [MINUTES=6] scripts/gpu_train_lm.sh
# CONFIG picks another recipe (default configs/lm/stage1-gpu.yaml; configs/lm/continue-gpu.yaml goes on from a
# checkpoint) and INIT the checkpoint it starts from (its `init_from`).
# CALL_SECONDS (a lent machine's call limit, counted from this script's start) stops the training in time to save
# and send its weights back (SAVE_SECONDS, default 90, are kept for that): the set-up before training (loading,
# packing) took 3 of a 10-minute call in round 13, and a run killed by the call's limit brings nothing back.
# First the frozen LLM answers every rendered question (s2t targets, $ANSWERS; through the corpus answer cache),
# unless $ANSWERS exists already (a carried answers file of an earlier round: the same targets, no LLM load).
# The run goes to $RUN (default runs/lm/stage1-gpu). With $OUT set, the best weights also go there in
# bf16 parts of under 16 MiB (`scripts/checkpoint_parts.py merge` joins them), with the logs.
# On a lent device machine whose calls carry at most 64 MiB, `scripts/gpu_pack.sh` packs this run for two calls
# (three when it starts from a checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
STOP_BY=${CALL_SECONDS:+$(( $(date +%s) + CALL_SECONDS - ${SAVE_SECONDS:-90} ))}
RUN=${RUN:-runs/lm/stage1-gpu}
ANSWERS=${ANSWERS:-$(dirname "${TOKENS:?set TOKENS to the token cache}")/answers.jsonl}
if [ ! -s "$ANSWERS" ]; then
    $PY -m vivavoce.train.lm_data answers "$TOKENS" --out "$ANSWERS" --backbone "${GGUF:-smollm2}" \
        --device "${DEVICE:-cuda}" --batch-size 256
    fresh_answers=1
fi
cfg=$(mktemp --suffix .yaml)
sed -e "s|^tokens: .*|tokens: $TOKENS|" -e "s|^answers: .*|answers: $ANSWERS|" \
    -e "s|^corpora: .*|corpora: []\nbackbone: ${GGUF:-smollm2}|" ${INIT:+-e "s|^init_from: .*|init_from: $INIT|"} \
    "${CONFIG:-configs/lm/stage1-gpu.yaml}" > "$cfg"
$PY -m vivavoce.cli train lm --config "$cfg" --out "$RUN" --max-minutes "${MINUTES:-6}" ${STOP_BY:+--stop-by "$STOP_BY"} ${DEVICE:+--device "$DEVICE"}
if [ -n "${OUT:-}" ]; then
    # $OUT brings back 64 MiB at most: the best weights alone by default (39 MiB with adapters; OUT_WEIGHTS="best model"
    # for the last step's too, where they fit)
    for w in ${OUT_WEIGHTS:-best}; do $PY scripts/checkpoint_parts.py split "$RUN/$w.safetensors" "$OUT"; done
    # one file for the logs: $OUT brings back 8 files at most, and the weights may be 3 parts each
    tar -czf "$OUT/logs.tgz" -C "$RUN" $(cd "$RUN" && ls log.csv eval.csv best.json 2>/dev/null)
    [ -z "${fresh_answers:-}" ] || cp "$ANSWERS" "$OUT/answers.jsonl"
fi
