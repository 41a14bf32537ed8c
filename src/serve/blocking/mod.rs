//! The blocking models' share: [`accept`] the accept step (poll, limits,
//! EMFILE) and [`echo`] the read/write loop that keeps the contract;
//! [`faulted`] the loop of a connection with faults, in every model;
//! [`inetd`] one client on stdin/stdout, through the same loop.

pub(crate) mod accept;
pub(crate) mod echo;
pub(crate) mod faulted;
pub(crate) mod inetd;
