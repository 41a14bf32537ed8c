//! `netecho trace` capturing a real connection on loopback (needs root for
//! the AF_PACKET socket; prints SKIPPED otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use netecho_core::wire::file::build_pcapng;

use crate::util::{BIN, is_root};

macro_rules! need_root {
    ($name:expr) => {
        if !is_root() {
            skipped!("SKIPPED {}: needs root (CAP_NET_RAW) for AF_PACKET", $name);
            return;
        }
    };
}

/// An echo server on its own thread, serving one connection.
fn echo_once(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    })
}

/// Starts `netecho trace` and waits until its capture is open.
fn start_trace(args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(BIN)
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    out.read_line(&mut header).unwrap();
    assert!(header.starts_with("tracing TCP port"), "header: {header}");
    (child, out)
}

/// One connection: connect, send, half-close first, read the echo.
fn talk(port: u16, host: &str, msg: &[u8]) -> u16 {
    let mut c = TcpStream::connect((host, port)).unwrap();
    let cport = c.local_addr().unwrap().port();
    c.write_all(msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, msg);
    cport
}

/// Waits for exit, at most 10 s (then kills: the test fails on the code).
fn wait(child: &mut Child) -> i32 {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    -1
}

/// Segment lines (notes under them start with `|`, not a timestamp).
fn segments(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|t| t.parse::<f64>().is_ok())
        })
        .collect()
}

/// The number after `key=` in a line.
fn field(line: &str, key: &str) -> u32 {
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    v.parse().unwrap_or_else(|_| panic!("{key}{v} in {line}"))
}

#[test]
fn trace_sees_handshake_and_close_and_writes_a_pcap() {
    need_root!("trace_sees_handshake_and_close_and_writes_a_pcap");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = echo_once(listener);
    let pcap = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("trace-{port}.pcap"));
    let p = port.to_string();
    let (mut child, mut out) = start_trace(&[
        "--port",
        &p,
        "--absolute",
        "--write",
        pcap.to_str().unwrap(),
    ]);

    let cport = talk(port, "127.0.0.1", b"ping\n");
    server.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on the pid of the child we started and still hold.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait(&mut child), 0, "SIGTERM ends trace with exit 0");
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();

    let seg_lines = segments(&text);
    let client = format!("client 127.0.0.1:{cport} -> server 127.0.0.1:{port} ");
    let server = format!("server 127.0.0.1:{port} -> client 127.0.0.1:{cport} ");
    let find = |who: &str, flags: &str| {
        seg_lines
            .iter()
            .find(|l| l.contains(who) && l.split_whitespace().nth(6) == Some(flags))
            .unwrap_or_else(|| panic!("no {flags} from {who} in:\n{text}"))
            .to_string()
    };
    let syn = find(&client, "SYN");
    let synack = find(&server, "SYN-ACK");
    assert_eq!(
        field(&synack, "ack="),
        field(&syn, "seq=").wrapping_add(1),
        "the SYN-ACK acknowledges the SYN's seq + 1"
    );
    let fin_c = seg_lines
        .iter()
        .find(|l| l.contains(&client) && l.contains("FIN"))
        .unwrap_or_else(|| panic!("no client FIN:\n{text}"));
    let fin_s = seg_lines
        .iter()
        .find(|l| l.contains(&server) && l.contains("FIN"))
        .unwrap_or_else(|| panic!("no server FIN:\n{text}"));
    assert_eq!(
        field(fin_s, "ack="),
        field(fin_c, "seq=").wrapping_add(1),
        "the server's FIN comes after it has the client's FIN"
    );
    for note in [
        "handshake 1/3: client SYN seq=J",
        "handshake 2/3: server SYN-ACK seq=K ack=J+1",
        "handshake 3/3: client ACK ack=K+1",
        "close 1/4: client FIN",
        "client stays in TIME-WAIT",
    ] {
        assert!(text.contains(note), "missing {note:?} in:\n{text}");
    }
    // Each segment once: loopback's outgoing copies are dropped.
    let syns = seg_lines
        .iter()
        .filter(|l| l.split_whitespace().nth(6) == Some("SYN"))
        .count();
    assert_eq!(syns, 1, "one SYN line:\n{text}");

    // The pcap: header, then one record per printed segment.
    let bytes = std::fs::read(&pcap).unwrap();
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
    assert!(bytes.len() >= 24);
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "magic");
    assert_eq!(u32_at(20), 1, "LINKTYPE_ETHERNET");
    let mut off = 24;
    let mut records = 0;
    let mut syn_seq_in_file = None;
    while off < bytes.len() {
        let incl = u32_at(off + 8) as usize;
        assert!(u32_at(off + 12) as usize >= incl);
        let frame = &bytes[off + 16..off + 16 + incl];
        assert_eq!(&frame[12..14], &[0x08, 0x00], "IPv4 frame");
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let tcp = &frame[14 + ihl..];
        let (sp, dp) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        assert!(sp == port || dp == port, "only our port in the file");
        if tcp[13] == 0x02 {
            syn_seq_in_file = Some(u32::from_be_bytes(tcp[4..8].try_into().unwrap()));
        }
        off += 16 + incl;
        records += 1;
    }
    assert_eq!(
        off,
        bytes.len(),
        "records end exactly at the end of the file"
    );
    assert_eq!(records, seg_lines.len(), "one record per segment shown");
    assert_eq!(syn_seq_in_file, Some(field(&syn, "seq=")));

    match Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "tcp.flags.str",
        ])
        .output()
    {
        Ok(o) => {
            assert!(o.status.success(), "tshark reads the file");
            let n = String::from_utf8_lossy(&o.stdout).lines().count();
            assert_eq!(n, records, "tshark sees every record");
        }
        Err(_) => skipped!("SKIPPED tshark check: tshark is not installed"),
    }
    let _ = std::fs::remove_file(&pcap);
}

