//! What one row of the tables measures: a netecho model, a C baseline, a
//! peer a user might pick instead, or the kernel floor; and how each name
//! is spelled in `--models` and `NETECHO_BENCH_MODELS`.

use clap::ValueEnum;

use super::peer::Peer;
use super::workload::{Shape, Workload};
use crate::serve::Model;

/// Models run when `--models` is given no list: every model a user can
/// pick except `auto`, which is one of them under another name.
pub const DEFAULT_MODELS: &[Model] = &[
    Model::Iterative,
    Model::Fork,
    Model::Prefork,
    Model::Thread,
    Model::Prethread,
    Model::Epoll,
    Model::Tokio,
    Model::Uring,
];

/// A C echo server from `benches/c/`, built by the benchmark with `cc`
/// ([`CC_FLAGS`], then [`CServer::libs`]) into its scratch directory. It
/// prints `listening tcp ADDR` as `netecho serve` does. Its source is
/// compiled into netecho too, so `netecho bench --models` builds it where
/// there is no source tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CServer {
    /// Its name in `NETECHO_BENCH_MODELS` and in the tables.
    pub(crate) name: &'static str,
    /// Its source file under `benches/c/`.
    pub source: &'static str,
    /// That file's text, as it was when netecho was built.
    pub(crate) text: &'static str,
    /// What `cc` needs after the source (`-luring`).
    pub libs: &'static [&'static str],
    /// A library it needs beyond libc: without it the row is skipped with
    /// a note (n/a), not failed.
    pub(crate) needs: Option<Library>,
}

/// A C library a baseline includes and links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Library {
    /// The header it includes, as `#include <...>` names it.
    pub(crate) header: &'static str,
    /// The Debian package that installs header and library.
    pub(crate) package: &'static str,
}

/// The flags every C baseline is built with.
pub const CC_FLAGS: &[&str] = &["-O2", "-Wall"];

/// The practical bar for a one-core event loop: level-triggered epoll, one
/// shared 64 KiB buffer. The tables' `xC epoll` column divides by it.
pub const C_EPOLL: CServer = CServer {
    name: "c-epoll",
    source: "epoll_echo.c",
    text: include_str!("../../../benches/c/epoll_echo.c"),
    libs: &[],
    needs: None,
};

/// The bar for large messages: the same loop moving the bytes socket →
/// pipe → socket with splice(2), never into user space.
pub(crate) const C_SPLICE: CServer = CServer {
    name: "c-splice",
    source: "splice_echo.c",
    text: include_str!("../../../benches/c/splice_echo.c"),
    libs: &[],
    needs: None,
};

/// The bar for many connections: one io_uring (liburing) with a multishot
/// accept, a multishot receive per connection into a provided-buffer ring,
/// one send in flight per connection. The `many` table's `xC uring`
/// column divides by it.
pub(crate) const C_URING: CServer = CServer {
    name: "c-uring",
    source: "uring_echo.c",
    text: include_str!("../../../benches/c/uring_echo.c"),
    libs: &["-luring"],
    needs: Some(Library {
        header: "liburing.h",
        package: "liburing-dev",
    }),
};

/// Every C baseline, in table order: a new one is one line here.
pub const C_SERVERS: &[CServer] = &[C_EPOLL, C_SPLICE, C_URING];

impl CServer {
    /// The built program's file name in the scratch directory.
    pub fn binary(&self) -> &'static str {
        self.source.strip_suffix(".c").unwrap_or(self.source)
    }
}

/// What one row starts and measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `netecho serve --model M`, the binary in [`super::Programs`].
    Netecho(Model),
    /// A C baseline, built by the caller ([`super::Programs::c`]).
    C(CServer),
    /// socat, ncat or xinetd from PATH, on a free port.
    Peer(Peer),
    /// `netecho serve --model M` on a `--tls-listen` port (its self-signed
    /// certificate), driven through TLS: the row beside the model's plain
    /// one shows what TLS costs.
    Tls(Model),
    /// Not a server: one thread owning both ends of a loopback TCP
    /// connection does write/read/write/read of the message size; half a
    /// round trip's CPU is the least any syscall-per-message server can pay.
    KernelFloor,
    /// Not a server: the same ping-pong with one thread per core (the
    /// echoing end on the server's CPU, the sending end on the load's);
    /// the echoing thread's CPU per round trip is what a server must pay
    /// when its client really is on another core, caches not shared.
    Floor2t,
}

impl Server {
    /// Its name in the tables.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Server::Netecho(m) => m.name(),
            Server::Tls(m) => tls_label(*m),
            Server::C(c) => c.name,
            Server::Peer(p) => p.name(),
            Server::KernelFloor => "kernel floor",
            Server::Floor2t => "floor-2t",
        }
    }

    /// A baseline (a floor or a C server): a reference line in the chart
    /// rather than a bar.
    pub(crate) fn is_baseline(&self) -> bool {
        matches!(self, Server::KernelFloor | Server::Floor2t | Server::C(_))
    }

    /// One of the floors, measured in this process.
    pub(crate) fn is_floor(&self) -> bool {
        matches!(self, Server::KernelFloor | Server::Floor2t)
    }
}

