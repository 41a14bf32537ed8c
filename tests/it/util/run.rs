//! Running the binary to completion under a time limit.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// What a finished (or killed) run of the binary produced.
#[derive(Debug)]
pub struct Run {
    /// `None` if it had to be killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// True if it exited with status 0 (false if it was killed).
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Asserts the exit code, naming `what` and showing stderr otherwise.
    pub fn assert_code(&self, code: i32, what: &str) {
        assert_eq!(
            self.code(),
            Some(code),
            "{what}: exit status {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    /// stdout as text; fails the test if it is not UTF-8.
    pub fn stdout_str(&self) -> &str {
        std::str::from_utf8(&self.stdout).unwrap_or_else(|e| panic!("stdout is not UTF-8: {e}"))
    }

    /// The stderr lines, asserting there is exactly one and it is sane.
    pub fn one_line_error(&self, what: &str) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: stderr should be exactly one line, got {}:\n{}",
            lines.len(),
            self.stderr
        );
        let line = lines[0].trim();
        assert!(!line.is_empty(), "{what}: the error line is empty");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "{what}: the binary panicked:\n{}",
            self.stderr
        );
        line.to_string()
    }
}

/// A started command whose stdout and stderr are collected by threads (so
/// it never blocks on a full pipe) and whose stdin is fed from a thread.
/// Dropping it before [`Running::wait`] kills its process group.
pub struct Running {
    child: Child,
    /// What was run, for failure messages.
    what: String,
    start: Instant,
    feeder: Option<JoinHandle<()>>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    reaped: bool,
}

/// A thread reading `pipe` to its end.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
        v
    })
}

impl Running {
    /// Starts `cmd` in its own process group, without `NETECHO_LOG`.
    pub fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> Running {
        cmd.env_remove("NETECHO_LOG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let what = format!("{cmd:?}");
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        let feeder = match (stdin, child.stdin.take()) {
            (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // A write error means the process stopped reading; its exit
                // status and stderr tell the test why.
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        Running {
            child,
            what,
            start,
            feeder,
            out,
            err,
            reaped: false,
        }
    }

    pub fn pid(&self) -> i32 {
        // A pid always fits in an i32 on Linux (pid_max <= 2^22).
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    /// SIGKILLs the process group and reaps the process.
    fn kill_all(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Waits up to `timeout` for the exit, killing the process group at the
    /// timeout, and collects the output.
    pub fn wait(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.reaped = true;
                    break Some(s);
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(TICK),
                _ => {
                    self.kill_all();
                    break None;
                }
            }
        };
        let elapsed = self.start.elapsed();
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        let stdout = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Run {
            status,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
        }
    }

    /// [`Running::wait`] that fails the test if the process had to be killed.
    pub fn wait_exit(self, timeout: Duration) -> Run {
        let what = self.what.clone();
        let run = self.wait(timeout);
        assert!(
            run.status.is_some(),
            "{what} was still running after {timeout:?} and was killed; stderr:\n{}",
            run.stderr
        );
        run
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_all();
        }
    }
}

/// Runs `cmd` with `stdin` fed from a thread, collecting stdout and stderr;
/// fails the test if it was still running after `timeout` (it and its
/// process group are killed then), so the run has an exit status.
pub fn run_to_end(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Run {
    Running::spawn(cmd, stdin).wait_exit(timeout)
}

/// Runs `netecho ARGS...` (failing the test if it runs past `limit`), which
/// must refuse: a non-zero exit and one sane line on stderr that starts with
/// `netecho: `. Returns the run.
pub fn assert_refused(args: &[&str], limit: Duration) -> Run {
    let what = format!("netecho {args:?}");
    let run = run_to_end(netecho(args), None, limit);
    assert!(!run.success(), "{what} succeeded");
    run.one_line_error(&what);
    assert!(
        run.stderr.starts_with("netecho: "),
        "{what}: {}",
        run.stderr
    );
    run
}

/// `netecho ARGS...` as a command.
pub fn netecho(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}
