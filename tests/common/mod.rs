//! Shared test helpers.
#![allow(dead_code)]

pub mod testnet;
pub use testnet::*;
