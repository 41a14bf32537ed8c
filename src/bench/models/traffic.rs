//! What a traffic workload measured: the figures a cell and a floor
//! (the baselines without a server) both give, apart from either so that
//! neither imports the other.

/// Figures of a [`super::workload::Shape::Traffic`] workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Traffic {
    /// Requests completed per second in the window.
    pub(crate) req_s: f64,
    /// Echoed megabytes (10^6, one direction) per second.
    pub(crate) mb_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    /// Server CPU per request, microseconds.
    pub(crate) cpu_us: f64,
    /// The whole machine's busy CPU per request (every core, the load
    /// generator included), microseconds: work the server only moved to its
    /// peer shows in `cpu_us` and not here.
    pub(crate) machine_us: f64,
}
