//! Memory shared with forked children: the counters and the pool's
//! scoreboard live in anonymous shared mappings made here.

use std::io;
use std::num::NonZeroUsize;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

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
