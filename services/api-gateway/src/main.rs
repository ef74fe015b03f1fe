//! The `api-gateway` binary: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::main("api-gateway", |s| s.api_gateway_bind, api_gateway::run).await
}
