//! The `destinations` binary: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::main("destinations", |s| s.destinations_bind, destinations::run).await
}