/// The floors, in table order.
pub(crate) const FLOORS: [Server; 2] = [Server::KernelFloor, Server::Floor2t];

/// What `baselines` names: the floors and every C server.
fn baselines() -> impl Iterator<Item = Server> {
    FLOORS
        .into_iter()
        .chain(C_SERVERS.iter().map(|&c| Server::C(c)))
}

/// A TLS row's name: the model's with `+tls`.
fn tls_label(m: Model) -> &'static str {
    match m {
        Model::Auto => "auto+tls",
        Model::Iterative => "iterative+tls",
        Model::Fork => "fork+tls",
        Model::Prefork => "prefork+tls",
        Model::Thread => "thread+tls",
        Model::Prethread => "prethread+tls",
        Model::Epoll => "epoll+tls",
        Model::Tokio => "tokio+tls",
        Model::Uring => "uring+tls",
    }
}

/// Parses `NETECHO_BENCH_MODELS` and `--models`: names separated by
/// commas, from the C baselines, the floors (`floor`, `floor-2t`;
/// `baselines` for both floors and every C server), the `serve --model`
/// names (`all` for [`DEFAULT_MODELS`]), the same with `+tls` (`all+tls`)
/// for the TLS rows, and the peers (`socat-tls` for socat's TLS echo);
/// repeats dropped, order kept. An empty list is not an error here: the
/// caller says what nothing to run means.
pub fn parse_servers(s: &str) -> Result<Vec<Server>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if let Some(model) = name.strip_suffix("+tls") {
            out.extend(model_names(model)?.into_iter().map(Server::Tls));
        } else if name == "baselines" {
            out.extend(baselines());
        } else if name == "floor" {
            out.push(Server::KernelFloor);
        } else if name == "floor-2t" {
            out.push(Server::Floor2t);
        } else if let Some(c) = C_SERVERS.iter().find(|c| c.name == name) {
            out.push(Server::C(*c));
        } else if let Some(p) = Peer::ALL
            .into_iter()
            .chain([Peer::SocatTls])
            .find(|p| p.name() == name)
        {
            out.push(Server::Peer(p));
        } else {
            let models = model_names(name).map_err(|e| {
                let others: Vec<&str> = ["baselines", "floor", "floor-2t"]
                    .into_iter()
                    .chain(C_SERVERS.iter().map(|c| c.name))
                    .chain(Peer::ALL.map(Peer::name))
                    .chain([Peer::SocatTls.name(), "MODEL+tls"])
                    .collect();
                format!("{e} (or {})", others.join(", "))
            })?;
            out.extend(models.into_iter().map(Server::Netecho));
        }
    }
    Ok(dedup(out))
}

/// The list `--models` takes: what [`parse_servers`] reads, at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelList(pub Vec<Server>);

/// Parses `--models`: the names [`parse_servers`] knows (`all` for
/// [`DEFAULT_MODELS`], `baselines` for the floors and C servers); an
/// unknown name is refused with the known ones, an empty list too.
pub fn parse_models(s: &str) -> Result<ModelList, String> {
    let out = parse_servers(s)?;
    if out.is_empty() {
        return Err("no model named; e.g. --models thread,epoll".into());
    }
    Ok(ModelList(out))
}

/// `serve --model` names separated by commas, `all` for [`DEFAULT_MODELS`];
/// an unknown name is refused with the known ones.
fn model_names(s: &str) -> Result<Vec<Model>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            out.extend_from_slice(DEFAULT_MODELS);
        } else if let Ok(m) = Model::from_str(name, false) {
            out.push(m);
        } else {
            let known: Vec<&str> = Model::value_variants().iter().map(|m| m.name()).collect();
            return Err(format!(
                "unknown model '{name}'; known: all, {}",
                known.join(", ")
            ));
        }
    }
    if out.is_empty() {
        return Err("no model named; e.g. --models thread,epoll".into());
    }
    Ok(dedup(out))
}

