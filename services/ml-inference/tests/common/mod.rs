//! Helpers shared by the ml-inference service tests.

use domain::PredictionRequest;
use streams::{Envelope, Topic};
use test_support::TestEnv;
use uuid::Uuid;

/// Publishes one scoring request per profile on `predictions.requests`, as the identity
/// merger's outbox relay does.
pub async fn request(env: &TestEnv, ids: &[Uuid]) {
    let envs: Vec<_> = ids
        .iter()
        .map(|id| {
            Envelope::new(
                Uuid::now_v7(),
                "test",
                "profile_changed",
                PredictionRequest { profile_id: *id },
            )
        })
        .collect();
    env.context()
        .streams()
        .publish_many(Topic::PredictionsRequests, &envs)
        .await
        .unwrap();
}
