//! Basalt's container engine: pulls OCI and Docker images from registries into a
//! content-addressed store, unpacks their layers safely, and runs containers with crun.
//! See `ENGINE.md` beside this crate for the on-disk layout and the security notes.

pub mod auth;
pub mod cli;
pub mod container;
pub mod digest;
pub mod extract;
pub mod fsutil;
pub mod media;
pub mod network;
pub mod network_setup;
pub mod reference;
pub mod registry;
pub mod seccomp;
pub mod spec;
pub mod store;
pub mod volume;
