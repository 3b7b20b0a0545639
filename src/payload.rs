//! Parsing and schema validation of provider payloads.
