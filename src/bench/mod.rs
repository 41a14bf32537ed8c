//! `netecho bench`: being written.

use clap::Args;

use crate::error::Result;

/// Options of `netecho bench`.
#[derive(Debug, Args)]
pub struct Opt {}

/// Runs `netecho bench`.
pub fn run(_opt: Opt) -> Result<()> {
    Ok(())
}
