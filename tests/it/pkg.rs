//! How netecho is shipped (issue 15): the Kubernetes manifests in
//! `contrib/k8s/` and the `Dockerfile` parse and agree with each other and
//! with the real command line, and `/metrics` passes `promtool check metrics`.
//!
//! The Debian package and the image are built by scripts, not here (a
//! release build is too slow for `cargo test`): `scripts/check-deb.sh` and
//! `scripts/check-image.sh`, both run by `.ci/run`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use serde_json::Value;

use crate::util::{self, Server};

/// The repository root: manifests are read from the source tree.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of one file, as JSON values (so they can be walked
/// with `Value`'s indexing).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
        })
        .collect()
}

/// Every Kubernetes object in `contrib/k8s/`, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let dir = root().join("contrib/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "too few manifests in {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for doc in yaml_docs(&f) {
            for key in ["apiVersion", "kind", "metadata"] {
                assert!(doc.get(key).is_some(), "{name}: an object without {key}");
            }
            out.push((name.clone(), doc));
        }
    }
    out
}

/// The one object of `kind` named `name`.
fn object<'a>(all: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = all
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one {kind} {name}, found {}",
        found.len()
    );
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s} (quote numbers in args)"))
                .to_owned()
        })
        .collect()
}

/// Asserts that `args` (without the program name) is a command line the
/// real `netecho` accepts: every flag exists and every value is valid.
fn assert_netecho_parses(what: &str, args: &[String]) {
    let argv = std::iter::once("netecho".to_owned()).chain(args.iter().cloned());
    if let Err(e) = netecho::cli::Cli::try_parse_from(argv) {
        panic!("{what}: netecho rejects {args:?}:\n{e}");
    }
}

/// (port, protocol) pairs of a list of Kubernetes port objects.
fn ports(list: &Value, port_key: &str) -> BTreeSet<(u64, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP").to_owned();
            (p[port_key].as_u64().unwrap(), proto)
        })
        .collect()
}

/// The ports netecho serves: TCP and UDP echo, TLS echo, metrics.
fn served_ports() -> BTreeSet<(u64, String)> {
    [(6666, "TCP"), (6666, "UDP"), (6667, "TCP"), (9100, "TCP")]
        .into_iter()
        .map(|(p, s)| (p, s.to_owned()))
        .collect()
}

#[test]
fn k8s_deployment_has_probes_requests_and_a_metrics_port() {
    let all = manifests();
    let dep = object(&all, "Deployment", "netecho");
    let pod = &dep["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    assert!(c["readinessProbe"].is_object(), "no readiness probe");
    assert!(c["livenessProbe"].is_object(), "no liveness probe");
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].is_string(), "no {r} request");
    }
    assert_eq!(ports(&c["ports"], "containerPort"), served_ports());
    let metrics = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("no container port named metrics (what a PodMonitor selects)");
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        metrics["containerPort"].to_string().as_str(),
        "the scrape annotation names another port"
    );
    // The image's entrypoint is `netecho serve`: the args are its flags,
    // and the metrics flag binds the port named `metrics`.
    let mut serve = vec!["serve".to_owned()];
    serve.extend(strings(&c["args"]));
    assert_netecho_parses("Deployment args", &serve);
    assert!(
        serve
            .windows(2)
            .any(|w| w[0] == "--metrics" && w[1].ends_with(":9100")),
        "serve is not told to serve metrics on 9100: {serve:?}"
    );
    let live = strings(&c["livenessProbe"]["exec"]["command"]);
    assert_eq!(live[0], "/netecho", "the probe runs the image's binary");
    assert_netecho_parses("liveness probe", &live[1..]);
    // Named probe ports must exist.
    let names: BTreeSet<&str> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let ready = c["readinessProbe"]["tcpSocket"]["port"].as_str().unwrap();
    assert!(
        names.contains(ready),
        "readiness probe port {ready} not declared"
    );
}

#[test]
fn k8s_service_reaches_tcp_udp_tls_and_metrics_of_the_deployment() {
    let all = manifests();
    let dep = object(&all, "Deployment", "netecho");
    let svc = object(&all, "Service", "netecho");
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &labels[k], v,
            "the Service selects {k}={v}, the pods do not carry it"
        );
    }
    assert_eq!(ports(&svc["spec"]["ports"], "port"), served_ports());
    let container_ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap();
    for p in svc["spec"]["ports"].as_array().unwrap() {
        let target = &p["targetPort"];
        let hit = container_ports.iter().find(|c| {
            (c["name"] == *target || c["containerPort"] == *target)
                && c["protocol"] == p["protocol"]
        });
        assert!(hit.is_some(), "Service port {p} targets no container port");
    }
}