#[test]
fn trace_sees_ipv6_and_stops_after_count() {
    need_root!("trace_sees_ipv6_and_stops_after_count");
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        skipped!("SKIPPED trace_sees_ipv6_and_stops_after_count: no IPv6 loopback");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let server = echo_once(listener);
    let p = port.to_string();
    let (mut child, mut out) = start_trace(&["--port", &p, "--count", "3"]);
    talk(port, "::1", b"x");
    server.join().unwrap();
    assert_eq!(wait(&mut child), 0, "--count ends trace with exit 0");
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    let segs = segments(&text);
    assert_eq!(segs.len(), 3, "{text}");
    assert!(
        segs[0].contains("[::1]:") && segs[0].contains(" SYN "),
        "{text}"
    );
    assert!(
        segs[1].contains(" SYN-ACK ") && segs[1].contains("ack=J+1"),
        "{text}"
    );
    assert!(segs[2].contains("seq=J+1 ack=K+1"), "{text}");
}

#[test]
fn trace_without_cap_net_raw_says_what_is_needed() {
    need_root!("trace_without_cap_net_raw_says_what_is_needed");
    // Drop CAP_NET_RAW from the bounding set: the program runs as root
    // without the capability, like an unprivileged user.
    let o = match Command::new("setpriv")
        .args([
            "--bounding-set",
            "-net_raw",
            "--inh-caps",
            "-net_raw",
            BIN,
            "trace",
            "--count",
            "1",
        ])
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            skipped!("SKIPPED trace_without_cap_net_raw_says_what_is_needed: no setpriv");
            return;
        }
    };
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs CAP_NET_RAW"), "{err}");
}

#[test]
fn trace_refuses_an_unknown_interface() {
    let o = Command::new(BIN)
        .args(["trace", "--iface", "no-such-if0", "--count", "1"])
        .output()
        .unwrap();
    // A flag value checked before the run: a usage error.
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'no-such-if0': no such interface"), "{err}");
}

