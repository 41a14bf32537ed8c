//! Operating-system helpers shared by the subcommands: the Ctrl-C flag
//! ([`stop`]), the descriptor limit, and what `/proc` says about a process
//! ([`proc`]), socket options std does not wrap ([`sockopt`]), poll(2)'s
//! timeout for a wait ([`poll_timeout`]).
//!
//! This module imports nothing else of the crate. (The server's own signal
//! handling, with its wake-up pipe, lives in `serve::signals`.)

pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod sockopt;
pub(crate) mod stop;

/// Raises the soft descriptor limit to the hard one: a server holding
/// thousands of sockets (or a bench opening them) should not fail at 1024
/// because of a shell default. Returns the limits (soft, hard) in force
/// afterwards; (0, 0) if unreadable.
pub(crate) fn raise_nofile_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => (hard, hard),
            Err(_) => (soft, hard),
        },
        Ok(limits) => limits,
        Err(_) => (0, 0),
    }
}

/// poll(2)'s timeout for a wait of `wait` (`None`: for ever). Rounded up to
/// the millisecond: waking a little late is harmless, waking early finds
/// nothing due and spins; a wait past poll's i32 of milliseconds (about 24
/// days) is cut to it, and the caller simply polls again.
pub(crate) fn poll_timeout(wait: Option<std::time::Duration>) -> nix::poll::PollTimeout {
    use nix::poll::PollTimeout;
    wait.map_or(PollTimeout::NONE, |d| {
        let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::poll::PollTimeout;

    use super::poll_timeout;

    #[test]
    fn poll_timeouts_round_up_and_saturate() {
        let ms = |t: PollTimeout| t.as_millis();
        assert_eq!(poll_timeout(None), PollTimeout::NONE);
        assert_eq!(ms(poll_timeout(Some(Duration::ZERO))), Some(0));
        assert_eq!(ms(poll_timeout(Some(Duration::from_micros(1)))), Some(1));
        assert_eq!(ms(poll_timeout(Some(Duration::from_micros(1500)))), Some(2));
        assert_eq!(ms(poll_timeout(Some(Duration::from_secs(2)))), Some(2000));
        assert_eq!(poll_timeout(Some(Duration::MAX)), PollTimeout::MAX);
    }
}
