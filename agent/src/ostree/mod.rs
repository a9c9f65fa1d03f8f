//! The ostree on-disk layout as Basalt uses it.

pub mod booted;
pub mod deployment;
pub mod resolve;
