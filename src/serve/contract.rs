//! The connection core, as the models import it: the echo contract, its
//! stores and its timer rule live in the `netecho-core` crate (no I/O, the
//! compiler keeps it so); this module names them where the models look.

pub(crate) use netecho_core::contract::*;
pub(crate) use netecho_core::{in_place, pending, timers};
