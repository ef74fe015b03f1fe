//! `ctl up`: runs the whole fleet on one machine under one supervisor.
//!
//! Every service binary (found next to `ctl`) runs as a child process in its own process
//! group, so a Ctrl-C in the terminal reaches only the supervisor, which then stops the
//! children in order: SIGTERM, a grace period, SIGKILL for whatever is still running.
//! A child that exits on its own (crash, `kill -9`, OOM) is restarted after an
//! exponential [`Backoff`] that resets once the child has stayed up for a while, so a
//! crash loop slows down but a service that crashes once a day restarts at once.
//!
//! Children's lines are printed with the instance's name in front (coloured on a
//! terminal); JSON lines (`LOG_FORMAT=json`) pass through untouched because they carry
//! the service name themselves. Each instance's URL is printed when its `/readyz` turns
//! green, and a summary once the whole fleet is ready.
//!
//! `--replicas identity-merger=3` runs several instances of one service; replica `k`
//! (from 0) listens on the service's port + 100·k so each has its own health port.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use config::Settings;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use service_kit::CancellationToken;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The long-running services `ctl up` starts, with the setting that holds each one's
/// bind address.
pub const SERVICES: [(&str, &str); 7] = [
    ("api-gateway", "API_GATEWAY_BIND"),
    ("ingest", "INGEST_BIND"),
    ("normalizer", "NORMALIZER_BIND"),
    ("identity-merger", "IDENTITY_MERGER_BIND"),
    ("ml-inference", "ML_INFERENCE_BIND"),
    ("automations", "AUTOMATIONS_BIND"),
    ("destinations", "DESTINATIONS_BIND"),
];

/// Port distance between replicas of one service.
const REPLICA_PORT_STEP: u16 = 100;

/// Options of `ctl up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Instances of a service, as `service=count` (repeatable); 0 leaves it out.
    /// Replica k listens on the service's port + 100·k.
    #[arg(long = "replicas", value_name = "SERVICE=N", value_parser = parse_replicas)]
    pub replicas: Vec<(String, u16)>,
    /// Folder holding the service binaries (default: the folder `ctl` runs from).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Seconds children get to stop after SIGTERM before they are killed.
    #[arg(long, default_value_t = 10)]
    pub stop_timeout: u64,
}

fn parse_replicas(raw: &str) -> Result<(String, u16), String> {
    let (name, count) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=N, got {raw:?}"))?;
    if !SERVICES.iter().any(|(s, _)| *s == name) {
        let known: Vec<&str> = SERVICES.iter().map(|(s, _)| *s).collect();
        return Err(format!(
            "unknown service {name:?} (one of {})",
            known.join(", ")
        ));
    }
    let count = count
        .parse()
        .map_err(|_| format!("replica count {count:?} is not a number"))?;
    Ok((name.to_owned(), count))
}

/// Restart delays for a child that keeps exiting: doubles from `initial` up to `max`,
/// and starts over after a run of at least `stable_after`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    stable_after: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`, reset by a run of
    /// `stable_after` or longer.
    pub fn new(initial: Duration, max: Duration, stable_after: Duration) -> Self {
        Self {
            initial,
            max,
            stable_after,
            next: initial,
        }
    }

    /// The delay before restarting a child that ran for `uptime` and then exited.
    pub fn after_exit(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.stable_after {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }
}

impl Default for Backoff {
    /// Half a second, doubling to 30 s; a child up for a minute counts as healthy again.
    fn default() -> Self {
        Self::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    }
}

/// One process the supervisor keeps running.
#[derive(Debug, Clone)]
struct Instance {
    /// `identity-merger` or, for replica k ≥ 1, `identity-merger#k`.
    label: String,
    binary: PathBuf,
    bind_var: &'static str,
    bind: SocketAddr,
    colour: &'static str,
}

impl Instance {
    fn url(&self) -> String {
        let ip = match self.bind.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.bind.port()))
    }
}

/// Runs the fleet until SIGINT, SIGTERM or SIGHUP, then stops every child.
pub async fn up(settings: &Settings, args: UpArgs) -> anyhow::Result<()> {
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("locating the ctl executable")?
            .parent()
            .context("ctl has no parent folder")?
            .to_path_buf(),
    };
    let instances = plan(settings, &bin_dir, &args.replicas)?;
    let missing: Vec<String> = instances
        .iter()
        .filter(|i| !i.binary.is_file())
        .map(|i| i.binary.display().to_string())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "service binaries not found: {} (build them first: cargo build --workspace --bins)",
        missing.join(", ")
    );

    // Installed before any child starts, so an early Ctrl-C still stops them in order.
    let mut signals = StopSignals::install()?;
    let out = Output::new(settings.log_format == config::LogFormat::Json);
    let shutdown = CancellationToken::new();
    let fleet = Fleet {
        out,
        stop_timeout: Duration::from_secs(args.stop_timeout),
        shutdown: shutdown.clone(),
        ready: Arc::new(Mutex::new(HashSet::new())),
        all: instances.clone(),
        env: Arc::new(Vec::new()),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let fleet = Fleet {
        env: fake_twilio(settings).await?,
        ..fleet
    };
    for instance in instances {
        tasks.spawn(fleet.clone().keep_running(instance));
    }
    tokio::select! {
        () = signals.recv() => {}
        // Every instance task only ends after shutdown, so this arm means one failed.
        Some(joined) = tasks.join_next() => {
            tracing::error!(?joined, "an instance supervisor ended unexpectedly");
        }
    }
    tracing::info!("stopping the fleet");
    shutdown.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "an instance supervisor failed while stopping");
        }
    }
    tracing::info!("fleet stopped");
    Ok(())
}

