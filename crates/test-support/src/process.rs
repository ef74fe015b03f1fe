//! The real binaries as child processes, for tests of what only a process shows:
//! signal handling, exit codes, the `ctl up` supervisor.
//!
//! Binaries come from the Cargo target folder the test runs from (`target/debug`).
//! A test of its own package's binary uses `env!("CARGO_BIN_EXE_<name>")`, which Cargo
//! always builds; other packages' binaries must be built first (`just test` runs
//! `cargo build --workspace --bins` before the suite), and [`binary`] fails with that
//! advice rather than letting a test skip silently.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::TestEnv;

/// The path of workspace binary `name` in the target folder this test runs from.
///
/// # Panics
/// If the binary has not been built, with the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test executable");
    // Test executables live in target/<profile>/deps; binaries one folder up.
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (`just test` does this before running the suite)",
        path.display()
    );
    path
}

/// A TCP port that was free a moment ago, for a child process to bind.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding port 0")
        .port()
}

impl TestEnv {
    /// The environment a child process needs to run against this env's database and
    /// stream prefix: the settings it was built from plus `PATH`, `HOME` and
    /// `RUST_LOG` of the test process. Services bind port 0 unless a `*_BIND` is added.
    pub fn process_vars(&self) -> Vec<(String, String)> {
        let mut vars = self.vars.clone();
        for inherited in ["PATH", "HOME", "RUST_LOG"] {
            if let Ok(v) = std::env::var(inherited) {
                vars.push((inherited.to_owned(), v));
            }
        }
        vars
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) if the test ends first.
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Starts `binary` with `args` and exactly the environment `vars`, in the temp
    /// folder (so no `.env` of the checkout leaks in). Its output goes to the test's.
    pub fn spawn(binary: impl AsRef<Path>, args: &[&str], vars: &[(String, String)]) -> Self {
        let binary = binary.as_ref();
        let child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Self {
            name: binary
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            child,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        send(self.pid(), signal).unwrap_or_else(|e| panic!("signalling {}: {e}", self.name));
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// If it is still running after `secs` seconds (a hang, not a slow machine: pick a
    /// generous limit).
    pub async fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let name = self.name.clone();
        crate::eventually(secs, &format!("{name} to exit"), || {
            let status = self.child.try_wait().expect("waiting for the child");
            async move { status }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        let _ = send(self.pid(), Signal::SIGTERM);
        for _ in 0..100 {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` to process `pid`.
pub fn send(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::EINVAL)?;
    kill(Pid::from_raw(pid), signal)
}

/// Whether a process with this id exists (a zombie still counts until reaped).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Ids of the running processes whose parent is `parent`, with their names (Linux).
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            children.push((pid, comm.to_owned()));
        }
    }
    children
}

/// Waits until `GET {base}/readyz` answers 200.
pub async fn wait_ready(base: &str, secs: u64) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let url = format!("{base}/readyz");
    crate::eventually(secs, &format!("{url} to answer 200"), || {
        let request = client.get(&url).send();
        async move {
            match request.await {
                Ok(r) if r.status().is_success() => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

/// Runs a service binary against `env` on a free port, waits until it is ready, sends
/// SIGTERM and checks that it exits with status 0: the graceful-shutdown contract of
/// every service. `bind_var` is the service's bind setting (`INGEST_BIND`, ...).
pub async fn assert_stops_cleanly_on_sigterm(env: &TestEnv, binary: &str, bind_var: &str) {
    let port = free_port();
    let mut vars = env.process_vars();
    vars.push((bind_var.to_owned(), format!("127.0.0.1:{port}")));
    let mut process = Process::spawn(binary, &[], &vars);
    wait_ready(&format!("http://127.0.0.1:{port}"), 60).await;
    process.signal(Signal::SIGTERM);
    // 30 s detects a hang; a clean stop takes a fraction of a second.
    let status = process.wait_exit(30).await;
    assert!(
        status.success(),
        "{binary} exited with {status} after SIGTERM"
    );
}
