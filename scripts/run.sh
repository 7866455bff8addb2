#!/usr/bin/env bash
# Runs the service on http://127.0.0.1:${PORT:-8000} against a local MongoDB replica set,
# fetching and starting it first. Secrets come from the environment; when unset (local
# development only) random ones are generated for this run.
set -euo pipefail
cd "$(dirname "$0")/.."
MONGO_URL="${MONGO_URL:-$(scripts/mongo.sh start)}"
export MONGO_URL
export DB_NAME="${DB_NAME:-cryptovault}"
export ENVIRONMENT="${ENVIRONMENT:-development}"
export HOST="${HOST:-127.0.0.1}"
export JWT_SECRET="${JWT_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
export CSRF_SECRET="${CSRF_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
exec cargo run --release --bin cryptovault -- "${@:-serve}"
