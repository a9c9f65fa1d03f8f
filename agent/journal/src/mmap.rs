//! A minimal memory map of a whole file, read-only or shared writable.

use std::fs::File;
use std::os::fd::AsRawFd;

/// A mapping of the first `len` bytes of a file. Accesses are bounded by
/// `len`, so a reader never touches past what the file had when mapped.
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value; shared access only reads.
unsafe impl Send for Mmap {}
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Map `len` bytes of `file`; `writable` maps it shared and writable.
    pub fn map(file: &File, len: usize, writable: bool) -> std::io::Result<Self> {
        if len == 0 {
            return Ok(Self::empty());
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping of an open descriptor; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// A mapping of nothing, to be replaced by a real one.
    pub fn empty() -> Self {
        Self {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Only for mappings made with `writable`.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and the mapping is writable and owned uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Drop the pages of `len` bytes at `offset` (page-aligned, as the
    /// writer's chunks are) from this process's resident set without
    /// unmapping them (`MADV_DONTNEED`). For a shared file mapping nothing
    /// is lost: written pages stay in the page cache (dirty until written
    /// back), and the next access maps them again.
    pub fn release(&self, range: (u64, u64)) -> std::io::Result<()> {
        self.advise(range, libc::MADV_DONTNEED)
    }

    fn advise(&self, (offset, len): (u64, u64), advice: libc::c_int) -> std::io::Result<()> {
        if len == 0 || offset + len > self.len as u64 {
            return Ok(());
        }
        // SAFETY: the range lies inside the mapping, which stays valid.
        let rc =
            unsafe { libc::madvise(self.ptr.add(offset as usize).cast(), len as usize, advice) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Map the pages of `len` bytes at `offset` (page-aligned) writable
    /// now, as a write to each would (`MADV_POPULATE_WRITE`), reading any
    /// not in the page cache; no other page is mapped.
    pub fn populate_write(&self, (offset, len): (u64, u64)) -> std::io::Result<()> {
        self.advise((offset, len), libc::MADV_POPULATE_WRITE)
    }

    /// Flush the mapped pages to the file (`msync`).
    pub fn flush(&self) -> std::io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: the range is exactly the mapping.
        let rc = unsafe { libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping the mapping this value owns.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}
