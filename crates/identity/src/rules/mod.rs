//! Every rule that decides "same person or not", in one pure place: no I/O, no clock,
//! no randomness. The engine ([`crate::engine`]) only keeps the graph these rules are
//! asked about; the resolver only loads and writes it. The prose of these rules, with
//! the measured quality they buy, is `docs/identity.md` (from "The rule for one event"
//! on), which points back here; each rule below names the section that states it.
//!
//! **Which identifiers count** ([`blocklist`], [`Policy::usable`]). Junk values people
//! and tills type when they have nothing real to give (`test@test.com`, `n/a`,
//! `9999999999`, repeated digits, plus `IDENTITY_BLOCKLIST_EXTRA`) are dropped before
//! anything else, so they never create, attach or merge. Order references are never
//! junk. (docs: "The rule for one event".)
//!
//! **Match priority** ([`decision`]). Phone, e-mail and customer id (4) outrank loyalty
//! id and store code (3), device (2) and cookie (1); a link at or below
//! [`WEAK_PRIORITY`] is weak. The event is a hub: the profiles its identifiers match,
//! and its unowned ("fresh") identifiers, are taken strongest first — names that fit
//! the event's before those that clash, existing profiles before fresh identifiers,
//! older profiles first — and each joins the group unless a guard objects.
//! (docs: "The rule for one event".)
//!
//! **The guards** ([`decision`], switched by [`Guards`]):
//! - *separated*: an analyst said these identifiers are different people; nothing
//!   joins and no review item is raised (already decided);
//! - *name conflict* ([`names`]): both sides name their person and the first names
//!   clearly differ — `raj`/`rajesh` and one typo in a long name agree, WhatsApp
//!   display names never count — so a family sharing one phone stays apart (review
//!   item `name_conflict`);
//! - *shared weak identifier*: the link is only a device or cookie and both sides hold
//!   different e-mails, phones, customer ids (per source) or loyalty ids — two people
//!   on one device (review item `shared_weak_identifier`); fresh identifiers still
//!   join when the event names the same person as the profile (a second e-mail on
//!   one's own browser), but two existing profiles never merge through a device;
//! - *limit* ([`Limits`], [`Class`]): the joined profile would hold more e-mails,
//!   phones, loyalty ids or customer ids of one source than a person has (review item
//!   `limit_exceeded`); fresh identifiers over a limit are only withheld, and a
//!   profile already over a limit (an analyst merged it) still takes its own events.
//!
//! (docs: "The rule for one event", the guard table.)
//!
//! **The outcome** ([`decide`]). No existing profile joined → a new profile; one →
//! attach (with the fresh identifiers, within the limits); two up to
//! `IDENTITY_MAX_AUTO_MERGE` (3) → merge into the oldest, the [`MergeRule`] named by
//! the weakest link; more → review item `too_many_profiles`, and the event attaches to
//! the best match. Every objection except "separated" becomes a [`ReviewReason`] with
//! its evidence. (docs: "The rule for one event".)
//!
//! **Identifiers that stop linking** (docs: "Identifiers that stop linking"):
//! - *suspect* ([`suspect`]): seen with more distinct identifiers of one kind than one
//!   person may hold plus `IDENTITY_SUSPECT_THRESHOLD` — a store's counter phone, a
//!   kiosk tablet; a property of the whole event set;
//! - *shared* ([`Decision::shared`]): the device or cookie of a shared-weak-identifier
//!   conflict between different people, or the identifier through which a profile
//!   met an event naming someone else (the family phone); learned in time order.
//!
//! **Link-only identifiers** ([`DecisionInput::link_only`]): identifiers an event only
//! links through — a Segment alias's `previousId` in each form it may have had. Held by
//! a profile, they link under every guard above; held by nobody, they are withheld
//! ([`Withheld::LinkOnly`]) and never given to a profile. (docs: "Aliases".)
//!
//! **What a profile remembers of names** ([`names::remember_name`]): the first
//! [`names::MAX_NAMES`] names that agree with the ones it holds.
//!
//! The knobs and their defaults are [`Policy`] (docs: "Settings").

pub mod blocklist;
pub mod decision;
pub mod names;
pub mod policy;
pub mod suspect;

pub use decision::{
    Candidate, Decision, DecisionInput, MergeRule, NoSeparations, ReviewProposal, ReviewReason,
    Separations, Target, WEAK_PRIORITY, Withheld, decide,
};
pub use policy::{Class, Guards, Limits, Policy};
pub use suspect::{PartnerSet, observe_partners};
