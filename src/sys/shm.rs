//! Memory shared with forked children: the counters and the pool's
//! scoreboard live in shared mappings made here (the counters in a memfd,
//! so that a SIGHUP hand-over can pass them to the new process).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous};
use nix::unistd::ftruncate;

/// `n` zeroed values of `T` in an anonymous shared mapping, for the life of
/// the process and of every process forked from it.
///
/// # Safety
/// `T` must be valid when all-zero (atomics and arrays of them).
pub(crate) unsafe fn shared_zeroed<T>(n: usize) -> io::Result<&'static [T]> {
    let bytes = std::mem::size_of::<T>().max(1) * n.max(1);
    let len = NonZeroUsize::new(bytes).expect("at least one byte");
    // SAFETY: a fresh anonymous mapping overlaps nothing; it is zero-filled
    // and page-aligned, which satisfies `T`'s alignment and (by the
    // caller's promise) validity, and it is never unmapped, so the
    // `'static` slice stays valid here and in every fork.
    unsafe {
        let p = mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )?;
        Ok(std::slice::from_raw_parts(p.as_ptr() as *const T, n))
    }
}

/// One zeroed `T` in a shared mapping of a memfd, for the life of the
/// process and of every process forked from it, and the memfd (close-on-exec)
/// to pass to another process, which maps the same memory with
/// [`map_passed`].
///
/// # Safety
/// As [`shared_zeroed`]: `T` must be valid when all-zero.
pub(crate) unsafe fn shared_memfd_zeroed<T>(name: &str) -> io::Result<(&'static T, OwnedFd)> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
    let len = std::mem::size_of::<T>().max(1);
    ftruncate(&fd, len as libc::off_t)?;
    // SAFETY: the memfd was just truncated from 0 to `len`, so it is
    // zero-filled; the caller vouches that zero is a valid `T`.
    let t = unsafe { map_fd::<T>(&fd) }?;
    Ok((t, fd))
}

/// Maps the `T` another process made with [`shared_memfd_zeroed`] and
/// passed as `fd`, for the life of this process. Fails unless the file is
/// exactly one `T` long.
///
/// # Safety
/// Every bit pattern the other process may have stored must be a valid `T`
/// (the caller checks what says so, such as a layout word, through a raw
/// pointer first).
pub(crate) unsafe fn map_passed<T>(fd: &OwnedFd) -> io::Result<&'static T> {
    let size = nix::sys::stat::fstat(fd)?.st_size;
    if size != std::mem::size_of::<T>() as libc::off_t {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{size} bytes, not {}", std::mem::size_of::<T>()),
        ));
    }
    // SAFETY: the length matches; validity is the caller's promise.
    unsafe { map_fd::<T>(fd) }
}

/// # Safety
/// `fd` holds at least one `T`, valid as it is.
unsafe fn map_fd<T>(fd: &OwnedFd) -> io::Result<&'static T> {
    let len = NonZeroUsize::new(std::mem::size_of::<T>().max(1)).expect("at least one byte");
    // SAFETY: a new shared mapping of the file overlaps nothing and is
    // page-aligned (enough for `T`); it is never unmapped, so the
    // `'static` reference stays valid here and in every fork, whatever
    // becomes of the descriptor.
    unsafe {
        let p = mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )?;
        Ok(&*(p.as_ptr() as *const T))
    }
}
