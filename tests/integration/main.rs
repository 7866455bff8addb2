//! Integration tests against a real MongoDB replica set (started by `scripts/test.sh`).
//! Every test works in a database of its own. All of them compile into this one binary.

mod audit;
mod auth;
mod auth_fuzz;
mod auth_limits;
mod auth_tokens;
mod bank_faults;
mod crashed_writer;
mod cross_instance;
mod deposits;
mod edge;
mod event_store;
mod exact_money;
mod faults_http;
mod helpers;
mod history;
mod http_operations;
mod invariants;
mod ledger;
mod ledger_concurrency;
mod live;
mod login_throttle;
mod openapi;
mod predecessor_live;
mod privacy;
mod replay;
mod sessions;
mod snapshots;
mod statements;
mod store_faults;
mod subscription;
mod tamper;
mod wallet;
