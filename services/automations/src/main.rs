//! The `automations` binary: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::main("automations", |s| s.automations_bind, automations::run).await
}