/// Without a Twilio account (`TWILIO_ACCOUNT_SID` empty) the fleet's automations send
/// WhatsApp messages to the local Twilio fake (`messaging::fake`), started here on
/// `127.0.0.1:9180` (any free port when that one is taken): the variables that point
/// the children at it. Nothing reaches
/// WhatsApp; the log says so.
async fn fake_twilio(settings: &Settings) -> anyhow::Result<Arc<Vec<(&'static str, String)>>> {
    use messaging::fake::{DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, DEV_BIND, DEV_FROM, FakeTwilio};
    if !settings.api.twilio_account_sid.trim().is_empty() {
        return Ok(Arc::new(Vec::new()));
    }
    // Its usual port, or any free one when that is taken (another fleet on this host).
    let listener = match tokio::net::TcpListener::bind(DEV_BIND).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Twilio fake")?,
    };
    let fake = FakeTwilio::serve(listener, DEV_ACCOUNT_SID, DEV_AUTH_TOKEN).await?;
    tracing::warn!(
        "TWILIO_ACCOUNT_SID is not set: automations send WhatsApp messages to the local Twilio \
         fake at {} (nothing reaches WhatsApp)",
        fake.base
    );
    let mut env = vec![
        ("TWILIO_API_BASE", fake.base.clone()),
        ("TWILIO_ACCOUNT_SID", DEV_ACCOUNT_SID.to_owned()),
        ("TWILIO_AUTH_TOKEN", DEV_AUTH_TOKEN.to_owned()),
    ];
    if settings.automations.twilio_whatsapp_from.trim().is_empty()
        && settings
            .automations
            .twilio_messaging_service_sid
            .trim()
            .is_empty()
    {
        env.push(("TWILIO_WHATSAPP_FROM", DEV_FROM.to_owned()));
    }
    Ok(Arc::new(env))
}

/// The instances to run: every service once, unless `--replicas` says otherwise.
fn plan(
    settings: &Settings,
    bin_dir: &Path,
    replicas: &[(String, u16)],
) -> anyhow::Result<Vec<Instance>> {
    const COLOURS: [&str; 5] = ["36", "32", "33", "35", "34"];
    let counts: BTreeMap<&str, u16> = replicas.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let mut instances = Vec::new();
    for (index, (service, bind_var)) in SERVICES.iter().enumerate() {
        let base = bind_of(settings, service);
        for k in 0..counts.get(service).copied().unwrap_or(1) {
            let port = base
                .port()
                .checked_add(k * REPLICA_PORT_STEP)
                .filter(|_| base.port() != 0 || k == 0)
                .with_context(|| format!("no port for replica {k} of {service}"))?;
            instances.push(Instance {
                label: if k == 0 {
                    (*service).to_owned()
                } else {
                    format!("{service}#{k}")
                },
                binary: bin_dir.join(service),
                bind_var,
                bind: SocketAddr::new(base.ip(), port),
                colour: COLOURS[index % COLOURS.len()],
            });
        }
    }
    anyhow::ensure!(
        !instances.is_empty(),
        "nothing to run: every replica count is 0"
    );
    Ok(instances)
}

fn bind_of(settings: &Settings, service: &str) -> SocketAddr {
    match service {
        "api-gateway" => settings.api_gateway_bind,
        "ingest" => settings.ingest_bind,
        "normalizer" => settings.normalizer_bind,
        "identity-merger" => settings.identity_merger_bind,
        "ml-inference" => settings.ml_inference_bind,
        "automations" => settings.automations_bind,
        "destinations" => settings.destinations_bind,
        other => unreachable!("{other} is not in SERVICES"),
    }
}

