//! Passwords in `DATABASE_URL` and `REDIS_URL` never reach a log line or an error
//! message: every service binary is run with passwords in both URLs, once starting up
//! normally and once refusing its Redis URL; one service and `ctl` once failing to
//! reach Postgres; their whole output captured.

use std::path::Path;
use std::process::{Command, Stdio};

use test_support::TestEnv;
use test_support::process::{Signal, binary, free_port, send, wait_ready};

const PG_SECRET: &str = "pg-pass-7f3a9c";
const REDIS_SECRET: &str = "redis-pass-51be08";

/// `url` with `user:password@` in place of `user@` (Postgres here trusts any password).
fn with_pg_password(url: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{PG_SECRET}@"), 1)
}

/// The environment of `env` with the given URLs.
fn vars(env: &TestEnv, database_url: &str, redis_url: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env
        .process_vars()
        .into_iter()
        .filter(|(k, _)| k != "DATABASE_URL" && k != "REDIS_URL")
        .collect();
    vars.push(("DATABASE_URL".into(), database_url.into()));
    vars.push(("REDIS_URL".into(), redis_url.into()));
    vars
}

/// Runs `program` with `vars` (and `args`), its stdout and stderr into one file;
/// `ready` (a base URL) is waited for, then SIGTERM sent; returns everything it wrote.
async fn run_captured(
    program: &Path,
    args: &[&str],
    vars: &[(String, String)],
    ready: Option<&str>,
) -> String {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    if let Some(base) = ready {
        wait_ready(base, 60).await;
        send(child.id(), Signal::SIGTERM).unwrap();
    }
    let status = test_support::eventually(60, "the process to exit", || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await;
    let output = std::fs::read_to_string(log.path()).unwrap();
    if ready.is_none() {
        assert!(
            !status.success(),
            "{program:?} should have failed:\n{output}"
        );
    }
    output
}

fn assert_redacted(what: &str, output: &str) {
    for secret in [PG_SECRET, REDIS_SECRET] {
        assert!(
            !output.contains(secret),
            "{what} printed a password:\n{output}"
        );
    }
}

#[tokio::test]
async fn services_print_connection_urls_without_passwords() {
    let env = TestEnv::new().await;
    let database_url = with_pg_password(&env.settings.database_url);
    let redis_url = env.settings.redis_url.as_str().to_owned();
    // A URL the Redis client refuses outright (the database must be a number): the
    // error names the URL, which must come out without its password.
    let bad_redis = format!(
        "{}/not-a-db",
        redis_url.replacen("redis://", &format!("redis://:{REDIS_SECRET}@"), 1)
    );
    for (service, bind_var) in [
        ("ingest", "INGEST_BIND"),
        ("normalizer", "NORMALIZER_BIND"),
        ("identity-merger", "IDENTITY_MERGER_BIND"),
        ("ml-inference", "ML_INFERENCE_BIND"),
        ("api-gateway", "API_GATEWAY_BIND"),
    ] {
        let program = binary(service);
        // Starting up: the connection line names Postgres without the password.
        let port = free_port();
        let mut ok = vars(&env, &database_url, &redis_url);
        ok.push((bind_var.into(), format!("127.0.0.1:{port}")));
        let base = format!("http://127.0.0.1:{port}");
        let output = run_captured(&program, &[], &ok, Some(&base)).await;
        assert_redacted(service, &output);
        assert!(
            output.contains(&format!("postgres:{}@", config::REDACTED)),
            "{service} names its database, redacted:\n{output}"
        );

        // Failing: the error that ends the service names the Redis URL without the
        // password.
        let failing = vars(&env, &database_url, &bad_redis);
        let output = run_captured(&program, &[], &failing, None).await;
        assert_redacted(service, &output);
        assert!(
            output.contains(&format!("redis://:{}@", config::REDACTED)),
            "{service}'s error names the Redis URL, redacted:\n{output}"
        );
    }

    // A database that does not answer: the service gives up after the pool's acquire
    // timeout, naming the database without its password.
    let closed = format!(
        "postgres://postgres:{PG_SECRET}@127.0.0.1:{}/nowhere",
        free_port()
    );
    let output = run_captured(
        &binary("normalizer"),
        &[],
        &vars(&env, &closed, &redis_url),
        None,
    )
    .await;
    assert_redacted("normalizer", &output);
    assert!(
        output.contains(&format!("postgres:{}@127.0.0.1", config::REDACTED)),
        "the error names the database, redacted:\n{output}"
    );

    // ctl: the same database.
    let output = run_captured(
        Path::new(env!("CARGO_BIN_EXE_ctl")),
        &["migrate"],
        &vars(&env, &closed, &bad_redis),
        None,
    )
    .await;
    assert_redacted("ctl migrate", &output);
}
