#!/usr/bin/env bash
# Runs the whole test suite against a real MongoDB replica set, fetching and starting it first.
# Each test creates its own database on that server. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
MONGO_URL="$(scripts/mongo.sh start)"
export MONGO_URL
export CRYPTOVAULT_TEST_MONGO_URL="$MONGO_URL"
cargo test --workspace "$@"
