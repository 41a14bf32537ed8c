//! Placeholder: the model benchmark is being written.
fn main() {}