/// Checks that every tag of `xml` is closed in order (a minimal
/// well-formedness check: no DTD, comments or CDATA are written) and
/// returns the element names in document order.
fn balanced_elements(xml: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("a tag is closed") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "closing tag order");
        } else {
            let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
            names.push(name.to_string());
            if !tag.ends_with('/') {
                stack.push(name.to_string());
            }
        }
        // Text between tags must not hold a bare '&' that is no entity.
        let text = &rest[close + 1..];
        let text = &text[..text.find('<').unwrap_or(text.len())];
        for (i, _) in text.match_indices('&') {
            let t = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| t.starts_with(e)),
                "bare & in {text}"
            );
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    names
}

#[test]
fn trace_svg_draws_one_arrow_per_segment() {
    need_root!("trace_svg_draws_one_arrow_per_segment");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = echo_once(listener);
    let svg = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("trace-{port}.svg"));
    let p = port.to_string();
    let (mut child, mut out) = start_trace(&["--port", &p, "--svg", svg.to_str().unwrap()]);
    talk(port, "127.0.0.1", b"ping\n");
    server.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on the pid of the child we started and still hold.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait(&mut child), 0, "SIGTERM ends trace with exit 0");
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    let n = segments(&text).len();
    assert!(n >= 8, "a whole connection was captured:\n{text}");

    let doc = std::fs::read_to_string(&svg).expect("the SVG file is written");
    let names = balanced_elements(&doc);
    assert_eq!(names.first().map(String::as_str), Some("svg"));
    assert_eq!(
        doc.matches(r#"<line class="seg""#).count(),
        n,
        "one arrow per segment"
    );
    assert!(doc.contains(">SYN seq=J len=0<"), "SYN label:\n{doc}");
    assert!(
        doc.contains(">SYN-ACK seq=K ack=J+1 len=0<"),
        "SYN-ACK label"
    );
    assert!(
        doc.contains(">FIN,ACK seq=J+6 "),
        "the client's FIN after 5 bytes"
    );
    for state in [
        "SYN-SENT",
        "ESTABLISHED",
        "FIN-WAIT-1",
        "TIME-WAIT",
        "LAST-ACK",
    ] {
        assert!(doc.contains(&format!(">{state}</text>")), "{state} written");
    }
    let _ = std::fs::remove_file(&svg);
}

/// The capture committed for the tests and the guide: tcpdump 4.99 on
/// `lo`, port 7001: an echo over TCP from 127.0.0.1, one to 127.0.0.2, a
/// UDP datagram echoed and one that was not.
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/echo.pcap");

/// `netecho trace ARGS`: (exit code, stdout, stderr).
fn trace(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN)
        .arg("trace")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The output without its header and timestamps: what a live trace and a
/// trace of a file of the same packets must share. UDP echo delays and
/// the end-of-run notes are timing, not packets: left out.
fn untimed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("tracing ") && l.get(..11).is_some())
        .map(|l| l[11..].to_string())
        .filter(|l| !l.contains(" UDP ") && !l.starts_with("no echo came back"))
        .collect()
}

