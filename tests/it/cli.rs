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
        skipped!("SKIPPED: no IPv6 on loopback");
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

/// A client that sends, reads its echo and resets the connection (SO_LINGER
/// 0): the server's open and close lines must both name it, with the same
/// fields, in every model, also when the socket can no longer say whom it
/// served by the time it closes.
fn open_and_close_lines_name_the_peer(model: &str) {
    let server = Server::start_with(model, &["127.0.0.1:0"], &["--workers", "1"], |c| {
        c.env("NETECHO_LOG", "debug");
    });
    let mut s = crate::util::connect(server.addr());
    let me = s.local_addr().unwrap();
    crate::util::ping(&mut s, b"who am i").unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let lines = |text: &str, what: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(what) && l.contains(&format!("peer={me}")))
            .map(str::to_string)
            .collect()
    };
    let mut closed = Vec::new();
    crate::util::eventually(LIMIT, || {
        closed = lines(&server.stderr_text(), "connection closed");
        !closed.is_empty()
    });
    let text = server.stderr_text();
    let opened = lines(&text, "connection open");
    assert_eq!(opened.len(), 1, "{model}: one open line for {me}:\n{text}");
    assert_eq!(closed.len(), 1, "{model}: one close line for {me}:\n{text}");
    let fields = |l: &str| -> Vec<String> {
        l.split_whitespace()
            .filter_map(|w| w.split_once('=').map(|(k, _)| k.to_string()))
            .collect()
    };
    let mut want = fields(&opened[0]);
    want.push("end".into());
    assert_eq!(
        fields(&closed[0]),
        want,
        "{model}: the close line carries the open line's fields, then end:\n{}\n{}",
        opened[0],
        closed[0]
    );
    assert!(
        !text.contains("peer=unknown") && !text.contains("Some(") && !text.contains("\"fin\""),
        "{model}: {text}"
    );
}

macro_rules! every_model {
    ($($model:ident),*) => {
        mod open_and_close_lines {
            $(
                #[test]
                fn $model() {
                    super::open_and_close_lines_name_the_peer(stringify!($model));
                }
            )*
        }
    };
}

every_model!(
    iterative, fork, thread, prethread, prefork, epoll, tokio, uring
);

/// A usage error is one kind with one exit status (2): the exit-status
/// rule reads `Error::exit_code`, and a second word-only usage variant
/// beside `Usage` (there was `InvalidOption`) is one more place for that
/// rule to drift. Every message it carried is still given, as a `Usage`.
#[test]
fn one_usage_error_variant_of_free_words() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/error.rs"))
        .expect("src/error.rs");
    let body = text
        .split("pub fn exit_code")
        .nth(1)
        .and_then(|t| t.split("\n    }\n").next())
        .expect("Error::exit_code in src/error.rs");
    let usage_arms: Vec<&str> = body
        .lines()
        .filter(|l| l.trim_end().ends_with("=> 2,"))
        .collect();
    // The variants of exit status 2 declared as `Name(String)`.
    let words_only: Vec<&str> = usage_arms
        .iter()
        .flat_map(|l| l.split('|'))
        .filter_map(|v| v.trim().strip_prefix("Error::"))
        .filter_map(|v| v.split(['(', ' ']).next())
        .filter(|name| text.contains(&format!("\n    {name}(String),")))
        .collect();
    assert_eq!(
        words_only,
        ["Usage"],
        "exit status 2 for a message in free words should be Error::Usage alone: {usage_arms:?}"
    );
    for (args, says) in [
        (
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--min-spare",
                "9",
                "--max-spare",
                "2",
            ][..],
            "--min-spare 9 is above --max-spare 2",
        ),
        (
            &["lab", "nosuch"][..],
            "no lab scenario 'nosuch' (there are: ",
        ),
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

/// One is singular wherever a count is printed: `1 probe sent`, not
/// `1 probes sent`.
#[test]
fn one_of_anything_is_singular() {
    let server = Server::start("epoll", &[]);
    let addr = server.addr().to_string();
    let run = crate::util::run_to_end(
        crate::util::netecho(&["ping", &addr, "-c", "1"]),
        None,
        LIMIT,
    );
    run.assert_code(0, "ping -c 1");
    assert!(
        run.stdout_str()
            .contains("\n1 probe sent, 1 received, 0.0% loss"),
        "{}",
        run.stdout_str()
    );
    let run = crate::util::run_to_end(
        crate::util::netecho(&["bench", &addr, "-c", "1", "-n", "1"]),
        None,
        LIMIT,
    );
    run.assert_code(0, "bench -c 1 -n 1");
    let out = run.stdout_str();
    assert!(
        out.contains(", 1 connection, 64 B messages, 1 thread)"),
        "{out}"
    );
    assert!(out.contains("errors    0 (0 mismatches)"), "{out}");
    drop(server);
    let run = crate::util::run_to_end(
        crate::util::netecho(&["ping", &addr, "-c", "1"]),
        None,
        LIMIT,
    );
    run.assert_code(1, "ping -c 1 to a closed port");
    assert!(
        run.stderr
            .starts_with("netecho: 1 of 1 probe failed; first: seq=1: connection refused"),
        "{}",
        run.stderr
    );
    assert!(run.stdout_str().contains("\n1 probe sent, 0 received"));
}

/// `--help` of every subcommand: no line ends in a stray `\` (a string
/// continuation escaped twice), no Rust debug value, exit 0.
#[test]
fn every_help_is_clean_text() {
    let subs = [
        "serve",
        "client",
        "ping",
        "bench",
        "watch",
        "trace",
        "lab",
        "man",
        "completions",
    ];
    for sub in subs {
        let run = crate::util::run_to_end(crate::util::netecho(&[sub, "--help"]), None, LIMIT);
        run.assert_code(0, &format!("{sub} --help"));
        let text = run.stdout_str();
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.trim_end().ends_with('\\') && !line.starts_with('\\'),
                "{sub} --help line {}: {line:?}",
                i + 1
            );
            // A Rust path (`model::Model`), unlike an IPv6 address (`[::1]`).
            let path = line.as_bytes().windows(4).any(|w| {
                w[0].is_ascii_alphabetic() && &w[1..3] == b"::" && w[3].is_ascii_alphabetic()
            });
            assert!(
                !path,
                "{sub} --help line {} names a Rust path: {line}",
                i + 1
            );
            for debug in ["Some(", "None", "Auto"] {
                assert!(
                    !line.contains(debug),
                    "{sub} --help line {} shows {debug:?}: {line}",
                    i + 1
                );
            }
        }
    }
}

/// `bench --json` is one line ending in a newline, on success and on a
/// refused connect alike.
#[test]
fn bench_json_ends_its_line() {
    let server = Server::start("epoll", &[]);
    let addr = server.addr().to_string();
    for (code, target) in [
        (0, addr.clone()),
        (1, crate::util::peers::closed_port().to_string()),
    ] {
        let run = crate::util::run_to_end(
            crate::util::netecho(&["bench", &target, "-c", "1", "-n", "1", "--json"]),
            None,
            LIMIT,
        );
        run.assert_code(code, &format!("bench {target} --json"));
        let out = run.stdout_str();
        assert!(
            out.ends_with("}\n") && out.lines().count() == 1,
            "bench {target} --json: {out:?}"
        );
    }
}