/// `items` without repeats, first occurrences in order.
fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// The extra `serve` flags a model gets for a workload and the note that
/// says so, or why the workload does not apply to it.
pub(crate) fn model_flags(
    model: Model,
    w: Workload,
    idle_conns: usize,
) -> Result<(Vec<String>, String), String> {
    let conns = w.conns(idle_conns);
    let one = vec!["--workers".to_string(), "1".to_string()];
    let one_at_a_time = matches!(model, Model::Iterative);
    let pooled = matches!(model, Model::Prefork | Model::Prethread);
    match w.shape {
        Shape::Traffic {
            new_conn: false, ..
        }
        | Shape::Stream { .. }
            if one_at_a_time =>
        {
            Err(format!(
                "serves one client at a time; the workload keeps {conns} connections busy"
            ))
        }
        Shape::Idle if one_at_a_time || pooled => Err(format!(
            "a worker per connection: {conns} idle ones would be {conns} workers"
        )),
        Shape::Traffic {
            conns,
            new_conn: false,
            ..
        }
        | Shape::Stream { conns }
            if conns > model.default_max_conns() =>
        {
            Err(format!(
                "serves at most {} clients at once by default; the workload keeps {conns} busy",
                model.default_max_conns()
            ))
        }
        // Default flags: the pool grows to the load (during the warm-up
        // round trip every connection makes first), all on the server's CPU.
        Shape::Traffic { .. } | Shape::Stream { .. } if pooled => {
            Ok((Vec::new(), "pool grown".into()))
        }
        Shape::Idle => {
            let mut args = one;
            args.extend(["--max-conns".to_string(), conns.to_string()]);
            Ok((args, format!("--max-conns {conns}")))
        }
        Shape::Traffic { .. } | Shape::Stream { .. } => Ok((one, String::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_expand_and_refuse_unknown_names() {
        assert_eq!(
            parse_models("thread, epoll").unwrap().0,
            vec![
                Server::Netecho(Model::Thread),
                Server::Netecho(Model::Epoll)
            ]
        );
        assert_eq!(
            parse_models("c-uring,floor").unwrap().0,
            vec![Server::C(C_URING), Server::KernelFloor]
        );
        assert_eq!(parse_models("all").unwrap().0.len(), DEFAULT_MODELS.len());
        assert_eq!(
            parse_models("epoll,epoll").unwrap().0,
            vec![Server::Netecho(Model::Epoll)]
        );
        assert!(parse_models("auto").is_ok());
        let e = parse_models("thread,nope").unwrap_err();
        assert!(e.contains("'nope'") && e.contains("uring"), "{e}");
        assert!(parse_models(",").is_err());
    }

    #[test]
    fn server_lists_know_c_baselines_peers_and_models() {
        assert_eq!(
            parse_servers("c-epoll, epoll, socat, epoll").unwrap(),
            vec![
                Server::C(C_EPOLL),
                Server::Netecho(Model::Epoll),
                Server::Peer(Peer::Socat)
            ]
        );
        assert_eq!(parse_servers("all").unwrap().len(), DEFAULT_MODELS.len());
        assert_eq!(
            parse_servers("floor-2t, baselines").unwrap(),
            [
                Server::Floor2t,
                Server::KernelFloor,
                Server::C(C_EPOLL),
                Server::C(C_SPLICE),
                Server::C(C_URING)
            ]
        );
        assert_eq!(
            parse_servers("epoll+tls, socat-tls").unwrap(),
            vec![Server::Tls(Model::Epoll), Server::Peer(Peer::SocatTls)]
        );
        assert_eq!(
            parse_servers("all+tls").unwrap().len(),
            DEFAULT_MODELS.len()
        );
        assert_eq!(Server::Tls(Model::Uring).label(), "uring+tls");
        assert_eq!(parse_servers(" , ").unwrap(), Vec::<Server>::new());
        let e = parse_servers("nope").unwrap_err();
        assert!(
            e.starts_with("unknown model 'nope'; known: all, auto,")
                && e.ends_with(
                    "(or baselines, floor, floor-2t, c-epoll, c-splice, c-uring, socat, ncat, xinetd, socat-tls, MODEL+tls)"
                ),
            "{e}"
        );
    }

    #[test]
    fn c_baselines_have_unique_names_and_binaries() {
        assert_eq!(C_EPOLL.binary(), "epoll_echo");
        assert!(C_URING.text.contains("io_uring_prep_recv_multishot"));
        for (i, a) in C_SERVERS.iter().enumerate() {
            for b in &C_SERVERS[i + 1..] {
                assert!(a.name != b.name && a.binary() != b.binary());
            }
        }
    }

    #[test]
    fn models_that_cannot_hold_the_load_are_not_applicable() {
        assert!(model_flags(Model::Iterative, Workload::SMALL, 10).is_err());
        assert!(model_flags(Model::Iterative, Workload::CONNECT, 10).is_ok());
        assert!(model_flags(Model::Prefork, Workload::IDLE, 10).is_err());
        // Workload 5's 300 connections are over prefork's default 256.
        assert!(model_flags(Model::Prefork, Workload::MANY, 10).is_err());
        assert!(model_flags(Model::Prethread, Workload::MANY, 10).is_ok());
        assert!(model_flags(Model::Iterative, Workload::STREAM, 10).is_err());
        let (args, _) = model_flags(Model::Uring, Workload::STREAM, 10).unwrap();
        assert_eq!(args, ["--workers", "1"]);
        let (args, note) = model_flags(Model::Prethread, Workload::SMALL, 10).unwrap();
        assert!(
            args.is_empty(),
            "the pool runs with default flags: {args:?}"
        );
        assert_eq!(note, "pool grown");
        let (args, _) = model_flags(Model::Prefork, Workload::CONNECT, 10).unwrap();
        assert!(args.is_empty());
        let (args, _) = model_flags(Model::Thread, Workload::CONNECT, 10).unwrap();
        assert_eq!(args, ["--workers", "1"]);
        let (args, _) = model_flags(Model::Epoll, Workload::IDLE, 10).unwrap();
        assert_eq!(args, ["--workers", "1", "--max-conns", "10"]);
    }
}
