//! Normalised events for tests, built on one fixed clock: event `n` is a Segment page
//! view on the web at [`at`]`(n)` with id `0xE000_0000 + n`, carrying nothing until the
//! test adds identifiers, traits or another type, channel, id or time.
//!
//! ```
//! use domain::{Channel, IdentifierKind::*};
//! use test_support::events::{at, event};
//!
//! let e = event(2)
//!     .ids(&[(Email, "asha@mail.in")])
//!     .named(Some("Asha"))
//!     .channel(Channel::Pos)
//!     .build();
//! assert_eq!(e.occurred_at, at(2));
//! assert_eq!(e.traits["first_name"], "Asha");
//! ```

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::{Channel, EventType, Identifier, IdentifierKind, NormalizedEvent, Source};
use uuid::Uuid;

/// `minutes` after 2026-03-01 10:00 UTC, the fixtures' clock.
pub fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + Duration::minutes(minutes)
}

/// The identifier `value` of `kind` as an Indian source's event carries it
/// (normalised, default region `IN`); panics on one that does not parse.
pub fn id(kind: IdentifierKind, value: &str) -> Identifier {
    Identifier::parse(kind, value, "IN").unwrap()
}

/// Event `n` of a test (see the module doc), to complete and [`EventBuilder::build`].
pub fn event(n: u32) -> EventBuilder {
    let when = at(i64::from(n));
    EventBuilder(NormalizedEvent {
        event_id: Uuid::from_u128(0xE000_0000 + u128::from(n)),
        occurred_at: when,
        received_at: when,
        source: Source::Segment,
        integration_id: None,
        channel: Channel::Web,
        event_type: EventType::PageViewed,
        name: None,
        identifiers: Vec::new(),
        traits: Default::default(),
        properties: Default::default(),
        order: None,
    })
}

/// A [`NormalizedEvent`] under construction (from [`event`]).
#[derive(Debug, Clone)]
#[must_use = "an event is only made by `build`"]
pub struct EventBuilder(NormalizedEvent);

impl EventBuilder {
    /// Adds these identifiers (parsed by [`id`]).
    pub fn ids(self, ids: &[(IdentifierKind, &str)]) -> Self {
        self.identifiers(ids.iter().map(|(kind, value)| id(*kind, value)))
    }

    /// Adds these identifiers as they are.
    pub fn identifiers(mut self, ids: impl IntoIterator<Item = Identifier>) -> Self {
        self.0.identifiers.extend(ids);
        self
    }

    /// Sets the trait `key` to `value`.
    pub fn with_trait(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.0.traits.insert(key.to_owned(), value.into());
        self
    }

    /// Names the person (a `first_name` trait) when `first_name` is given.
    pub fn named(self, first_name: Option<&str>) -> Self {
        match first_name {
            Some(name) => self.with_trait("first_name", name),
            None => self,
        }
    }

    /// Sets the touchpoint.
    pub fn channel(mut self, channel: Channel) -> Self {
        self.0.channel = channel;
        self
    }

    /// Sets what happened.
    pub fn event_type(mut self, event_type: EventType) -> Self {
        self.0.event_type = event_type;
        self
    }

    /// Sets the event id.
    pub fn event_id(mut self, event_id: Uuid) -> Self {
        self.0.event_id = event_id;
        self
    }

    /// Sets when it happened.
    pub fn occurred_at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.0.occurred_at = occurred_at;
        self
    }

    /// Sets when ingest received it.
    pub fn received_at(mut self, received_at: DateTime<Utc>) -> Self {
        self.0.received_at = received_at;
        self
    }

    /// The event.
    pub fn build(self) -> NormalizedEvent {
        self.0
    }
}
