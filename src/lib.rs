//! AskPro: webhook ingress, adapters and wiring around the `askpro-actors` pipeline core.

pub mod embedded;
pub mod payload;
pub mod signature;
