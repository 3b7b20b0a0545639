//! AskPro's integration suite: one test binary (modules below), real HTTP over loopback.
mod signature_sdk;
mod payload_fixtures;
mod store_contract;
mod log_contract;
mod harness;
mod ingress;
mod supervision;
mod crash;
