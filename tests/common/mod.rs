//! Shared test helpers.
#![allow(dead_code)]

pub mod frames;
pub mod testnet;
pub use testnet::*;
