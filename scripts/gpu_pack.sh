#!/usr/bin/env bash
# Packs a speech LM GPU round (scripts/gpu_train_lm.sh) for a lent device machine, whose calls each carry at most
# 64 MiB with the working tree; the backbone's GGUF alone is 98 MB, so it travels in two halves, in two calls to one
# warm machine (as round 10 did: src/vivavoce/checkpoints/speechlm/TRAINED.md):
#   TOKENS=cache/lm/tokens.jsonl [ANSWERS=answers.jsonl] scripts/gpu_pack.sh      # writes .dev/a and .dev/b
# Then, on a throw-away branch whose tree lacks the shipped weights (`git rm src/vivavoce/checkpoints/*/*.safetensors`
# and commit there, and add `/src/vivavoce/checkpoints/*/*.safetensors` to .git/info/exclude, or they travel as
# untracked files; the tree is then ~1 MB; go back to main afterwards and take the line out again):
#   call 1, carry [".dev/a"]:  bash .dev/a/stage.sh           (copies its half to /tmp/g, installs the small wheels)
#   call 2, carry [".dev/b"]:  CALL_SECONDS=590 MINUTES=9 bash .dev/b/run.sh (the other half, transformers;
#                              trains; weights to $OUT; timeout_s 600)
# With INIT=checkpoint.safetensors the run goes on from that checkpoint (configs/lm/continue-gpu.yaml, or $CONFIG),
# which travels in a third call: call 2 then only stages (`STAGE_ONLY=1 bash .dev/b/run.sh`) and
#   call 3, carry [".dev/c"]:  CALL_SECONDS=590 MINUTES=9 bash .dev/c/run.sh  (timeout_s 600; trains from the checkpoint
#   until MINUTES, or until the call's end leaves 90 s to save and send back: gpu_train_lm.sh's CALL_SECONDS)
# Each call must follow the last within the machine's warm time (30 s). Weights come back as bf16 parts of under 16 MiB:
# `scripts/checkpoint_parts.py merge`, then `python -m vivavoce.train.lm_recipe export ... --codec DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
: "${TOKENS:?set TOKENS to the token cache}"
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
mkdir -p .dev/a .dev/b .dev/c .dev/wheels
gguf=$(PYTHONPATH=src $PY -c "from vivavoce.model.backbone import smollm2_gguf; print(smollm2_gguf())")
rm -f .dev/a/* .dev/b/* .dev/c/*
split -n 2 -d "$gguf" .dev/part-  # two halves of equal size
mv .dev/part-00 .dev/a/backbone.gguf.part0 && mv .dev/part-01 .dev/b/backbone.gguf.part1
# The device's python (3.12) has torch and transformers, not gguf, soundfile or soxr; transformers travels pinned
# to the version the GGUF loading was tested with.
for w in gguf==0.19.0 soundfile==0.14.0 soxr==1.1.0 cffi==2.1.1 pycparser==3.12 transformers==5.24.0; do
    ls .dev/wheels/"${w%%==*}"-"${w##*==}"-*.whl >/dev/null 2>&1 || $PY -m pip download -q --no-deps \
        --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .dev/wheels "$w"
done
cp .dev/wheels/*.whl .dev/a/ && mv .dev/a/transformers-*.whl .dev/b/
gzip -c "$TOKENS" > .dev/a/tokens.jsonl.gz
[ -z "${ANSWERS:-}" ] || cp "$ANSWERS" .dev/a/answers.jsonl
cat > .dev/a/stage.sh <<'EOF'
set -e
mkdir -p /tmp/g && cp .dev/a/* /tmp/g/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/g/*.whl
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
EOF
cat > .dev/b/run.sh <<'EOF'
set -eo pipefail
cp "$(dirname "$0")"/* /tmp/g/  # this call's folder: .dev/b (its half, transformers), or .dev/c (the checkpoint)
[ -d /tmp/site/transformers ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/g/transformers-*.whl
[ -n "${STAGE_ONLY:-}" ] && exit 0
export PYTHONPATH=/tmp/site
cat /tmp/g/backbone.gguf.part0 /tmp/g/backbone.gguf.part1 > /tmp/g/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p /tmp/lm && gunzip -c /tmp/g/tokens.jsonl.gz > /tmp/lm/tokens.jsonl
[ ! -f /tmp/g/answers.jsonl ] || cp /tmp/g/answers.jsonl /tmp/lm/
[ ! -f /tmp/g/init.safetensors ] || export INIT=/tmp/g/init.safetensors CONFIG=${CONFIG:-configs/lm/continue-gpu.yaml}
TOKENS=/tmp/lm/tokens.jsonl GGUF=/tmp/g/SmolLM2-135M-Instruct.Q4_1.gguf RUN=/tmp/run OUT=${OUT:?} \
    MINUTES=${MINUTES:-6} scripts/gpu_train_lm.sh 2>&1 | stdbuf -oL tr '\r' '\n' | grep --line-buffered -v '^train speechlm: .*\]$'
ls -la "$OUT"
EOF
if [ -n "${INIT:-}" ]; then
    cp "$INIT" .dev/c/init.safetensors
    cp .dev/b/run.sh .dev/c/run.sh
fi
du -sb .dev/a .dev/b .dev/c | awk '{printf "%s %.1f MiB (with the ~1 MB tree, under 64)\n", $2, $1 / 1048576}'
