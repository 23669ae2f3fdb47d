//! The integration tests: one binary, a module per suite, against the real
//! local stack that `make test` starts (PostgreSQL, MariaDB, DynamoDB Local,
//! LocalStack's SQS, moto for Secrets Manager; see scripts/stack.sh).
//!
//! One binary links the AWS SDK once instead of once per suite. The suites
//! still run apart: `scripts/test.sh` lists this binary's tests and runs
//! each suite (a top-level module) in its own invocation, so the crash
//! scenarios of `faults` never share the machine with the timing-sensitive
//! suites. `cargo test --test it relay::` runs one suite by hand.
//!
//! The protocol model (`tests/model/`) is a binary of its own: it needs
//! no stack.

// Shared parts: fixtures, the delivery checker, the fault proxy, TLS servers.
mod checker;
#[macro_use]
mod common;
mod proxy;
mod tls_servers;

// The suites, one module each.
mod cli;
mod deadletters;
mod existing_tables;
mod faults;
mod fifo_commit_order;
mod follow;
mod guard;
mod lambda;
mod proxy_selftest;
mod python_consumer;
mod relay;
mod shaping;
mod stand_ins;
mod tls;
