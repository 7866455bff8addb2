#!/usr/bin/env bash
# Runs Schemathesis — an outside fuzzer that knows nothing of this code — against a live
# instance, from the OpenAPI contract the service serves at /api/openapi.json. It fails when any
# answer is a 5xx, has a status, content type or body the contract does not declare, when an
# unsupported method is not refused with 405, or when an operation that requires auth answers
# without it. Three runs: as a plain user, as a user holding `admin` and `auditor`, and the
# operations that end sessions as a user of their own.
#
# Part of the README's test command (scripts/test.sh runs it after `cargo test`); on its own:
#   MONGO_URL=… scripts/fuzz-api.sh        (without MONGO_URL it starts the test replica set)
# CV_FUZZ_EXAMPLES (default 20) bounds the examples per operation and phase; CV_FUZZ_SEED (default
# 1) makes a run reproducible. Schemathesis is installed from PyPI (pinned in
# scripts/fuzz-requirements.txt) into a virtual environment cached under ~/.cache/cryptovault.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/cryptovault"
reqs_hash="$(sha256sum scripts/fuzz-requirements.txt | cut -c1-12)"
venv="$cache/schemathesis-$reqs_hash"
if [ ! -e "$venv/.installed" ]; then
  echo "fuzz-api: installing Schemathesis into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/fuzz-requirements.txt
  touch "$venv/.installed"
fi

if [ -z "${MONGO_URL:-}" ]; then
  export CV_MONGO_PORT="${CV_MONGO_PORT:-27118}"
  MONGO_URL="$(scripts/mongo.sh start)"
fi
export MONGO_URL

cargo build --quiet --bin cryptovault
bin="${CARGO_TARGET_DIR:-target}/debug/cryptovault"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
export DB_NAME="fuzz_$(date +%s)_$$"
export ENVIRONMENT=test HOST=127.0.0.1 PORT="$port"
export JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export CSRF_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export EMAIL_INDEX_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
CHECKPOINT_SIGNING_KEY="$("$bin" audit generate-key --name fuzz.local/ledger 2>/dev/null)"
export CHECKPOINT_SIGNING_KEY
# The fuzzer sends thousands of requests from one address: rate limits would answer most of them
# 429 (declared, so conformant, but nothing behind them would be exercised).
export RATE_LIMIT_PER_IP_PER_MIN=1000000 RATE_LIMIT_LOGIN_PER_MIN=1000000 RATE_LIMIT_PER_USER_PER_MIN=1000000
# Nor may the login throttle block the fuzzer's own logins after its wrong-password cases.
export LOGIN_MAX_FAILURES=1000000 LOGIN_ACCOUNT_MAX_FAILURES=1000000
export RUST_LOG="${RUST_LOG:-warn}"

# request METHOD URL [JSON BODY] [BEARER TOKEN]: the answer's body on stdout; fails on any
# non-2xx answer or a refused connection. Python's standard library, so that the README's
# "Rust and Python 3" is all a machine needs (no curl).
request() {
  python3 - "$@" <<'PY'
import sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 and sys.argv[3] else None
headers = {"Content-Type": "application/json"} if body else {}
if len(sys.argv) > 4:
    headers["Authorization"] = "Bearer " + sys.argv[4]
with urllib.request.urlopen(urllib.request.Request(url, body, headers, method=method), timeout=30) as answer:
    sys.stdout.write(answer.read().decode())
PY
}

"$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  if request GET "$base/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log" >&2; exit 1; fi
  sleep 0.2
done
request GET "$base/api/openapi.json" >"$work/openapi.json"

# signup EMAIL → a fresh user; login EMAIL → its access token.
password="Fuzz-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
signup() {
  request POST "$base/api/auth/signup" \
    "{\"email\":\"$1\",\"password\":\"$password\",\"name\":\"Fuzz User\"}" >/dev/null
}
login() {
  request POST "$base/api/auth/login" "{\"email\":\"$1\",\"password\":\"$password\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
signup user@fuzz.example
signup staff@fuzz.example
signup sessions@fuzz.example
"$bin" admin grant --email staff@fuzz.example --role admin >/dev/null
"$bin" admin grant --email staff@fuzz.example --role auditor >/dev/null
user_token="$(login user@fuzz.example)"
staff_token="$(login staff@fuzz.example)"
sessions_token="$(login sessions@fuzz.example)"
# Some history for the read routes to page through.
for amount in 100.00 25.50; do
  request POST "$base/api/wallet/deposits" "{\"asset\":\"USD\",\"amount\":\"$amount\"}" \
    "$user_token" >/dev/null
done

# Operations that end sessions (logout; a password change ends every session of the user, the
# caller's too; enabling 2FA ends the others and changes what a login needs) run last, as a user
# of their own: in the other runs they would log the fuzzer out and leave every later case at 401.
session_ops='^/api/auth/(logout|change-password|2fa/)'
# One worker: with two, Schemathesis's threads race inside CPython's `ast.parse` (Hypothesis
# describing its filter lambdas) and a run ends with "Runtime Error: SystemError: AST constructor
# recursion depth mismatch" — an error of the fuzzer, not a finding, but a failed run.
run() {
  local who="$1" token="$2" select="$3" pattern="$4"
  echo "fuzz-api: Schemathesis as $who against $base" >&2
  "$venv/bin/schemathesis" run "$work/openapi.json" \
    --url "$base" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,unsupported_method,ignored_auth \
    --exclude-path-regex '^/ws/' \
    "--$select-path-regex" "$pattern" \
    --phases examples,coverage,fuzzing \
    --max-examples "${CV_FUZZ_EXAMPLES:-20}" \
    --seed "${CV_FUZZ_SEED:-1}" \
    --request-timeout 30 \
    --workers 1 \
    --report junit --report-dir "${CV_FUZZ_REPORT_DIR:-target/fuzz-api}/$who"
}
status=0
run user "$user_token" exclude "$session_ops" || status=$?
run staff "$staff_token" exclude "$session_ops" || status=$?
run sessions "$sessions_token" include "$session_ops" || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz-api: failed; the service's log follows" >&2
  tail -n 200 "$work/server.log" >&2
fi
exit "$status"
