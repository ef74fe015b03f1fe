//! The knobs of identity resolution, read once from settings: thresholds, per-profile
//! limits, and which guards are on. `ctl identity eval` switches the guards off to
//! show what they buy.

use config::identity::IdentitySettings;
use domain::{Identifier, IdentifierKind};

use crate::blocklist::Blocklist;

/// Which guards are in force. Every guard only ever prevents a merge or attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// Drop junk identifier values.
    pub blocklist: bool,
    /// Stop identifiers learned to be shared from linking anything.
    pub suspect: bool,
    /// A device or cookie never joins profiles with different strong identifiers of
    /// one kind (two people on one device).
    pub weak_conflict: bool,
    /// Per-profile limits on strong identifiers.
    pub limits: bool,
    /// Never join profiles whose people's first names clearly differ.
    pub names: bool,
}

impl Guards {
    /// Every guard on.
    pub const ALL: Guards = Guards {
        blocklist: true,
        suspect: true,
        weak_conflict: true,
        limits: true,
        names: true,
    };
    /// Every guard off: plain union of everything that shares an identifier (the
    /// 2/3-profile auto-merge boundary still applies).
    pub const NONE: Guards = Guards {
        blocklist: false,
        suspect: false,
        weak_conflict: false,
        limits: false,
        names: false,
    };
}

/// What a profile may hold before a merge needs review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// E-mail addresses.
    pub emails: u32,
    /// Phone numbers.
    pub phones: u32,
    /// Customer ids (and store customer codes) per source namespace.
    pub customer_ids_per_source: u32,
    /// Loyalty ids.
    pub loyalty_ids: u32,
}

impl Limits {
    /// The limit for identifiers of `class`, if any.
    pub fn of(&self, class: &Class) -> Option<u32> {
        match class.kind {
            IdentifierKind::Email => Some(self.emails),
            IdentifierKind::Phone => Some(self.phones),
            IdentifierKind::CustomerId | IdentifierKind::PosCustomer => {
                Some(self.customer_ids_per_source)
            }
            IdentifierKind::LoyaltyId => Some(self.loyalty_ids),
            IdentifierKind::DeviceId | IdentifierKind::CookieId => None,
        }
    }
}

/// A class of identifiers a person normally has few of: a kind, plus the source
/// namespace for customer ids and store codes (one Shopify id and one Segment user id
/// are not two of the same thing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class {
    /// The kind.
    pub kind: IdentifierKind,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
}

impl Class {
    /// The class of a strong or medium identifier; `None` for weak ones (devices and
    /// cookies are many per person and say nothing on their own).
    pub fn of(identifier: &Identifier) -> Option<Class> {
        if crate::model::is_order_ref(identifier) {
            return None;
        }
        match identifier.kind {
            IdentifierKind::DeviceId | IdentifierKind::CookieId => None,
            IdentifierKind::CustomerId | IdentifierKind::PosCustomer => Some(Class {
                kind: identifier.kind,
                namespace: identifier
                    .value
                    .split_once(':')
                    .map(|(ns, _)| ns.to_owned()),
            }),
            kind => Some(Class {
                kind,
                namespace: None,
            }),
        }
    }
}

/// Everything the rules need to know besides the facts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Guards in force.
    pub guards: Guards,
    /// Junk values.
    pub blocklist: Blocklist,
    /// An identifier seen with more distinct strong or medium identifiers of one kind
    /// than one person may hold (the limit of that kind) plus this many is suspect.
    pub suspect_threshold: u32,
    /// Most existing profiles one event may merge automatically.
    pub max_auto_merge: u32,
    /// Per-profile limits.
    pub limits: Limits,
}

impl Policy {
    /// The policy the settings describe, every guard on.
    pub fn from_settings(s: &IdentitySettings) -> Self {
        Self {
            guards: Guards {
                names: s.identity_name_guard,
                ..Guards::ALL
            },
            blocklist: Blocklist::new(&s.identity_blocklist_extra),
            suspect_threshold: s.identity_suspect_threshold,
            max_auto_merge: s.identity_max_auto_merge.max(1),
            limits: Limits {
                emails: s.identity_max_emails,
                phones: s.identity_max_phones,
                customer_ids_per_source: s.identity_max_customer_ids_per_source,
                loyalty_ids: s.identity_max_loyalty_ids,
            },
        }
    }

    /// Most distinct partners of `kind` an identifier may be seen with before it is
    /// suspect: what one person may hold of that kind (a household's members together
    /// may add a few) plus `suspect_threshold`. A store's counter phone typed on bills
    /// with loyalty cards is suspect after `1 + threshold` cards; a person's loyalty card
    /// seen with the counter phones of a few stores stays trusted.
    pub fn partner_threshold(&self, kind: IdentifierKind) -> usize {
        let one_person = match kind {
            IdentifierKind::Email => self.limits.emails,
            IdentifierKind::Phone => self.limits.phones,
            IdentifierKind::LoyaltyId => self.limits.loyalty_ids,
            // One account per source, and a person meets a few sources.
            IdentifierKind::CustomerId | IdentifierKind::PosCustomer => {
                self.limits.customer_ids_per_source.saturating_mul(3)
            }
            IdentifierKind::DeviceId | IdentifierKind::CookieId => 0,
        };
        (one_person + self.suspect_threshold) as usize
    }

    /// The same policy with other guards.
    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = guards;
        self
    }

    /// Whether `identifier` is junk under this policy.
    pub fn is_junk(&self, identifier: &Identifier) -> bool {
        self.guards.blocklist
            && !crate::model::is_order_ref(identifier)
            && self.blocklist.is_junk(identifier)
    }

    /// The identifiers of an event resolution considers: junk removed, sorted, unique.
    pub fn usable(&self, identifiers: &[Identifier]) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = identifiers
            .iter()
            .filter(|i| !self.is_junk(i))
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::from_settings(
            &config::Settings::from_pairs([])
                .expect("default settings are valid")
                .identity,
        )
    }
}
