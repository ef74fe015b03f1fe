//! A Postgres and a Redis of a test's own, on spare ports, for tests that stop, kill or
//! wipe them (the fault-injection suite). The machine's shared instances are never
//! touched: each server here lives in a temporary folder and is stopped with it.
//!
//! Started the way `scripts/local-services` starts a local server: Postgres from the
//! Debian cluster binaries (`initdb`, `pg_ctl`; as the `postgres` user when running as
//! root, since Postgres refuses root) with trust authentication on 127.0.0.1 only,
//! Redis as a child process with no persistence (so a restart is also a wipe).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::free_port;

/// The folder holding `pg_ctl` and `initdb`: PATH first, else Debian's newest
/// versioned folder.
fn postgres_bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file())
    });
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().expect(
        "Postgres server binaries (pg_ctl, initdb) are installed (apt-get install postgresql)",
    )
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a Postgres server command, as the `postgres` user when this process is root.
fn run_pg(bin: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// A Postgres cluster of this test's own on a spare port.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// Creates a cluster in a temporary folder and starts it.
    ///
    /// # Panics
    /// If the server binaries are missing or the server does not start.
    pub fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("constintel-pg-")
            .tempdir()
            .expect("a temporary folder");
        if running_as_root() {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(chowned.success(), "chown of the cluster folder failed");
        }
        let data = dir.path().join("data");
        let out = run_pg(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("a UTF-8 temp path"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            dir,
            bin,
            port: free_port(),
        };
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the (stopped) server again on the same port and waits until it accepts
    /// connections.
    ///
    /// # Panics
    /// If it does not start.
    pub fn start_again(&self) {
        let data = self.data();
        let log = format!("{data}/../server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let out = run_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-l", &log, "-w", "-s", "-o", &options, "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} (log: {})",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`: open connections are ended, as when a
    /// database is restarted for maintenance) and waits until it is down.
    ///
    /// # Panics
    /// If it does not stop.
    pub fn stop(&self) {
        let out = run_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "fast", "-w", "-s", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = run_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "immediate", "-w", "-s", "stop"],
        );
    }
}

/// A Redis of this test's own on a spare port, keeping nothing on disk.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a Redis server and waits until it answers.
    ///
    /// # Panics
    /// If `redis-server` is missing or does not answer.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("a Redis URL");
        crate::eventually(30, "the private Redis to answer", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            }
        })
        .await;
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: whatever it held is gone) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "Redis is still running");
        // The port was ours a moment ago; give the kernel a beat to release it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.spawn().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
