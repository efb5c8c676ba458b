//! Storage against the real servers of the local stack (deploy/local/test.sh starts them).
//! One binary for all modules, to link once.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod check_script;
mod migrations;
mod rabbitmq;
mod redis_cluster;
