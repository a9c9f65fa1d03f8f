//! The API connection under hyper, with its read side available to a handler.
//!
//! Docker's attach reads the client's input from the request's own connection
//! after the response headers, also when the client did not ask for `Upgrade:
//! tcp` (the response is then a plain 200). hyper hands over a connection only
//! on an upgrade, so the daemon serves each connection through [`ConnIo`], and a
//! handler can take its read half ([`ConnInput::take`]): from then on hyper reads
//! nothing more from it (its reads stay pending), while the response goes out
//! through hyper as usual. Such a response must close the connection when done.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// The read half of a connection, until a handler takes it. Each request of the
/// connection carries it as an extension.
#[derive(Clone)]
pub struct ConnInput(Arc<Mutex<Option<OwnedReadHalf>>>);

impl ConnInput {
    /// The connection's input from here on; `None` once taken.
    pub fn take(&self) -> Option<OwnedReadHalf> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What hyper reads from and writes to.
pub struct ConnIo {
    input: ConnInput,
    output: OwnedWriteHalf,
}

impl ConnIo {
    pub fn new(stream: UnixStream) -> (Self, ConnInput) {
        let (r, w) = stream.into_split();
        let input = ConnInput(Arc::new(Mutex::new(Some(r))));
        (
            Self {
                input: input.clone(),
                output: w,
            },
            input,
        )
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut r = self.input.0.lock().unwrap_or_else(|e| e.into_inner());
        match r.as_mut() {
            Some(r) => Pin::new(r).poll_read(cx, buf),
            // Taken by a handler: hyper's next request never comes; the
            // response that took it closes the connection.
            None => Poll::Pending,
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.output).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_shutdown(cx)
    }
}
