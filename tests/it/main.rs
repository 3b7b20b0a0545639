//! AskPro's integration suite: one test binary (modules below), real HTTP over loopback.
mod booking;
mod booking_faults;
mod calcom;
mod catalog_cli;
mod crash;
mod harness;
mod inbound;
mod ingress;
mod log_contract;
mod outage;
mod payload_fixtures;
mod roles;
mod shutdown;
mod signature_sdk;
mod store_contract;
mod supervision;