/// What every instance task shares.
#[derive(Clone)]
struct Fleet {
    out: Output,
    stop_timeout: Duration,
    shutdown: CancellationToken,
    /// Labels that have been ready at least once, for the one-time summary.
    ready: Arc<Mutex<HashSet<String>>>,
    all: Vec<Instance>,
    /// Variables every child gets on top of the supervisor's environment.
    env: Arc<Vec<(&'static str, String)>>,
}

impl Fleet {
    /// Starts `instance` and restarts it whenever it exits, until shutdown.
    async fn keep_running(self, instance: Instance) {
        let mut backoff = Backoff::default();
        while !self.shutdown.is_cancelled() {
            let started = Instant::now();
            let delay = match self.run_once(&instance).await {
                RunEnd::Shutdown => return,
                RunEnd::Exited(status) => {
                    let delay = backoff.after_exit(started.elapsed());
                    tracing::warn!(
                        "{} exited ({}), restarting in {:.1}s",
                        instance.label,
                        describe(status),
                        delay.as_secs_f32()
                    );
                    delay
                }
                RunEnd::SpawnFailed(e) => {
                    let delay = backoff.after_exit(Duration::ZERO);
                    tracing::error!(
                        "{} could not start: {e:#}; retrying in {:.1}s",
                        instance.label,
                        delay.as_secs_f32()
                    );
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Runs one process of `instance` until it exits or the fleet stops.
    async fn run_once(&self, instance: &Instance) -> RunEnd {
        let mut command = Command::new(&instance.binary);
        command.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
            .env(instance.bind_var, instance.bind.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a terminal's Ctrl-C reaches only the supervisor, which
            // stops the children in order.
            .process_group(0)
            .kill_on_drop(true);
        if !self.out.colour {
            command.env("NO_COLOR", "1");
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return RunEnd::SpawnFailed(e.into()),
        };
        let pid = child.id();
        tracing::info!("{} started (pid {})", instance.label, pid.unwrap_or(0));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(self.out.clone().pump(instance.clone(), stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(self.out.clone().pump(instance.clone(), stderr));
        }
        let this_run = self.shutdown.child_token();
        let probe = tokio::spawn(
            self.clone()
                .announce_when_ready(instance.clone(), this_run.clone()),
        );
        let end = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => RunEnd::Exited(status),
                Err(e) => RunEnd::SpawnFailed(e.into()),
            },
            () = self.shutdown.cancelled() => {
                self.stop(instance, &mut child, pid).await;
                RunEnd::Shutdown
            }
        };
        this_run.cancel();
        let _ = probe.await;
        end
    }

    /// SIGTERM, then SIGKILL after the grace period.
    async fn stop(&self, instance: &Instance, child: &mut Child, pid: Option<u32>) {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // ESRCH means it is already gone; wait() below reaps it either way.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(self.stop_timeout, child.wait()).await {
            Ok(Ok(status)) => tracing::info!("{} stopped ({})", instance.label, describe(status)),
            Ok(Err(e)) => tracing::error!("{}: waiting for it failed: {e}", instance.label),
            Err(_) => {
                tracing::warn!(
                    "{} still running {}s after SIGTERM, killing it",
                    instance.label,
                    self.stop_timeout.as_secs()
                );
                let _ = child.kill().await;
            }
        }
    }

    /// Polls `/readyz` until it answers 200, then prints the instance's URL (and the
    /// fleet summary the first time every instance is ready).
    async fn announce_when_ready(self, instance: Instance, this_run: CancellationToken) {
        let Ok(client) = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
        else {
            return;
        };
        let url = format!("{}/readyz", instance.url());
        loop {
            let ready = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success());
            if ready {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = this_run.cancelled() => return,
            }
        }
        let first_time_all = {
            let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            let again = !ready.insert(instance.label.clone());
            tracing::info!(
                "{} ready{} at {}",
                instance.label,
                if again { " again" } else { "" },
                instance.url()
            );
            !again && ready.len() == self.all.len()
        };
        if first_time_all {
            let mut summary = String::from("all services ready:\n");
            for i in &self.all {
                summary.push_str(&format!("  {:<20} {}\n", i.label, i.url()));
            }
            self.out.line(&summary);
        }
    }
}

enum RunEnd {
    /// The fleet is stopping; the child has been stopped.
    Shutdown,
    /// The child exited on its own.
    Exited(ExitStatus),
    /// The binary could not be started or waited for.
    SpawnFailed(anyhow::Error),
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => "unknown status".into(),
    }
}

/// Where children's lines go: our stdout, one whole line at a time.
#[derive(Clone)]
struct Output {
    colour: bool,
    json: bool,
}

impl Output {
    fn new(json: bool) -> Self {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self { colour, json }
    }

    /// Copies a child's stream line by line with the instance's label in front.
    async fn pump(self, instance: Instance, stream: impl AsyncRead + Unpin) {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        let service = instance
            .label
            .split('#')
            .next()
            .unwrap_or_default()
            .to_owned();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_end_matches(['\n', '\r']);
            if self.json && text.starts_with('{') {
                self.line(text);
            } else {
                self.line(&self.prefixed(&instance, &service, text));
            }
        }
    }

