//! The blocking models' share: [`accept`] the accept step (poll, limits,
//! EMFILE) and [`echo`] the read/write loop that keeps the contract;
//! [`faulted`] the loop of a connection with faults, in every model;
//! [`inetd`] one client on stdin/stdout, through the same loop; [`wire`]
//! what those loops read and write on, and the one wait for send room.

pub(crate) mod accept;
pub(crate) mod echo;
pub(crate) mod faulted;
pub(crate) mod inetd;
pub(crate) mod wire;
