//! The `ml-inference` binary: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::main("ml-inference", |s| s.ml_inference_bind, ml_inference::run).await
}
