#!/usr/bin/env bash
# Prints the path of a Python with the offline verifier's requirements (scripts/audit-requirements.txt:
# `cryptography` for Ed25519), installing them from PyPI into a virtual environment cached under
# ~/.cache/cryptovault the first time. scripts/test.sh exports it as CV_AUDIT_PYTHON for
# tests/offline_verifier.rs, which runs scripts/verify_receipt.py with it.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/cryptovault"
reqs_hash="$(sha256sum scripts/audit-requirements.txt | cut -c1-12)"
venv="$cache/audit-$reqs_hash"
if [ ! -e "$venv/.installed" ]; then
  echo "audit-venv: installing the offline verifier's requirements into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/audit-requirements.txt >&2
  touch "$venv/.installed"
fi
echo "$venv/bin/python"
