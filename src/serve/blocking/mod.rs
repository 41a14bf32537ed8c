//! The blocking models' share: [`accept`] the accept step (poll, limits,
//! EMFILE) and [`echo`] the read/write loop that keeps the contract.

pub(crate) mod accept;
pub(crate) mod echo;
