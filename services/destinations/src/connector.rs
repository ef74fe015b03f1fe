//! What a destination kind does with records: upsert a batch, remove records, tell the
//! remote about a merge, and test the connection. [`build`] picks the kind's connector.

use async_trait::async_trait;
use domain::api::DestinationKind;

use crate::DestinationError;
use crate::http::{Http, SendError};
use crate::mapping::Record;
use crate::model::Destination;

pub mod hubspot;
pub mod rest;
pub mod salesforce;

/// What the remote said about one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; with the remote's own id when it gave one.
    Accepted(Option<String>),
    /// Refused for good, with the remote's error text (a dead letter).
    Rejected(String),
}

/// A record to remove from the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The profile (erased, merged away, or out of the mirrored audience).
    pub profile_id: uuid::Uuid,
    /// The key the remote has it under.
    pub key: String,
    /// The remote's id for it, when known.
    pub remote_id: Option<String>,
    /// An erasure (GDPR): deleted for good where the remote distinguishes.
    pub erase: bool,
}

/// A merge to report: `merged` was absorbed into `survivor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The merged-away profile's record.
    pub merged: Removal,
    /// The survivor's key and remote id, when the remote has it.
    pub survivor: Option<(String, Option<String>)>,
}

/// One destination kind's protocol.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Upserts `records` (at most the destination's batch size); one outcome per record,
    /// in order. An `Err` concerns the whole request.
    async fn upsert(&self, records: &[Record]) -> Result<Vec<Outcome>, SendError>;

    /// Removes `records`; one outcome per record, in order.
    async fn remove(&self, records: &[Removal]) -> Result<Vec<Outcome>, SendError>;

    /// Tells the remote that a profile was merged into another: merges the two records
    /// where the API can, else removes the merged-away one.
    async fn merge(&self, merge: &Merge) -> Result<Outcome, SendError>;

    /// Checks the endpoint and credentials; a short description of what answered.
    async fn test(&self) -> Result<String, SendError>;
}

/// The connector of `dest`'s kind, sending through `http`.
pub fn build(
    dest: &Destination,
    http: Http,
    hubspot_base: &str,
) -> Result<Box<dyn Connector>, DestinationError> {
    Ok(match dest.kind {
        DestinationKind::Hubspot => Box::new(hubspot::HubSpot::new(dest, http, hubspot_base)?),
        DestinationKind::Salesforce => Box::new(salesforce::Salesforce::new(dest, http)?),
        DestinationKind::Rest => Box::new(rest::Rest::new(dest, http)?),
    })
}
