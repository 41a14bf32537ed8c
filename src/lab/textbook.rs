//! placeholder
use crate::error::Result;
/// Runs the scenario.
pub(crate) fn run() -> Result<()> {
    super::conclusion("not written yet")
}
