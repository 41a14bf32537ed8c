//! `netecho lab`: being written.

use clap::Args;

use crate::error::Result;

/// Options of `netecho lab`.
#[derive(Debug, Args)]
pub struct Opt {}

/// Runs `netecho lab`.
pub fn run(_opt: Opt) -> Result<()> {
    Ok(())
}
