//! The service around the echo: [`listen`] binds the sockets and prints the
//! `listening` lines (and parses them back); [`stats`] the counters, in
//! memory shared with forked children, with [`per_ip`] and [`percpu`];
//! [`draining`] the clients older processes still serve after a SIGHUP
//! hand-over, counted toward the limits;
//! [`metrics`] Prometheus; [`faults`] the faults applied on purpose; [`udp`]
//! UDP echo; [`sidecar`] the process that serves UDP and metrics;
//! [`inspect`] the port that reports what the path did to a connection.

pub(crate) mod draining;
pub(crate) mod faults;
pub(crate) mod inspect;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod per_ip;
pub(crate) mod percpu;
pub(crate) mod sidecar;
pub(crate) mod stats;
pub(crate) mod udp;
