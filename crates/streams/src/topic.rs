//! The topics of the fleet. Every key is prefixed by `STREAM_PREFIX`, so several fleets
//! (or parallel tests) share one Redis without seeing each other.

use std::fmt;

/// A stream topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Raw events as stored by ingest.
    EventsRaw,
    /// Normalised events from the normalizer.
    EventsNormalized,
    /// Analysts' requests for the identity merger (`domain::MergeRequest`): approve or
    /// reject a review item, merge by hand, unmerge, erase (GDPR). Rebuilds are not
    /// requests: `ctl identity rebuild` runs them itself under the fleet lock.
    MergeRequests,
    /// Profiles whose facts changed and need new predictions.
    PredictionsRequests,
    /// Profiles created, changed, merged, erased or newly predicted
    /// (`domain::ProfileChange`), published after the identity merger's or
    /// ml-inference's commit; the automations service keeps audiences live from it.
    ProfileChanges,
}

impl Topic {
    /// Every topic, in pipeline order.
    pub const ALL: [Topic; 5] = [
        Topic::EventsRaw,
        Topic::EventsNormalized,
        Topic::MergeRequests,
        Topic::PredictionsRequests,
        Topic::ProfileChanges,
    ];

    /// The unprefixed name (`events.raw`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Topic::EventsRaw => "events.raw",
            Topic::EventsNormalized => "events.normalized",
            Topic::MergeRequests => "profiles.merge_requests",
            Topic::PredictionsRequests => "predictions.requests",
            Topic::ProfileChanges => "profiles.changes",
        }
    }

    /// Parses an unprefixed name.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Redis key of this topic under `prefix`.
    pub fn key(self, prefix: &str) -> String {
        format!("{prefix}{}", self.name())
    }

    /// The Redis key of this topic's dead-letter stream under `prefix`.
    pub fn dlq_key(self, prefix: &str) -> String {
        format!("{prefix}{}.dlq", self.name())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
