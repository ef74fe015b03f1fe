//! The knobs of identity resolution, read once from settings: which guards are on, the
//! per-profile limits (and the classes of identifiers they count), the suspect
//! threshold, the automatic-merge boundary, and which identifiers resolution considers
//! at all (junk removed). `ctl identity eval` switches the guards off to show what
//! they buy.

use config::identity::IdentitySettings;
use domain::{Identifier, IdentifierKind};

use super::blocklist::Blocklist;

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
        if identifier.is_order_reference() {
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

    /// The same policy with other guards.
    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = guards;
        self
    }

    /// Whether `identifier` is junk under this policy.
    pub fn is_junk(&self, identifier: &Identifier) -> bool {
        self.guards.blocklist
            && !identifier.is_order_reference()
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

#[cfg(test)]
mod tests {
    use super::*;
    use domain::IdentifierKind::*;
    use domain::Source;

    fn id(kind: IdentifierKind, v: &str) -> Identifier {
        Identifier::parse(kind, v, "IN").unwrap()
    }

    fn settings(pairs: &[(&'static str, &str)]) -> IdentitySettings {
        config::Settings::from_pairs(pairs.iter().map(|(k, v)| (*k, v.to_string())))
            .unwrap()
            .identity
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let p = Policy::default();
        assert_eq!(p.guards, Guards::ALL);
        assert_eq!(p.suspect_threshold, 2);
        assert_eq!(p.max_auto_merge, 3);
        assert_eq!(
            p.limits,
            Limits {
                emails: 3,
                phones: 3,
                customer_ids_per_source: 1,
                loyalty_ids: 1,
            }
        );
    }

    #[test]
    fn settings_set_every_knob() {
        let p = Policy::from_settings(&settings(&[
            ("IDENTITY_SUSPECT_THRESHOLD", "5"),
            ("IDENTITY_MAX_AUTO_MERGE", "0"),
            ("IDENTITY_MAX_EMAILS", "4"),
            ("IDENTITY_MAX_PHONES", "2"),
            ("IDENTITY_MAX_CUSTOMER_IDS_PER_SOURCE", "2"),
            ("IDENTITY_MAX_LOYALTY_IDS", "3"),
            ("IDENTITY_NAME_GUARD", "false"),
            ("IDENTITY_BLOCKLIST_EXTRA", "walkin"),
        ]));
        assert_eq!(p.suspect_threshold, 5);
        assert_eq!(p.max_auto_merge, 1, "at least one profile always attaches");
        assert_eq!(
            p.limits,
            Limits {
                emails: 4,
                phones: 2,
                customer_ids_per_source: 2,
                loyalty_ids: 3,
            }
        );
        assert_eq!(
            p.guards,
            Guards {
                names: false,
                ..Guards::ALL
            }
        );
        assert!(p.is_junk(&id(LoyaltyId, "WALKIN")));
    }

    #[test]
    fn classes_are_kinds_with_the_source_namespace_for_accounts() {
        assert_eq!(
            Class::of(&id(Email, "a@x.in")),
            Some(Class {
                kind: Email,
                namespace: None
            })
        );
        assert_eq!(
            Class::of(&id(CustomerId, "shopify:1")),
            Some(Class {
                kind: CustomerId,
                namespace: Some("shopify".into())
            })
        );
        assert_ne!(
            Class::of(&id(CustomerId, "shopify:1")),
            Class::of(&id(CustomerId, "segment:1")),
            "one account per source"
        );
        assert_eq!(
            Class::of(&id(PosCustomer, "store1:7")).unwrap().namespace,
            Some("store1".into())
        );
        for weak in [id(DeviceId, "d1"), id(CookieId, "c1")] {
            assert_eq!(
                Class::of(&weak),
                None,
                "devices and cookies are many per person"
            );
        }
        assert_eq!(
            Class::of(&Identifier::order_reference(Source::Shopify, "1001")),
            None
        );
    }

    #[test]
    fn each_class_has_its_limit() {
        let limits = Limits {
            emails: 1,
            phones: 2,
            customer_ids_per_source: 3,
            loyalty_ids: 4,
        };
        let of = |i: Identifier| Class::of(&i).and_then(|c| limits.of(&c));
        assert_eq!(of(id(Email, "a@x.in")), Some(1));
        assert_eq!(of(id(Phone, "+919812345678")), Some(2));
        assert_eq!(of(id(CustomerId, "shopify:1")), Some(3));
        assert_eq!(of(id(PosCustomer, "store1:1")), Some(3));
        assert_eq!(of(id(LoyaltyId, "L-1")), Some(4));
        for weak in [DeviceId, CookieId] {
            let class = Class {
                kind: weak,
                namespace: None,
            };
            assert_eq!(limits.of(&class), None);
        }
    }

    #[test]
    fn usable_identifiers_are_the_non_junk_ones_sorted_and_unique() {
        // Even a configured value never makes an order reference junk.
        let p = Policy {
            blocklist: Blocklist::new("@order:shopify:1"),
            ..Policy::default()
        };
        let a = id(Email, "asha@mail.in");
        let junk = id(Email, "test@test.com");
        let order = Identifier::order_reference(Source::Shopify, "1");
        assert!(p.blocklist.is_junk(&order));
        let got = p.usable(&[
            junk.clone(),
            order.clone(),
            a.clone(),
            a.clone(),
            id(CookieId, "c1"),
        ]);
        let mut want = vec![a, id(CookieId, "c1"), order.clone()];
        want.sort();
        assert_eq!(got, want, "junk dropped, order references never junk");
        // With the blocklist guard off, junk is used like anything else.
        let off = p.with_guards(Guards {
            blocklist: false,
            ..Guards::ALL
        });
        assert!(off.usable(std::slice::from_ref(&junk)).contains(&junk));
    }
}
