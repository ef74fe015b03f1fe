//! From a raw event to the normalised shape: the dispatcher the normalizer (and every
//! edge that validates with the mapping) calls. Each source's mapping lives in its own
//! module and is reached through the registry ([`crate::sources::of`]).
//!
//! Mapping is pure: a raw event and the default phone region in, a [`Normalized`] out,
//! or a [`MapError`] saying why the event cannot be mapped (the normalizer dead-letters
//! those with the reason). Identifier values that do not parse are dropped and reported
//! in [`Normalized::dropped`] with their reason, never guessed.

use domain::Source;
use streams::Envelope;

use crate::raw_event::{RawPayload, RawRecord};
use crate::sources::{self, MapError, Normalized};

/// Maps an `events.raw` envelope.
pub fn normalize_envelope(
    env: &Envelope<RawPayload>,
    region: &str,
) -> Result<Normalized, MapError> {
    let source: Source = env
        .source
        .parse()
        .map_err(|_| MapError::Unsupported(format!("source `{}`", env.source)))?;
    normalize(&RawRecord::of_envelope(env, source), region)
}

/// Maps a raw event of any source. The event's identifiers come out sorted and
/// de-duplicated, and its consent traits complete (status as `subscribed` /
/// `unsubscribed`, with source and time: [`domain::consent::stamp`]).
pub fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let mut out = sources::of(raw.source).normalize(raw, region)?;
    if let Some(ev) = out.event.as_mut() {
        ev.canonicalize();
        domain::consent::stamp(&mut ev.traits, raw.source.as_str(), ev.occurred_at);
    }
    Ok(out)
}
