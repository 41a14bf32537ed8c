//! `netecho watch`: being written.

use clap::Args;

use crate::error::Result;

/// Options of `netecho watch`.
#[derive(Debug, Args)]
pub struct Opt {}

/// Runs `netecho watch`.
pub fn run(_opt: Opt) -> Result<()> {
    Ok(())
}
