//! Errors of the journal crate: each names the file, and the offset or the
//! field it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt at offset {offset:#x}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("field {field:?}: {what}")]
    InvalidField { field: String, what: &'static str },
    #[error("{path}: the file is full")]
    FileFull { path: PathBuf },
    #[error("{0}")]
    Query(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { path, source }
}
