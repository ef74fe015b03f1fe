//! `ctl user add` and `ctl token create`, run as the real binary against a fresh
//! database: what they make signs in and authenticates through the same store the
//! api-gateway uses.

mod ctl_cli;

use std::process::Output;

use domain::api::Role;
use test_support::TestEnv;

use ctl_cli::run as ctl;

fn field(out: &Output, name: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn users_and_tokens_from_the_shell() {
    let env = TestEnv::new().await;
    let out = ctl(
        &env,
        &[
            "user",
            "add",
            "--email",
            "Ops@Example.com",
            "--role",
            "admin",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = field(&out, "password:");
    assert!(password.len() >= 12, "a generated password is printed once");
    let user = storage::users::find_user_by_email(&env.db, "ops@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.role(), Role::Admin);
    assert!(storage::users::verify_password(
        &user.password_hash,
        &password
    ));

    let out = ctl(
        &env,
        &[
            "user",
            "add",
            "--email",
            "analyst@example.com",
            "--role",
            "analyst",
        ],
        &[("CTL_USER_PASSWORD", "a chosen long password")],
    );
    assert!(out.status.success());
    assert!(
        field(&out, "password:").is_empty(),
        "a given password is not echoed"
    );
    let analyst = storage::users::find_user_by_email(&env.db, "analyst@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(storage::users::verify_password(
        &analyst.password_hash,
        "a chosen long password"
    ));

    for bad in [
        vec!["user", "add", "--email", "x@example.com", "--role", "root"],
        vec![
            "user",
            "add",
            "--email",
            "ops@example.com",
            "--role",
            "viewer",
        ],
        vec![
            "user",
            "add",
            "--email",
            "y@example.com",
            "--role",
            "viewer",
            "--password",
            "short",
        ],
    ] {
        let out = ctl(&env, &bad, &[]);
        assert!(!out.status.success(), "{bad:?} is refused");
    }

    let out = ctl(
        &env,
        &["token", "create", "--name", "warehouse", "--role", "viewer"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = field(&out, "token:");
    let found = storage::users::find_token(&env.db, &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.name, "warehouse");
    assert_eq!(found.role(), Role::Viewer);
}

/// Short commands run under the services' statement and lock timeouts: behind a lock
/// that is not released, `ctl user add` fails with Postgres' reason instead of waiting
/// forever, and succeeds once the lock is gone.
#[tokio::test]
async fn a_short_command_gives_up_behind_a_held_lock() {
    let env = TestEnv::new().await;
    let add = [
        "user",
        "add",
        "--email",
        "late@example.com",
        "--role",
        "viewer",
    ];
    let mut tx = env.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let out = ctl(&env, &add, &[("DATABASE_LOCK_TIMEOUT_MS", "300")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused behind the lock");
    assert!(
        stderr.contains("lock timeout"),
        "names the lock timeout: {stderr}"
    );
    tx.rollback().await.unwrap();
    assert!(
        storage::users::find_user_by_email(&env.db, "late@example.com")
            .await
            .unwrap()
            .is_none(),
        "nothing half-written"
    );

    let out = ctl(&env, &add, &[("DATABASE_LOCK_TIMEOUT_MS", "300")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
