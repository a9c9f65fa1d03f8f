//! The control socket between `basaltctl` and PID 1.

pub mod client;
pub mod protocol;
pub mod server;
