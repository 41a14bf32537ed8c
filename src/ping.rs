//! `netecho ping`: being written.

use clap::Args;

use crate::error::Result;

/// Options of `netecho ping`.
#[derive(Debug, Args)]
pub struct Opt {}

/// Runs `netecho ping`.
pub fn run(_opt: Opt) -> Result<()> {
    Ok(())
}
