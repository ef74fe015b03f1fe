//! What the tests of `ctl`'s commands share: running `ctl` as the real binary.

use std::process::{Command, Output};

use test_support::TestEnv;

/// Runs `ctl ARGS` with the env's settings plus `extra` variables and nothing else from
/// this process's environment, from a directory without a `.env`.
pub fn run(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut vars = env.process_vars();
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Command::new(env!("CARGO_BIN_EXE_ctl"))
        .args(args)
        .env_clear()
        .envs(vars)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running ctl")
}
