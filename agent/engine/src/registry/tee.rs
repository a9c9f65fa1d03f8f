//! Teeing a download into a concurrent, blocking layer extraction.

/// Chunks of a download on their way to a concurrent extraction.
pub(super) type Tee = tokio::sync::mpsc::Sender<bytes::Bytes>;
pub(super) const TEE_CHUNKS: usize = 64;

/// The blocking end of a [`Tee`].
pub(super) struct ChannelReader {
    pub(super) rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    pub(super) cur: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}
