//! Builds the C baselines of `benches/c/` with the system `cc`, every run,
//! so a baseline always matches its source: the text compiled into netecho
//! is written into the scratch directory and compiled there. Both front
//! ends use it (`cargo bench --bench models` and `netecho bench --models`).
//!
//! A baseline that needs a library (c-uring: liburing) is first probed with
//! a one-line program that includes its header and links it: a missing
//! library makes the row n/a with the package to install, while a compile
//! error in the baseline itself stays an error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::server::{CC_FLAGS, CServer, Library};
use super::setup::Skip;

/// Builds `c` into `dir`: the program's path, or why there is none.
pub(crate) fn build(c: &CServer, dir: &Path) -> Result<PathBuf, Skip> {
    if let Some(lib) = c.needs {
        probe(c, lib, dir)?;
    }
    let src = dir.join(c.source);
    write(&src, c.text)?;
    let out = dir.join(c.binary());
    cc(&src, &out, c.libs).map_err(|e| {
        Skip::Failed(format!(
            "cc {} benches/c/{} failed: {e}",
            CC_FLAGS.join(" "),
            c.source
        ))
    })?;
    Ok(out)
}

/// Whether `lib`'s header and library are there: a program that includes
/// the one and links the other.
fn probe(c: &CServer, lib: Library, dir: &Path) -> Result<(), Skip> {
    let src = dir.join(format!("probe-{}.c", c.binary()));
    write(
        &src,
        &format!(
            "#include <{}>\nint main(void) {{ return 0; }}\n",
            lib.header
        ),
    )?;
    let out = dir.join(format!("probe-{}", c.binary()));
    let found = cc(&src, &out, c.libs);
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&out);
    found.map_err(|_| {
        Skip::NotApplicable(format!(
            "{} or {} not found: install {} (scripts/install-peers.sh)",
            lib.header,
            c.libs.join(" "),
            lib.package
        ))
    })
}

/// `cc CC_FLAGS -o out src libs`; the first line of its complaint if it fails.
fn cc(src: &Path, out: &Path, libs: &[&str]) -> Result<(), String> {
    let result = Command::new("cc")
        .args(CC_FLAGS)
        .arg("-o")
        .arg(out)
        .arg(src)
        .args(libs)
        .stdin(Stdio::null())
        .output();
    match result {
        Err(e) => Err(format!("cannot run cc: {e}")),
        Ok(r) if r.status.success() => Ok(()),
        Ok(r) => {
            let err = String::from_utf8_lossy(&r.stderr);
            // The first line that says what is wrong, not "In function".
            let line = err
                .lines()
                .find(|l| l.contains("error"))
                .or_else(|| err.lines().next())
                .unwrap_or("");
            Err(line.trim().to_string())
        }
    }
}

/// Writes a source file for `cc`.
fn write(path: &Path, text: &str) -> Result<(), Skip> {
    std::fs::write(path, text).map_err(|e| Skip::Failed(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::models::server::C_EPOLL;

    #[test]
    fn a_missing_library_is_not_applicable_and_a_broken_source_an_error() {
        let dir = std::env::temp_dir().join(format!("netecho-cbuild-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let Some(_) = crate::bench::spawn::find_in_path("cc") else {
            eprintln!("SKIPPED: no cc on PATH");
            return;
        };
        let missing = CServer {
            name: "c-missing",
            source: "missing_echo.c",
            text: "",
            libs: &["-lnetecho-nosuch"],
            needs: Some(Library {
                header: "netecho_nosuch.h",
                package: "netecho-nosuch-dev",
            }),
        };
        match build(&missing, &dir) {
            Err(Skip::NotApplicable(why)) => assert!(
                why.contains("netecho_nosuch.h") && why.contains("netecho-nosuch-dev"),
                "{why}"
            ),
            other => panic!("expected n/a, got {other:?}"),
        }
        let broken = CServer {
            name: "c-broken",
            source: "broken_echo.c",
            text: "int main(void) { return nosuch; }\n",
            libs: &[],
            needs: None,
        };
        match build(&broken, &dir) {
            Err(Skip::Failed(why)) => assert!(why.contains("nosuch"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let built = build(&C_EPOLL, &dir).expect("c-epoll builds");
        assert!(built.is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