    fn prefixed(&self, instance: &Instance, service: &str, text: &str) -> String {
        // Services already start each line with their name; the label replaces it.
        let body = text
            .strip_prefix(service)
            .filter(|rest| rest.starts_with(' '))
            .map_or(text, str::trim_start);
        if self.colour {
            format!(
                "\x1b[{}m{:<20}\x1b[0m│ {body}",
                instance.colour, instance.label
            )
        } else {
            format!("{:<20}│ {body}", instance.label)
        }
    }

    fn line(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (piped into `head`) must not take the fleet down.
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (terminal closed), the signals that stop the fleet.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Replaces the default action (exit at once) of the three signals.
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("handling SIGHUP")?,
        })
    }

    /// Resolves when one of them arrives.
    async fn recv(&mut self) {
        let name = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        };
        tracing::info!("{name} received");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(secs(0.5), secs(4.0), secs(60.0));
        let delays: Vec<Duration> = (0..6).map(|_| b.after_exit(secs(1.0))).collect();
        assert_eq!(
            delays,
            [0.5, 1.0, 2.0, 4.0, 4.0, 4.0].map(secs).to_vec(),
            "a crash loop slows down to the cap and stays there"
        );
    }

    #[test]
    fn backoff_resets_after_a_stable_run() {
        let mut b = Backoff::new(secs(0.5), secs(30.0), secs(60.0));
        for _ in 0..5 {
            b.after_exit(secs(1.0));
        }
        assert_eq!(
            b.after_exit(secs(59.9)),
            secs(16.0),
            "a short run keeps growing"
        );
        assert_eq!(
            b.after_exit(secs(60.0)),
            secs(0.5),
            "a stable run starts over"
        );
        assert_eq!(b.after_exit(secs(1.0)), secs(1.0));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX, secs(1.0));
        assert_eq!(b.after_exit(Duration::ZERO), Duration::MAX);
        assert_eq!(b.after_exit(Duration::ZERO), Duration::MAX);
    }

    #[test]
    fn replicas_parse_and_reject_unknown_services() {
        assert_eq!(
            parse_replicas("identity-merger=3").unwrap(),
            ("identity-merger".to_owned(), 3)
        );
        assert_eq!(parse_replicas("ml-inference=0").unwrap().1, 0);
        assert!(
            parse_replicas("merger=3")
                .unwrap_err()
                .contains("unknown service")
        );
        assert!(parse_replicas("ingest").unwrap_err().contains("SERVICE=N"));
        assert!(
            parse_replicas("ingest=x")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn plan_spreads_replicas_over_ports() {
        let settings = Settings::from_pairs([("INGEST_BIND", "0.0.0.0:8081".to_owned())]).unwrap();
        let plan = plan(
            &settings,
            Path::new("/opt/bin"),
            &[("identity-merger".into(), 3), ("ml-inference".into(), 0)],
        )
        .unwrap();
        let labels: Vec<(&str, u16)> = plan
            .iter()
            .map(|i| (i.label.as_str(), i.bind.port()))
            .collect();
        assert_eq!(
            labels,
            [
                ("api-gateway", 8080),
                ("ingest", 8081),
                ("normalizer", 9102),
                ("identity-merger", 9103),
                ("identity-merger#1", 9203),
                ("identity-merger#2", 9303),
                ("automations", 9105),
                ("destinations", 9106),
            ]
        );
        assert_eq!(
            plan[1].url(),
            "http://127.0.0.1:8081",
            "unspecified binds are probed on loopback"
        );
        assert_eq!(plan[4].binary, Path::new("/opt/bin/identity-merger"));
    }

    #[test]
    fn port_zero_cannot_have_replicas() {
        let settings =
            Settings::from_pairs([("NORMALIZER_BIND", "127.0.0.1:0".to_owned())]).unwrap();
        let err = plan(&settings, Path::new("/x"), &[("normalizer".into(), 2)]).unwrap_err();
        assert!(err.to_string().contains("replica 1 of normalizer"), "{err}");
    }

    #[test]
    fn lines_lose_the_services_own_prefix() {
        let out = Output {
            colour: false,
            json: false,
        };
        let instance = Instance {
            label: "identity-merger#1".into(),
            binary: PathBuf::new(),
            bind_var: "IDENTITY_MERGER_BIND",
            bind: "127.0.0.1:9203".parse().unwrap(),
            colour: "35",
        };
        assert_eq!(
            out.prefixed(
                &instance,
                "identity-merger",
                "identity-merger  INFO listening"
            ),
            "identity-merger#1   │ INFO listening"
        );
        assert_eq!(
            out.prefixed(&instance, "identity-merger", "thread panicked"),
            "identity-merger#1   │ thread panicked"
        );
    }
}
