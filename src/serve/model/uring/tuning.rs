//! The numbers a worker runs by: ring and buffer sizes (tunable from the
//! environment, for tests), pauses, and the probe's throw-away sizes.

use std::time::Duration;

/// Environment variable: provided buffers per worker ring.
pub(crate) const BUFS_ENV: &str = "NETECHO_URING_BUFS";
/// Environment variable: bytes per provided buffer.
pub(crate) const BUF_SIZE_ENV: &str = "NETECHO_URING_BUF_SIZE";
/// Buffers per worker ring: with [`DEFAULT_BUF_SIZE`], 4 MiB per worker.
/// The ring is recycled in order, so all of it is touched under load, and
/// it is populated at start (`bufs.rs`): a bigger ring is resident memory
/// per worker from the first second.
pub(crate) const DEFAULT_BUFS: u16 = 64;
/// Bytes per buffer: a 64 KiB message arrives in one completion and goes
/// back in one send. Measured with `cargo bench --bench models` (64 KiB × 8
/// connections, server CPU per request against C epoll in the same run):
/// 16 KiB buffers cost 1.60–1.80×, 64 KiB buffers 1.04–1.16×, with no change
/// for 64 B messages.
pub(crate) const DEFAULT_BUF_SIZE: u32 = 64 * 1024;
/// The kernel's limit on entries in a provided-buffer ring.
pub(super) const MAX_BUFS: u32 = 32768;
/// Larger buffers would only make one connection pin more memory.
pub(super) const MAX_BUF_SIZE: u32 = 1 << 20;
/// Unsent echo a connection may hold before its receive is paused: the same
/// bound the blocking models keep with their single buffer.
pub(super) const HELD_BYTES: usize = crate::serve::contract::BUF_SIZE;

/// Submission queue entries per ring; a burst beyond it waits in a backlog.
pub(super) const RING_ENTRIES: u32 = 1024;
/// Completion queue entries per submission entry: multishot requests post
/// many completions each, and an overflow costs the kernel extra work.
pub(super) const CQ_FACTOR: u32 = 4;
/// The longest a worker sleeps in the kernel: how late it may notice the stop
/// flag, an idle connection or the end of an accept pause.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// Accept pause after an error that is neither a resource shortage nor a
/// known transient: short, but never a busy loop.
pub(super) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long a leaving worker waits for the kernel to finish cancelled
/// requests before it gives up and leaks the buffer memory instead.
pub(super) const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Pause after the kernel refused to enter (EAGAIN: no memory for now).
pub(super) const ENTER_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Buffer group id of a worker's provided-buffer ring (one ring per io_uring).
pub(super) const BGID: u16 = 0;

/// Probe: entries of the throw-away ring.
pub(super) const PROBE_ENTRIES: u32 = 8;
/// Probe: buffers and their size in the throw-away buffer ring.
pub(super) const PROBE_BUFS: u16 = 2;
pub(super) const PROBE_BUF_SIZE: u32 = 64;
/// Probe: how long to wait for each expected completion.
pub(super) const PROBE_WAIT: Duration = Duration::from_secs(1);

/// The sizes of a worker's provided-buffer ring, from the environment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    /// Buffers in the ring, a power of two.
    pub(super) bufs: u16,
    /// Bytes per buffer.
    pub(super) buf_size: u32,
}

impl Tuning {
    /// Reads [`BUFS_ENV`] and [`BUF_SIZE_ENV`]; a bad value is an error, not
    /// a silent default, so a test never runs with sizes it did not ask for.
    pub(super) fn from_env() -> Result<Tuning, String> {
        let bufs = env_u32(BUFS_ENV)?.unwrap_or(u32::from(DEFAULT_BUFS));
        if !bufs.is_power_of_two() || bufs > MAX_BUFS {
            return Err(format!(
                "{BUFS_ENV}={bufs}: must be a power of two from 1 to {MAX_BUFS}"
            ));
        }
        let buf_size = env_u32(BUF_SIZE_ENV)?.unwrap_or(DEFAULT_BUF_SIZE);
        if buf_size == 0 || buf_size > MAX_BUF_SIZE {
            return Err(format!(
                "{BUF_SIZE_ENV}={buf_size}: must be from 1 to {MAX_BUF_SIZE}"
            ));
        }
        let bufs = u16::try_from(bufs).map_err(|_| format!("{BUFS_ENV}={bufs}: too large"))?;
        Ok(Tuning { bufs, buf_size })
    }

    /// Buffers one connection may hold before its receive is paused, on top
    /// of the [`HELD_BYTES`] limit on the bytes in them: never more than half
    /// the ring, so that one client that stops reading cannot take every
    /// buffer by itself, and at least two, so that a message that arrived in
    /// two pieces is not a reason to pause.
    pub(super) fn held_cap(self) -> usize {
        let by_bytes = HELD_BYTES.div_ceil(self.buf_size as usize);
        let by_ring = (usize::from(self.bufs) / 2).max(1);
        by_bytes.max(2).min(by_ring)
    }
}

/// Parses one optional numeric environment variable.
fn env_u32(name: &str) -> Result<Option<u32>, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{name}: {e}")),
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={s:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_cap_is_about_one_echo_buffer_and_at_most_half_the_ring() {
        let t = |bufs, buf_size| Tuning { bufs, buf_size }.held_cap();
        assert_eq!(t(256, 16 * 1024), 4);
        assert_eq!(t(64, 64 * 1024), 2);
        assert_eq!(t(256, 1 << 20), 2);
        assert_eq!(t(4, 1024), 2);
        assert_eq!(t(1, 1024), 1);
    }
}
