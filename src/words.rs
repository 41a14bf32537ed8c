//! Counts in words for what users read: `1 probe`, `2 probes`. Imports
//! nothing of the crate, so any subcommand may use it.

/// `one` for exactly one, else `many`: `noun(n, "probe", "probes")`.
pub(crate) fn noun<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// `n` and its noun: `count(1, "probe", "probes")` is `1 probe`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", noun(n, one, many))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(0, "probe", "probes"), "0 probes");
        assert_eq!(count(1, "probe", "probes"), "1 probe");
        assert_eq!(count(2, "echo", "echoes"), "2 echoes");
    }
}
