//! Basalt's container engine: pulls OCI and Docker images from registries into a
//! content-addressed store, unpacks their layers safely, and runs containers with crun.
//! See `ENGINE.md` beside this crate for the on-disk layout and the security notes.

pub mod api;
pub mod archive;
pub mod auth;
pub mod cgroups;
pub mod cli;
pub mod client;
pub mod commit;
pub mod console;
pub mod container;
pub mod daemon;
pub mod digest;
pub mod extract;
pub mod fsutil;
pub mod journal_send;
pub mod lifecycle;
pub mod logfile;
pub mod media;
pub mod monitor;
pub mod network;
pub mod network_setup;
pub mod records;
pub mod reference;
pub mod registry;
pub mod seccomp;
pub mod spec;
pub mod store;
pub mod timefmt;
pub mod volume;
