//! Reading the server's `/metrics` page.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Fetches the server's `/metrics` page (answered 200), whole.
pub fn scrape(metrics: SocketAddr) -> String {
    let mut s =
        TcpStream::connect_timeout(&metrics, Duration::from_secs(5)).expect("metrics connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).expect("reading /metrics");
    assert!(page.starts_with("HTTP/1.1 200"), "bad answer: {page}");
    page
}

/// The value of the sample line `name` (with its labels) on a metrics
/// page, if it has one.
pub fn sample(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Fetches `/metrics` and returns the value of the sample line `name`;
/// fails the test when there is none.
pub fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let page = scrape(metrics);
    sample(&page, name).unwrap_or_else(|| panic!("no sample {name} in:\n{page}"))
}
