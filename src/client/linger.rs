//! `--linger`: how long a server that owes nothing has to close; and what
//! a quiet spell decides ([`quiet`]), `--linger` or `--timeout`.

use std::time::{Duration, Instant};

use super::verify::Outstanding;
use crate::error::{Error, Result};

/// `--linger` when not given: long enough for any server to close after
/// its last echo, short enough that a script barely notices one that never
/// does.
pub(crate) const DEFAULT_LINGER: &str = "2s";

/// `--linger`: after the input ended, how long the server has to close
/// once it owes nothing (every byte echoed; with `--no-verify`, nothing
/// arriving). Pure: the caller passes the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    limit: Duration,
    /// When the input ended (normally: a read error is reported instead).
    ended: Option<Instant>,
    /// When the last byte came from the server.
    last_byte: Option<Instant>,
}

impl Linger {
    pub(crate) fn new(limit: Duration) -> Linger {
        Linger {
            limit,
            ended: None,
            last_byte: None,
        }
    }

    pub(crate) fn input_ended(&mut self, now: Instant) {
        self.ended = Some(now);
    }

    pub(crate) fn byte_came(&mut self, now: Instant) {
        self.last_byte = Some(now);
    }

    /// True when the client should stop waiting for the server's close:
    /// the input ended, nothing is `owed`, and neither the end nor a byte
    /// came within the limit.
    pub(crate) fn over(&self, owed: bool, now: Instant) -> bool {
        let Some(ended) = self.ended else {
            return false;
        };
        let quiet_since = self.last_byte.map_or(ended, |b| b.max(ended));
        !owed && now.saturating_duration_since(quiet_since) >= self.limit
    }

    /// The warning printed when the client leaves such a server.
    pub(crate) fn warning(&self, verify: bool, echoed: u64) -> String {
        let after = self.limit.as_secs_f64();
        if verify {
            format!(
                "netecho: warning: all {echoed} bytes sent came back, but the server did not \
                 close the connection within {after} s (--linger) of the end of input; closing it"
            )
        } else {
            format!(
                "netecho: warning: nothing came from the server for {after} s (--linger) \
                 after the end of input, and it did not close the connection; closing it"
            )
        }
    }
}

/// What a quiet spell (no echo for a poll slice) decides, in the plain
/// and the TLS loop alike: a server that owes nothing and has not closed
/// within `--linger` of the end of input is left with a warning
/// (`Some(Ok)`); bytes outstanding since `since` with no echo for
/// `--timeout` end the run (`Some(Err)`); else the loop waits on (`None`).
pub(super) fn quiet(
    verify: bool,
    out: &Outstanding,
    since: Instant,
    linger: &Linger,
    timeout: Duration,
    sent: u64,
) -> Option<Result<()>> {
    let now = Instant::now();
    if linger.over(out.len() > 0, now) {
        eprintln!("{}", linger.warning(verify, out.echoed()));
        return Some(Ok(()));
    }
    if verify && out.len() > 0 && now.saturating_duration_since(since) >= timeout {
        return Some(Err(Error::NoEcho {
            after: timeout,
            received: out.echoed(),
            sent,
        }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn over_only_after_the_input_ended_nothing_owed_and_a_quiet_limit() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * S);
        assert!(!l.over(false, t0 + 10 * S), "input still open");
        l.input_ended(t0);
        assert!(!l.over(false, t0 + S));
        assert!(l.over(false, t0 + 2 * S));
        assert!(!l.over(true, t0 + 10 * S), "bytes owed: --timeout's case");
        l.byte_came(t0 + 3 * S);
        assert!(!l.over(false, t0 + 4 * S), "a byte restarts the wait");
        assert!(l.over(false, t0 + 5 * S));
        assert!(
            !Linger::new(Duration::ZERO).over(false, t0),
            "input still open"
        );
    }
}
