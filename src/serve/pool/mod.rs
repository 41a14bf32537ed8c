//! The growing pools of prefork and prethread: [`sizing`] how many
//! workers to start or retire (a pure policy, in `netecho-core`), [`scoreboard`] what each
//! worker is doing, in shared memory.

pub(crate) mod scoreboard;

pub(crate) use netecho_core::sizing;
