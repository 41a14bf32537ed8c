//! The UDP faults as decisions: what becomes of one datagram (dropped,
//! truncated, held, sent twice), with the random source passed in. The UDP
//! loop performs the answer, holding delayed copies until they are due.

use std::time::Duration;

use super::{DEFAULT_REORDER_DELAY, Effects, Kind, Rng, roll};

/// One echo of a datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// How long to hold it from the datagram's arrival.
    pub delay: Duration,
    /// How many bytes of the datagram to send back.
    pub len: usize,
}

/// What becomes of one datagram: its echoes (none when dropped, two when
/// duplicated) and the faults that made it so, to count and log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fate {
    pub copies: Vec<Copy>,
    pub applied: Vec<Kind>,
}

/// Decides the fate of a datagram of `len` bytes under `e`.
pub fn decide(e: &Effects, len: usize, rng: &mut Rng) -> Fate {
    let mut fate = Fate::default();
    let hit = |p: Option<f64>, rng: &mut Rng| p.is_some_and(|p| p > 0.0 && roll(rng) < p);
    if hit(e.drop, rng) {
        fate.applied.push(Kind::Drop);
        return fate;
    }
    let mut copy = Copy {
        delay: Duration::ZERO,
        len,
    };
    if let Some(t) = e.truncate.filter(|t| *t < len) {
        copy.len = t;
        fate.applied.push(Kind::Truncate);
    }
    if let Some(hold) = e.hold(rng) {
        copy.delay = hold;
        fate.applied.push(Kind::Latency);
    }
    if hit(e.reorder, rng) {
        copy.delay += e.reorder_delay.unwrap_or(DEFAULT_REORDER_DELAY);
        fate.applied.push(Kind::Reorder);
    }
    fate.copies.push(copy);
    if hit(e.duplicate, rng) {
        fate.copies.push(copy);
        fate.applied.push(Kind::Duplicate);
    }
    fate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Fault, rng};

    fn effects(spec: &str) -> Effects {
        Fault::parse(spec).unwrap().effects
    }

    #[test]
    fn drop_half_stays_in_a_six_sigma_band() {
        let e = effects("drop=50%");
        let mut r = rng(1);
        let n = 10_000;
        let dropped = (0..n)
            .filter(|_| decide(&e, 64, &mut r).copies.is_empty())
            .count();
        // Binomial(10000, 0.5): sd = 50.
        assert!(
            (4_700..=5_300).contains(&dropped),
            "{dropped} of {n} dropped"
        );
    }

    #[test]
    fn duplicate_truncate_and_reorder_shape_the_copies() {
        let mut r = rng(2);
        let f = decide(&effects("duplicate=100%,truncate=32"), 100, &mut r);
        assert_eq!(
            f.copies,
            vec![
                Copy {
                    delay: Duration::ZERO,
                    len: 32
                };
                2
            ]
        );
        assert_eq!(f.applied, [Kind::Truncate, Kind::Duplicate]);
        let f = decide(&effects("truncate=32"), 10, &mut r);
        assert_eq!(f.copies[0].len, 10);
        assert!(f.applied.is_empty());
        let f = decide(&effects("reorder=100%,reorder-delay=20ms"), 10, &mut r);
        assert_eq!(f.copies[0].delay, Duration::from_millis(20));
        let f = decide(&effects("latency=50ms,jitter=10ms"), 10, &mut r);
        let d = f.copies[0].delay;
        assert!(
            d >= Duration::from_millis(40) && d <= Duration::from_millis(60),
            "{d:?}"
        );
    }
}
