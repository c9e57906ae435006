//! Shared test helpers.
#![allow(dead_code)]

pub mod alloc;
pub mod frames;
pub mod testnet;
pub use testnet::*;
#[cfg(all(feature = "tokio", feature = "smol"))]
pub mod asyncrt;