#[test]
fn k8s_indexed_bench_job_writes_one_log_per_pod_and_the_merge_reads_them_all() {
    let all = manifests();
    let svc = object(&all, "Service", "netecho");
    let job = object(&all, "Job", "netecho-bench");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let n = job["spec"]["completions"].as_u64().unwrap();
    assert!(n >= 2, "a bench of one pod is one machine");
    assert_eq!(
        job["spec"]["parallelism"].as_u64(),
        Some(n),
        "the pods must run at once"
    );
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(strings(&c["command"]), ["/netecho"]);
    let args = strings(&c["args"]);
    assert_eq!(args[0], "bench");
    let tcp_port = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "echo-tcp")
        .unwrap()["port"]
        .clone();
    assert_eq!(
        args[1],
        format!("{}:{tcp_port}", svc["metadata"]["name"].as_str().unwrap()),
        "the bench does not target the Service"
    );
    let at = args
        .iter()
        .position(|a| a == "--hist-out")
        .expect("no --hist-out");
    let pattern = &args[at + 1];
    assert!(
        pattern.contains("$(JOB_COMPLETION_INDEX)"),
        "every pod would write the same file: {pattern}"
    );
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "JOB_COMPLETION_INDEX"),
        "$(JOB_COMPLETION_INDEX) only expands for a declared variable"
    );
    // What pod 0 runs, after Kubernetes expanded the variable.
    let pod0: Vec<String> = args
        .iter()
        .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", "0"))
        .collect();
    assert_netecho_parses("bench Job args", &pod0);

    // The merge reads exactly the files the pods wrote, from the same claim.
    let merge = object(&all, "Job", "netecho-bench-merge");
    let mc = &merge["spec"]["template"]["spec"]["containers"][0];
    let margs = strings(&mc["args"]);
    assert_eq!(margs[..2], ["bench", "merge"]);
    let want: Vec<String> = (0..n)
        .map(|i| pattern.replace("$(JOB_COMPLETION_INDEX)", &i.to_string()))
        .collect();
    assert_eq!(
        margs[2..],
        want[..],
        "the merge does not read every pod's log"
    );
    assert_netecho_parses("merge Job args", &margs);
    let claim = |pod: &Value| pod["volumes"][0]["persistentVolumeClaim"]["claimName"].clone();
    let merge_pod = &merge["spec"]["template"]["spec"];
    assert_eq!(
        claim(pod),
        claim(merge_pod),
        "bench and merge use different volumes"
    );
    let pvc = object(&all, "PersistentVolumeClaim", claim(pod).as_str().unwrap());
    assert!(
        strings(&pvc["spec"]["accessModes"]).contains(&"ReadWriteMany".to_owned()),
        "pods on several nodes write the results"
    );
    let mount = |c: &Value| {
        c["volumeMounts"][0]["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        pattern.starts_with(&(mount(c) + "/")),
        "{pattern} is not on the volume"
    );
    assert!(want[0].starts_with(&(mount(mc) + "/")));
}

