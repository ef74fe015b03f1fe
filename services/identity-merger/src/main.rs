//! The `identity-merger` binary: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::main(
        "identity-merger",
        |s| s.identity_merger_bind,
        identity_merger::run,
    )
    .await
}
