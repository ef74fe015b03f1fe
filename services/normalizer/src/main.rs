//! The `normalizer` binary: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::main("normalizer", |s| s.normalizer_bind, normalizer::run).await
}
