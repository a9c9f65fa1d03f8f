//! `basalt-update`: the host side of Basalt's atomic upgrades.
//!
//! A dynamically linked companion of the static agent: it links libostree
//! to pull signed commits (static deltas when the remote has them), deploy
//! them with the `/etc` three-way merge, and keep the boot entries on the
//! ESP in step with the sysroot's deployments. `basaltctl` forwards its
//! update verbs here.

pub mod cli;
pub mod daemon;
pub mod esp;
pub mod fleetlock;
pub mod host;
pub mod ops;
pub mod remote;
pub mod status;

/// What `basalt-update` fails with inside; `anyhow` adds context at the edge.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    // The causes are in the messages, not `source`s: `{:#}` would print them twice.
    #[error("{what}: {error}")]
    Ostree {
        what: String,
        error: ostree::glib::Error,
    },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}")]
    Refused(String),
}

/// Wraps a libostree error with what was being done.
pub fn gerr(what: impl Into<String>) -> impl FnOnce(ostree::glib::Error) -> UpdateError {
    let what = what.into();
    move |error| UpdateError::Ostree { what, error }
}

/// Wraps an I/O error with the path it is about.
pub fn ioerr(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> UpdateError + '_ {
    move |error| UpdateError::Io {
        path: path.display().to_string(),
        error,
    }
}