/// The instructions of the Dockerfile's last stage, continuation lines
/// joined, comments dropped: (INSTRUCTION, rest).
fn final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(t);
                joined.push(std::mem::take(&mut cur));
            }
        }
    }
    let last_from = joined
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("no FROM");
    joined[last_from..]
        .iter()
        .map(|l| {
            let (i, rest) = l.split_once(' ').unwrap_or((l, ""));
            (i.to_owned(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn dockerfile_final_stage_is_scratch_non_root_and_exposes_what_kubernetes_uses() {
    let stage = final_stage();
    let get = |i: &str| -> Vec<&String> {
        stage
            .iter()
            .filter(|(k, _)| k == i)
            .map(|(_, v)| v)
            .collect()
    };
    assert!(
        get("FROM")[0].starts_with("scratch"),
        "final stage: FROM {}",
        get("FROM")[0]
    );
    let user = get("USER");
    assert_eq!(user.len(), 1);
    assert!(
        !user[0].starts_with("0") && !user[0].starts_with("root"),
        "runs as root: USER {}",
        user[0]
    );
    let exposed: BTreeSet<(u64, String)> = get("EXPOSE")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            (port.parse().unwrap(), proto.to_uppercase())
        })
        .collect();
    assert_eq!(exposed, served_ports());
    let entry: Vec<String> = serde_json::from_str(get("ENTRYPOINT")[0]).unwrap();
    let cmd: Vec<String> = serde_json::from_str(get("CMD")[0]).unwrap();
    assert_eq!(entry, ["/netecho", "serve"], "the server is the entrypoint");
    let mut args = entry[1..].to_vec();
    args.extend(cmd);
    assert_netecho_parses("ENTRYPOINT + CMD", &args);
    // The Deployment runs the same server the image runs by itself.
    let all = manifests();
    let dep = object(&all, "Deployment", "netecho");
    assert_eq!(
        strings(&dep["spec"]["template"]["spec"]["containers"][0]["args"]),
        args[1..],
        "the Deployment's args and the image's CMD drifted apart"
    );
}

/// The Accept header Prometheus 2.42 sends with every scrape.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `/metrics` of a server that has seen TCP and UDP traffic: the
/// Content-Type and the body, asked for with `accept` (if any).
fn scrape_after_traffic(accept: Option<&str>) -> (String, String) {
    let server = Server::start("epoll", &["--udp", "--metrics", "127.0.0.1:0"]);
    util::round_trip(server.addr(), b"promtool", 1).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(b"hi", server.addr()).unwrap();
    let mut buf = [0; 16];
    let _ = udp.recv_from(&mut buf).expect("no UDP echo");
    let m: SocketAddr = server.metrics_addr();
    let mut s = TcpStream::connect_timeout(&m, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: test\r\n{accept}\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    let (head, body) = page.split_once("\r\n\r\n").expect("no HTTP header end");
    assert!(head.starts_with("HTTP/1.1 200"), "bad answer: {head}");
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .expect("no Content-Type");
    (ctype.to_owned(), body.to_owned())
}

#[test]
fn metrics_are_openmetrics_for_prometheus_and_classic_text_otherwise() {
    let (ctype, body) = scrape_after_traffic(Some(PROMETHEUS_ACCEPT));
    assert!(
        ctype.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ctype}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE netecho_connections counter\n"),
        "{body}"
    );
    let (ctype, body) = scrape_after_traffic(None);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(!body.contains("# EOF"), "{body}");
    assert!(
        body.contains("# TYPE netecho_connections_total counter\n"),
        "{body}"
    );
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    if Command::new("promtool").arg("--version").output().is_err() {
        skipped!(
            "SKIPPED metrics_pass_promtool_check_metrics: no promtool \
             (.ci/run installs Debian's prometheus package where apt works)"
        );
        return;
    }
    // What curl and promtool's users fetch: no Accept header.
    let (_, body) = scrape_after_traffic(None);
    assert!(body.contains("netecho_"), "no netecho metric in:\n{body}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}): {said}\non:\n{body}",
        out.status
    );
}

/// promtool itself must catch a broken exposition, or the check above
/// proves nothing.
#[test]
fn promtool_rejects_a_broken_exposition() {
    if Command::new("promtool").arg("--version").output().is_err() {
        skipped!("SKIPPED promtool_rejects_a_broken_exposition: no promtool");
        return;
    }
    let broken = "# TYPE netecho_x counter\nnetecho_x{a=\"1\" 5\n";
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(broken.as_bytes())
        .unwrap();
    assert!(
        !child.wait().unwrap().success(),
        "promtool accepted garbage"
    );
}

// ---------------------------------------------------------------------------
// Bench results that combine across machines: --hist-out and bench merge
// ---------------------------------------------------------------------------

/// A scratch directory for one test's files, removed when it passes.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("netecho-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs the binary, asserts success and parses its one JSON line.
fn json_of(args: &[&str]) -> Value {
    let run = util::run_to_end(util::netecho(args), None, Duration::from_secs(60));
    run.assert_code(0, &format!("netecho {args:?}"));
    serde_json::from_str(run.stdout_str().trim()).unwrap_or_else(|e| {
        panic!(
            "netecho {args:?}: not one JSON object ({e}): {}",
            run.stdout_str()
        )
    })
}

/// One closed-loop run of `requests` with `conns` connections, its log in `out`.
fn bench_to_log(addr: &str, conns: &str, requests: &str, out: &str) -> Value {
    json_of(&[
        "bench",
        addr,
        "-c",
        conns,
        "-n",
        requests,
        "--warmup",
        "0.1",
        "--hist-out",
        out,
        "--json",
    ])
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

#[test]
fn hist_out_log_is_read_by_hdrhistogram_for_python() {
    // HdrHistogram's own Python port (PyPI `hdrhistogram`, module `hdrh`),
    // installed by .ci/run where pip works.
    let probe = Command::new("python3").args(["-c", "import hdrh"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skipped!(
            "SKIPPED hist_out_log_is_read_by_hdrhistogram_for_python: no python3 module hdrh \
             (pip install hdrhistogram)"
        );
        return;
    }
    let server = Server::start("epoll", &[]);
    let dir = Scratch::new("hlog-py");
    let log = dir.file("run.hlog");
    let run = bench_to_log(&server.addr().to_string(), "4", "3000", &log);
    let reader = r#"
import sys
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
acc = HdrHistogram(1, 3600 * 10**9, 3)
reader = HistogramLogReader(sys.argv[1], acc)
intervals = 0
while reader.add_next_interval_histogram():
    intervals += 1
print(intervals, acc.get_total_count(), acc.get_value_at_percentile(99))
"#;
    let out = Command::new("python3")
        .args(["-c", reader, &log])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f[0], 1.0, "one interval per run without --interval");
    assert_eq!(f[1], num(&run, "requests"), "request count");
    assert_eq!(num(&run, "requests"), 3000.0);
    // Both read the same buckets: the same p99 to the nanosecond.
    let p99_us = f[2] / 1e3;
    assert!(
        (p99_us - num(&run, "p99_us")).abs() <= 0.002,
        "p99: hdrh says {p99_us} µs, the run {} µs",
        num(&run, "p99_us")
    );
}

#[test]
fn bench_merge_adds_two_runs_requests_and_its_p50_lies_between_theirs() {
    let server = Server::start("epoll", &[]);
    let addr = server.addr().to_string();
    let dir = Scratch::new("hlog-merge");
    let (a, b) = (dir.file("a.hlog"), dir.file("b.hlog"));
    // One connection against 32: queueing at the server makes the second
    // run's median several times the first's.
    let ra = bench_to_log(&addr, "1", "2000", &a);
    let rb = bench_to_log(&addr, "32", "6000", &b);
    let m = json_of(&["bench", "merge", "--json", &a, &b]);
    assert_eq!(num(&m, "runs"), 2.0);
    assert_eq!(
        num(&m, "requests"),
        num(&ra, "requests") + num(&rb, "requests")
    );
    assert_eq!(num(&m, "requests"), 8000.0);
    let (pa, pb, pm) = (num(&ra, "p50_us"), num(&rb, "p50_us"), num(&m, "p50_us"));
    assert!(
        pa.min(pb) <= pm && pm <= pa.max(pb),
        "p50 {pm} not between {pa} and {pb}"
    );
    assert_eq!(
        num(&m, "max_us"),
        num(&ra, "max_us").max(num(&rb, "max_us"))
    );
    // The keys a run's --json has, with the same meaning.
    for key in [
        "requests",
        "rps",
        "duration_s",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "mean_us",
    ] {
        assert!(ra.get(key).is_some() && m.get(key).is_some(), "key {key}");
    }
    // A merge of one log is that run.
    let one = json_of(&["bench", "merge", "--json", &a]);
    for key in ["requests", "p50_us", "p99_us", "max_us"] {
        assert_eq!(one[key], ra[key], "{key} of a one-log merge");
    }
    // The human summary, as a run prints it.
    let human = util::run_to_end(
        util::netecho(&["bench", "merge", &a, &b]),
        None,
        Duration::from_secs(30),
    );
    human.assert_code(0, "bench merge");
    assert!(
        human.stdout_str().contains("requests  8,000 in"),
        "{}",
        human.stdout_str()
    );
    assert!(
        human.stdout_str().contains("  latency   p50 "),
        "{}",
        human.stdout_str()
    );
}

#[test]
fn bench_merge_of_a_file_that_is_no_log_is_one_line_and_exit_1() {
    let dir = Scratch::new("hlog-bad");
    let bad = dir.file("bad.hlog");
    std::fs::write(&bad, "requests: 12\n").unwrap();
    let run = util::run_to_end(
        util::netecho(&["bench", "merge", &bad]),
        None,
        Duration::from_secs(30),
    );
    run.assert_code(1, "merge of garbage");
    let line = run.one_line_error("merge of garbage");
    assert!(line.contains("bad.hlog"), "{line}");
    let missing = dir.file("missing.hlog");
    let run = util::run_to_end(
        util::netecho(&["bench", "merge", &missing]),
        None,
        Duration::from_secs(30),
    );
    run.assert_code(1, "merge of a missing file");
    assert!(run.one_line_error("missing").contains("missing.hlog"));
}
