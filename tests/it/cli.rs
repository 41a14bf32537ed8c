//! The command line across subcommands as a newcomer meets it: `serve -4`/`-6`
//! as client and ping have them, and the faults a user sweep found.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::util::{Server, assert_refused, ipv6_available, round_trip};

/// A refusal comes long before this.
const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn serve_dash_4_keeps_the_ipv4_addresses_of_a_name() {
    let server = Server::start_on("auto", &["localhost:0"], &["-4"]);
    assert!(
        server.addrs.iter().all(SocketAddr::is_ipv4),
        "serve -4 --listen localhost:0 listens on {:?}",
        server.addrs
    );
    round_trip(server.addrs[0], b"four", 4).unwrap();
}

#[test]
fn serve_dash_6_keeps_the_ipv6_addresses_of_a_name_or_says_there_are_none() {
    let has_v6 = ("localhost", 0)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|a| a.is_ipv6()));
    if !has_v6 || !ipv6_available() {
        let run = assert_refused(&["serve", "-6", "--listen", "localhost:0"], LIMIT);
        run.assert_code(
            2,
            "serve -6 --listen localhost:0 (localhost has no IPv6 address)",
        );
        assert!(
            run.stderr
                .contains("only IPv4 addresses, and -6 asks for IPv6"),
            "{}",
            run.stderr
        );
        return;
    }
    let server = Server::start_on("auto", &["localhost:0"], &["-6"]);
    assert!(
        server.addrs.iter().all(SocketAddr::is_ipv6),
        "serve -6 --listen localhost:0 listens on {:?}",
        server.addrs
    );
}

#[test]
fn serve_dash_6_on_the_wildcard_refuses_ipv4_clients() {
    if !ipv6_available() {
        eprintln!("SKIPPED: no IPv6 on loopback");
        return;
    }
    let server = Server::start_on("epoll", &["[::]:0"], &["-6"]);
    let port = server.addr().port();
    round_trip(
        SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
        b"six",
        6,
    )
    .unwrap();
    let v4 = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), LIMIT);
    assert!(
        v4.is_err(),
        "serve -6 --listen [::]:{port} accepted an IPv4 client"
    );
    // Without -6 the same socket is dual-stack: the IPv4 client gets in.
    let dual = Server::start_on("epoll", &["[::]:0"], &[]);
    round_trip(
        SocketAddr::from(([127, 0, 0, 1], dual.addr().port())),
        b"4",
        7,
    )
    .unwrap();
}

#[test]
fn serve_family_contradicting_an_address_is_a_usage_error() {
    for (args, says) in [
        (
            &["serve", "-4", "--listen", "[::1]:0"][..],
            "--listen [::1]:0 is an IPv6 address, and -4 asks for IPv4",
        ),
        (
            &["serve", "-6", "--listen", "127.0.0.1:0"][..],
            "--listen 127.0.0.1:0 is an IPv4 address, and -6 asks for IPv6",
        ),
        (
            &["serve", "-6", "--tls-listen", "127.0.0.1:0"][..],
            "--tls-listen 127.0.0.1:0 is an IPv4 address",
        ),
        (&["serve", "-4", "-6"][..], "cannot be used with"),
    ] {
        let run = assert_refused(args, LIMIT);
        run.assert_code(2, &args.join(" "));
        assert!(
            run.stderr.contains(says),
            "{}: {}",
            args.join(" "),
            run.stderr
        );
    }
}
