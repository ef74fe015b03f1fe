//! The `ingest` binary: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::main("ingest", |s| s.ingest_bind, ingest::run).await
}
