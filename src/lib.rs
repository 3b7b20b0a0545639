//! AskPro: webhook ingress, adapters and wiring around the `askpro-actors` pipeline core.

pub mod apikey;
pub mod app;
pub mod bench_server;
pub mod calcom;
pub mod cli;
pub mod config;
pub mod cql;
pub mod embedded;
pub mod http;
pub mod kafka;
pub mod loadgen;
pub mod payload;
pub mod retell;
pub mod routing;
pub mod signature;
pub mod store_bench;
pub mod telemetry;
pub mod worker;
