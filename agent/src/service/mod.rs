//! Service supervision: unit files, dependency ordering, the supervisor's
//! state machine, and the Linux side (processes, cgroups, logs, readiness).
//!
//! [`supervisor::Supervisor`] decides; [`host::ServiceHost`] acts. PID 1's
//! event loop ([`crate::init::runtime`]) feeds it reaped children, notify
//! messages, control requests and timer ticks.

pub mod backoff;
pub mod cgroup;
pub mod exec;
pub mod graph;
pub mod host;
pub mod journalsink;
pub mod linux;
pub mod load;
pub mod logsink;
pub mod notify;
pub mod supervisor;
pub mod unit;

pub use supervisor::{Notice, State, Supervisor};
