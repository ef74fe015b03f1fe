//! The ml-inference service.

use service_kit::ServiceContext;
use tokio::net::TcpListener;

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    let router = service_kit::ops_router(ctx.readiness());
    service_kit::serve(listener, router, ctx.shutdown.clone()).await
}
