#!/usr/bin/env bash
# Runs the service on http://127.0.0.1:${PORT:-8000} against a local MongoDB replica set,
# fetching and starting it first. Secrets come from the environment; when unset (local
# development only) random ones are generated (the email index key and the checkpoint signing
# key once, kept in .dev-secrets/).
set -euo pipefail
cd "$(dirname "$0")/.."
MONGO_URL="${MONGO_URL:-$(scripts/mongo.sh start)}"
export MONGO_URL
export DB_NAME="${DB_NAME:-cryptovault}"
export ENVIRONMENT="${ENVIRONMENT:-development}"
export HOST="${HOST:-127.0.0.1}"
export JWT_SECRET="${JWT_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
export CSRF_SECRET="${CSRF_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
# The blind-index key must stay the same for a database (addresses are found by it), so the
# development one is generated once and kept (not in git).
if [ -z "${EMAIL_INDEX_KEY:-}" ]; then
  mkdir -p .dev-secrets
  if [ ! -s .dev-secrets/email_index_key ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' > .dev-secrets/email_index_key)
  fi
  EMAIL_INDEX_KEY="$(cat .dev-secrets/email_index_key)"
fi
export EMAIL_INDEX_KEY
# The checkpoint signing key (issue 16): auditors pin its public half, so the development one
# is also generated once and kept (not in git). Production brings its own.
if [ -z "${CHECKPOINT_SIGNING_KEY:-}" ]; then
  mkdir -p .dev-secrets
  if [ ! -s .dev-secrets/checkpoint_signing_key ]; then
    key="$(cargo run --release --quiet --bin cryptovault -- audit generate-key --name "${CHECKPOINT_ORIGIN:-cryptovault.local/ledger}")"
    (umask 077 && printf '%s\n' "$key" > .dev-secrets/checkpoint_signing_key)
  fi
  CHECKPOINT_SIGNING_KEY="$(cat .dev-secrets/checkpoint_signing_key)"
fi
export CHECKPOINT_SIGNING_KEY
exec cargo run --release --bin cryptovault -- "${@:-serve}"
