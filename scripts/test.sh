#!/usr/bin/env bash
# Runs the whole test suite against a real MongoDB replica set, fetching and starting it first.
# Each test creates its own database on that server. Extra arguments go to `cargo test`.
#
# The test server is its own instance (port 27118 unless CV_MONGO_PORT is set), apart from the
# development one of scripts/run.sh. Its data lives in memory (/dev/shm) where the machine has
# it: the suite writes gigabytes of throw-away data. Durability settings are unchanged
# (majority, journaled); only the medium differs. CV_MONGO_RUN_ROOT chooses another place.
# Tests run one at a time (RUST_TEST_THREADS, default 1): each integration test starts whole
# service instances, and the heavy ones side by side on a two-core machine slow each other
# into multi-second requests; one at a time, timings stay far from every limit.
# The test server runs with `enableTestCommands`: tests/integration/store_faults.rs injects
# failures with the `failCommand` fail point, scoped to its own client's appName.
# Its TTL monitor runs every second (`ttlMonitorSleepSecs=1`), so expiry tests finish in seconds.
# When a test fails, the operations mongod logged as slow during the run are printed too.
# With no arguments, the Schemathesis run of scripts/fuzz-api.sh follows a passing `cargo test`.
# CV_MONGO_MEMBERS=3 runs the tests against a three-member replica set instead (ports 27121-27123
# unless CV_MONGO_PORT is set; 27119 is a test's private node).
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${CV_MONGO_MEMBERS:-1}"
if [ "$MEMBERS" -gt 1 ]; then
  export CV_MONGO_PORT="${CV_MONGO_PORT:-27121}"
fi
export CV_MONGO_PORT="${CV_MONGO_PORT:-27118}"
# Test commands (fail points) for the fault-injection tests; never on the development server.
export CV_MONGO_TEST_COMMANDS=1
if [ -z "${CV_MONGO_RUN_ROOT:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export CV_MONGO_RUN_ROOT=/dev/shm/cryptovault-test
fi
# The README's Python verifier runs in tests/offline_verifier.rs, with `cryptography` from a cached
# virtual environment (scripts/audit-venv.sh installs it from PyPI on a fresh machine).
CV_AUDIT_PYTHON="$(scripts/audit-venv.sh)"
export CV_AUDIT_PYTHON
MONGO_URL="$(scripts/mongo.sh start)"
export MONGO_URL
export CRYPTOVAULT_TEST_MONGO_URL="$MONGO_URL"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}"
mark="$(scripts/mongo.sh log-size)"
# Tests that start a private node of their own with scripts/mongo.sh get a single node.
unset CV_MONGO_MEMBERS
status=0
cargo test --workspace "$@" || status=$?
if [ "$status" -ne 0 ]; then
  CV_MONGO_MEMBERS="$MEMBERS" scripts/mongo.sh slow "$mark" 1000 || true
  exit "$status"
fi
# The whole suite (no arguments) ends with the outside fuzzer against a live instance, driven by
# the served OpenAPI contract (scripts/fuzz-api.sh). A filtered run (`scripts/test.sh NAME`) skips it.
if [ "$#" -eq 0 ]; then
  scripts/fuzz-api.sh || status=$?
fi
exit "$status"