/// The records of a classic pcap file (Ethernet, native order,
/// microseconds) in a pcapng file, the layout dumpcap writes
/// ([`build_pcapng`]): tcpdump cannot write pcapng.
fn pcap_to_pcapng(pcap: &[u8]) -> Vec<u8> {
    let u32_at = |o: usize| u32::from_ne_bytes(pcap[o..o + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "a native-order microsecond pcap");
    let mut records = Vec::new();
    let mut off = 24;
    while off < pcap.len() {
        let ns = u64::from(u32_at(off)) * 1_000_000_000 + u64::from(u32_at(off + 4)) * 1000;
        let incl = u32_at(off + 8) as usize;
        records.push((ns, u32_at(off + 12), &pcap[off + 16..off + 16 + incl]));
        off += 16 + incl;
    }
    build_pcapng(1, u32_at(16), records)
}

#[test]
fn trace_read_annotates_a_tcpdump_file() {
    let (code, out, err) = trace(&["-r", SAMPLE]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("tracing TCP port 7001 (and UDP) in "),
        "the port is guessed from the first SYN:\n{out}"
    );
    let segs = segments(&out);
    assert_eq!(
        segs.len(),
        23,
        "20 TCP segments and 3 UDP datagrams:\n{out}"
    );
    for want in [
        "  0.000000 client 127.0.0.1:51898 -> server 127.0.0.1:7001 SYN      seq=J win=65495 len=0",
        "           | client offers: mss 65495, sack_permitted, timestamps, wscale 10",
        "           | handshake 2/3: server SYN-ACK seq=K ack=J+1 (server: SYN-RECEIVED)",
        "           | server offers: mss 65495, sack_permitted, timestamps, wscale 10",
        "           | handshake 3/3: client ACK ack=K+1 (both sides: ESTABLISHED)",
        "           | close 1/4: client FIN seq=J+13 (client: FIN-WAIT-1; it closes first, so it will end in TIME-WAIT)",
        "           | close 4/4: client ACK ack=K+14 (server: CLOSED; client sent the first FIN, so client stays in TIME-WAIT for 2*MSL, 60 s on Linux)",
        "  0.101711 client 127.0.0.1:36624 -> server 127.0.0.1:7001 UDP      len=7",
        "  0.101753 server 127.0.0.1:7001 -> client 127.0.0.1:36624 UDP      len=7 (echo of the client's datagram at 0.101711, back after 42 µs)",
        "no echo came back for the datagram 127.0.0.1:36624 -> 127.0.0.1:7001 at 0.102124 (23 bytes)",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    assert!(err.contains("23 packets"), "{err}");
}

#[test]
fn trace_read_host_keeps_only_that_host() {
    let (code, out, err) = trace(&["-r", SAMPLE, "--host", "127.0.0.2"]);
    assert_eq!(code, Some(0), "{err}");
    let segs = segments(&out);
    assert_eq!(segs.len(), 10, "one connection of 10 segments:\n{out}");
    assert!(
        segs.iter().all(|l| l.contains("127.0.0.2:7001")),
        "every line to or from 127.0.0.2, both directions:\n{out}"
    );
    assert!(segs.iter().any(|l| l.contains("server 127.0.0.2:7001 ->")));
    let (_, out, _) = trace(&["-r", SAMPLE, "--host", "10.9.9.9"]);
    assert!(segments(&out).is_empty(), "{out}");
    // The port filter, the other way round: nothing on another port.
    let (_, out, _) = trace(&["-r", SAMPLE, "--port", "7002"]);
    assert!(segments(&out).is_empty(), "{out}");
}

#[test]
fn trace_read_shows_payload_with_a_and_x() {
    let (code, out, err) = trace(&["-r", SAMPLE, "-A", "--count", "4"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines().any(|l| l == "\thello, echo"),
        "-A shows the data as text:\n{out}"
    );
    let (_, out, _) = trace(&["-r", SAMPLE, "-X", "--host", "127.0.0.2"]);
    assert!(
        out.lines()
            .any(|l| l == "\t0x0000:  4745 5420 2f20 4854 5450 2f31 2e30 0d0a  GET./.HTTP/1.0.."),
        "-X as tcpdump lays it out:\n{out}"
    );
    let (_, out, _) = trace(&["-r", SAMPLE, "-A", "--payload-len", "5", "--count", "4"]);
    assert!(out.lines().any(|l| l == "\thello"), "{out}");
    assert!(out.contains("(7 more bytes not shown"), "{out}");
    let (code, _, err) = trace(&["-r", SAMPLE, "-A", "-X"]);
    assert_eq!(code, Some(2), "-A and -X together: {err}");
}

#[test]
fn trace_read_pcapng_says_the_same() {
    let pcap = std::fs::read(SAMPLE).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let ng = dir.join("trace-sample.pcapng");
    std::fs::write(&ng, pcap_to_pcapng(&pcap)).unwrap();
    let (code, from_pcap, _) = trace(&["-r", SAMPLE]);
    assert_eq!(code, Some(0));
    let (code, from_ng, err) = trace(&["-r", ng.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let body = |t: &str| t.lines().skip(1).map(String::from).collect::<Vec<_>>();
    assert_eq!(body(&from_ng), body(&from_pcap), "pcapng and pcap alike");
    // A real tool's pcapng, where one is installed.
    let ed = dir.join("trace-sample-editcap.pcapng");
    match Command::new("editcap")
        .args(["-F", "pcapng", SAMPLE, ed.to_str().unwrap()])
        .output()
    {
        Ok(o) if o.status.success() => {
            let (code, out, err) = trace(&["-r", ed.to_str().unwrap()]);
            assert_eq!(code, Some(0), "{err}");
            assert_eq!(body(&out), body(&from_pcap), "editcap's pcapng");
        }
        _ => skipped!("SKIPPED editcap pcapng check: editcap (tshark's package) is not installed"),
    }
    let _ = std::fs::remove_file(&ng);
    let _ = std::fs::remove_file(&ed);
}

#[test]
fn trace_read_refuses_what_is_not_a_capture() {
    let (code, out, err) = trace(&["-r", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
    let (code, _, err) = trace(&["-r", "/no/such/file.pcap"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A file cut in the middle of a record: what came before is shown.
    let pcap = std::fs::read(SAMPLE).unwrap();
    let cut = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("trace-cut.pcap");
    std::fs::write(&cut, &pcap[..pcap.len() - 10]).unwrap();
    let (code, out, err) = trace(&["-r", cut.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(segments(&out).len(), 22, "{out}");
    assert!(err.contains("damaged after 22 packets"), "{err}");
    let _ = std::fs::remove_file(&cut);
}

/// tcpdump records the test's own connection while `trace` watches it
/// live: `trace -r` of tcpdump's file gives the same lines.
#[test]
fn trace_read_of_tcpdumps_file_matches_the_live_trace() {
    need_root!("trace_read_of_tcpdumps_file_matches_the_live_trace");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = echo_once(listener);
    let pcap = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tcpdump-{port}.pcap"));
    let p = port.to_string();
    let mut dump = match Command::new("tcpdump")
        .args(["-i", "lo", "-n", "-U", "--immediate-mode"])
        .args(["-w", pcap.to_str().unwrap()])
        .args(["tcp", "port", &p])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => {
            skipped!(
                "SKIPPED trace_read_of_tcpdumps_file_matches_the_live_trace: tcpdump is not installed"
            );
            return;
        }
    };
    // tcpdump says "listening on lo" once its capture is open.
    let mut err = BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "tcpdump: {line}");
    let (mut child, mut out) = start_trace(&["--port", &p]);
    talk(port, "127.0.0.1", b"same lines\n");
    server.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for pid in [child.id(), dump.id()] {
        // SAFETY: kill(2) on the pids of children we started and still hold.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    assert_eq!(wait(&mut child), 0, "SIGTERM ends trace with exit 0");
    let _ = wait(&mut dump);
    let mut live = String::new();
    out.read_to_string(&mut live).unwrap();
    let (code, read, err) = trace(&["-r", pcap.to_str().unwrap(), "--port", &p]);
    assert_eq!(code, Some(0), "{err}");
    let (live_lines, read_lines) = (untimed(&live), untimed(&read));
    assert!(
        live_lines.iter().any(|l| l.contains("handshake 3/3"))
            && live_lines.iter().any(|l| l.contains("close 4/4")),
        "the live trace saw the whole connection:\n{live}"
    );
    assert_eq!(
        read_lines, live_lines,
        "trace -r of tcpdump's file:\n{read}\nlive:\n{live}"
    );
    // And without --port: the port of the first SYN.
    let (_, guessed, _) = trace(&["-r", pcap.to_str().unwrap()]);
    assert_eq!(untimed(&guessed), live_lines);
    let _ = std::fs::remove_file(&pcap);
}

/// tcpdump's capture of `netecho serve` echoing 18 lines one at a time
/// with TCP_NODELAY: 44 segments.
const CHATTY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/chatty.pcap");

/// Every `<text>` of an SVG as its box (left, top, right, bottom) and its
/// content: the anchor from the attribute or the class's style, the
/// width at 0.6 em per character of the 12 px monospace font (what
/// DejaVu Sans Mono and Liberation Mono measure), ascent 0.8 em, descent
/// 0.2 em.
fn text_boxes(svg: &str) -> Vec<([f64; 4], String)> {
    let font = 12.0;
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let (attrs, rest) = t.split_once('>').unwrap();
            let content = rest.split_once("</text>").unwrap().0;
            let attr = |name: &str| {
                attrs
                    .split_once(&format!(" {name}=\""))
                    .map(|(_, v)| v.split_once('"').unwrap().0.to_string())
            };
            let num = |name: &str| attr(name).unwrap().parse::<f64>().unwrap();
            let anchor = attr("text-anchor").unwrap_or_else(|| {
                match attr("class").as_deref() {
                    Some("time") => "end",
                    Some("label" | "end") => "middle",
                    _ => "start",
                }
                .to_string()
            });
            let chars = content
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .chars()
                .count();
            let w = chars as f64 * 0.6 * font;
            let (x, y) = (num("x"), num("y"));
            let left = match anchor.as_str() {
                "end" => x - w,
                "middle" => x - w / 2.0,
                _ => x,
            };
            (
                [left, y - 0.8 * font, left + w, y + 0.2 * font],
                content.to_string(),
            )
        })
        .collect()
}

#[test]
fn trace_svg_of_40_segments_has_no_overlapping_text() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (file, extra) in [(CHATTY, None), (CHATTY, Some("--absolute")), (SAMPLE, None)] {
        let svg = dir.join("trace-overlap.svg");
        let mut args = vec!["-r", file, "--svg", svg.to_str().unwrap()];
        args.extend(extra);
        let (code, out, err) = trace(&args);
        assert_eq!(code, Some(0), "{err}");
        let doc = std::fs::read_to_string(&svg).unwrap();
        balanced_elements(&doc);
        let arrows = doc.matches(r#"<line class="seg""#).count();
        if file == CHATTY {
            assert!(arrows >= 40, "a 40-segment capture: {arrows}\n{out}");
        }
        let boxes = text_boxes(&doc);
        assert!(boxes.len() > 2 * arrows, "times, labels and states");
        let mut hits = Vec::new();
        for (i, (p, a)) in boxes.iter().enumerate() {
            for (q, b) in &boxes[i + 1..] {
                if p[0] < q[2] && q[0] < p[2] && p[1] < q[3] && q[1] < p[3] {
                    hits.push(format!("{a:?} {p:?} and {b:?} {q:?}"));
                }
            }
        }
        assert!(
            hits.is_empty(),
            "{file} {extra:?}: {} text boxes intersect, e.g. {}",
            hits.len(),
            hits[0]
        );
        let _ = std::fs::remove_file(&svg);
    }
}

/// `--iface any`: the loopback connection is seen, each segment once (the
/// outgoing copy of a loopback frame is dropped there too).
#[test]
fn trace_iface_any_sees_loopback_once() {
    need_root!("trace_iface_any_sees_loopback_once");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = echo_once(listener);
    let p = port.to_string();
    let (mut child, mut out) = start_trace(&["--port", &p, "--iface", "any", "--count", "3"]);
    talk(port, "127.0.0.1", b"any\n");
    server.join().unwrap();
    assert_eq!(wait(&mut child), 0, "--count ends trace with exit 0");
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    let segs = segments(&text);
    assert_eq!(segs.len(), 3, "{text}");
    assert!(segs[0].contains(" SYN "), "{text}");
    assert!(
        segs[1].contains(" SYN-ACK "),
        "the SYN once, then the SYN-ACK:\n{text}"
    );
    assert!(segs[2].contains("seq=J+1 ack=K+1"), "{text}");
}
