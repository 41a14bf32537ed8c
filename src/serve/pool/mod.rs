//! The growing pools of prefork and prethread: [`sizing`] how many
//! workers to start or retire (pure policy), [`scoreboard`] what each
//! worker is doing, in shared memory.

pub(crate) mod scoreboard;
pub(crate) mod sizing;
