//! sd_notify(3), the little of it netecho needs: `READY=1` once serving,
//! and `MAINPID=` when a handover makes another process the server. One
//! datagram to the Unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`); without the variable, nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::debug;

/// The variable systemd sets for a `Type=notify` service.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service
/// manager, if there is one. A failure is only logged: the server serves
/// on either way, and systemd reports a unit that never said READY.
pub(crate) fn send(state: &str) {
    if let Some(path) = std::env::var_os(NOTIFY_SOCKET) {
        send_to(&path, state);
    }
}

/// [`send`] to the socket `path` names.
fn send_to(path: &std::ffi::OsStr, state: &str) {
    let sent = (|| {
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(path)?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    })();
    match sent {
        Ok(_) => debug!(state, "told the service manager"),
        Err(e) => tracing::warn!("sd_notify {state:?} to {path:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real datagram socket stands in for systemd; both address forms.
    #[test]
    fn the_state_arrives_at_the_path_and_at_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("netecho-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let by_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("netecho-notify-test-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let mut buf = [0u8; 64];
        send_to(path.as_os_str(), "READY=1");
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        send_to(format!("@{name}").as_ref(), "MAINPID=42");
        let n = by_name.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=42");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
