//! `netecho trace`: being written.

use clap::Args;

use crate::error::Result;

/// Options of `netecho trace`.
#[derive(Debug, Args)]
pub struct Opt {}

/// Runs `netecho trace`.
pub fn run(_opt: Opt) -> Result<()> {
    Ok(())
}
