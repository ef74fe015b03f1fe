//! The suspect rule: an identifier seen with more distinct identifiers of one kind
//! than a person (or a household) may hold is shared by many people — a store's
//! counter phone typed on every bill, a kiosk tablet — and links nothing.
//!
//! Each identifier keeps its *partners*: the distinct strong and medium identifiers it
//! was seen with on one event, per kind, as 64-bit keys capped just above the
//! threshold (so the set stays small and holds no values). Weak partners (devices,
//! cookies) and order references never count. The threshold of a kind is what one
//! person may hold of it (the per-profile limit; three sources' customer ids) plus
//! `IDENTITY_SUSPECT_THRESHOLD`: a counter phone is suspect after its fourth distinct
//! loyalty card, while a person's loyalty card seen with a few stores' counter phones
//! stays trusted.
//!
//! Suspect is a property of the whole event set: the streaming resolver replays the
//! region an identifier linked when it turns suspect, and a rebuild learns every
//! suspect identifier before resolving anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use domain::{Identifier, IdentifierKind, Strength};
use serde::{Deserialize, Serialize};

use crate::model::identifier_key;
use crate::rules::Policy;

impl Policy {
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
}

/// Distinct strong and medium identifiers one identifier has been seen with, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartnerSet {
    /// Partner keys per kind.
    pub by_kind: BTreeMap<IdentifierKind, BTreeSet<i64>>,
}

impl PartnerSet {
    /// Whether more distinct partners of one kind were seen than the policy allows
    /// (see [`Policy::partner_threshold`]).
    pub fn is_suspect(&self, policy: &Policy) -> bool {
        self.by_kind
            .iter()
            .any(|(kind, s)| s.len() > policy.partner_threshold(*kind))
    }

    /// Records `partners` (the other identifiers of one event). Returns whether the
    /// set changed.
    pub fn observe<'a>(
        &mut self,
        me: &Identifier,
        partners: impl IntoIterator<Item = &'a Identifier>,
        policy: &Policy,
    ) -> bool {
        let mut changed = false;
        for other in partners {
            if other == me || other.strength() < Strength::Medium || other.is_order_reference() {
                continue;
            }
            let cap = policy.partner_threshold(other.kind) + 1;
            let set = self.by_kind.entry(other.kind).or_default();
            if set.len() < cap {
                changed |= set.insert(identifier_key(other));
            }
        }
        changed
    }
}

/// Records the co-occurrences of one event's usable identifiers in `partners` (a map
/// from identifier to its set) and returns the identifiers that became suspect.
pub fn observe_partners(
    policy: &Policy,
    partners: &mut HashMap<Identifier, PartnerSet>,
    usable: &[Identifier],
) -> Vec<Identifier> {
    let mut newly = Vec::new();
    if usable.len() < 2 {
        return newly;
    }
    for id in usable.iter().filter(|i| !i.is_order_reference()) {
        let set = partners.entry(id.clone()).or_default();
        let was = set.is_suspect(policy);
        set.observe(id, usable, policy);
        if !was && set.is_suspect(policy) {
            newly.push(id.clone());
        }
    }
    newly
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::IdentifierKind::*;
    use domain::Source;

    fn id(kind: IdentifierKind, v: &str) -> Identifier {
        Identifier::parse(kind, v, "IN").unwrap()
    }

    /// The `n`-th distinct identifier of `kind`.
    fn nth(kind: IdentifierKind, n: usize) -> Identifier {
        match kind {
            Email => id(Email, &format!("p{n}@x.in")),
            Phone => id(Phone, &format!("+9198100{:05}", n * 7 + 11)),
            LoyaltyId => id(LoyaltyId, &format!("L-{n}")),
            CustomerId => id(CustomerId, &format!("shop:{n}")),
            PosCustomer => id(PosCustomer, &format!("store1:{n}")),
            DeviceId => id(DeviceId, &format!("dev-{n}")),
            CookieId => id(CookieId, &format!("ck-{n}")),
        }
    }

    #[test]
    fn each_kinds_threshold_is_one_persons_limit_plus_the_setting() {
        let policy = Policy::default();
        let t = policy.suspect_threshold as usize;
        let l = policy.limits;
        assert_eq!(policy.partner_threshold(Email), l.emails as usize + t);
        assert_eq!(policy.partner_threshold(Phone), l.phones as usize + t);
        assert_eq!(
            policy.partner_threshold(LoyaltyId),
            l.loyalty_ids as usize + t
        );
        for kind in [CustomerId, PosCustomer] {
            assert_eq!(
                policy.partner_threshold(kind),
                3 * l.customer_ids_per_source as usize + t,
                "a person meets a few sources"
            );
        }
        for kind in [DeviceId, CookieId] {
            assert_eq!(policy.partner_threshold(kind), t);
        }
        let stricter = Policy {
            suspect_threshold: 0,
            ..Policy::default()
        };
        assert_eq!(
            stricter.partner_threshold(LoyaltyId),
            l.loyalty_ids as usize
        );
    }

    #[test]
    fn an_identifier_turns_suspect_one_partner_past_each_threshold() {
        let policy = Policy::default();
        let me = id(Phone, "+918040001234");
        for kind in [Email, Phone, LoyaltyId, CustomerId, PosCustomer] {
            let threshold = policy.partner_threshold(kind);
            let mut partners = HashMap::new();
            let mut became = Vec::new();
            for n in 0..=threshold {
                became.extend(observe_partners(
                    &policy,
                    &mut partners,
                    &[me.clone(), nth(kind, n)],
                ));
                let expect_suspect = n == threshold;
                assert_eq!(
                    partners[&me].is_suspect(&policy),
                    expect_suspect,
                    "{kind}: {} partners",
                    n + 1
                );
            }
            assert_eq!(became, vec![me.clone()], "{kind}: reported once");
            // Seen again with yet more partners, it is not reported again.
            assert!(
                observe_partners(&policy, &mut partners, &[me.clone(), nth(kind, 99)]).is_empty()
            );
        }
    }

    #[test]
    fn a_persons_phone_with_their_few_emails_stays_trusted() {
        let policy = Policy::default();
        let mut partners = HashMap::new();
        let phone = id(Phone, "+919812345678");
        for n in 0..policy.limits.emails as usize {
            assert!(
                observe_partners(&policy, &mut partners, &[phone.clone(), nth(Email, n)])
                    .is_empty()
            );
        }
        assert!(!partners[&phone].is_suspect(&policy));
    }

    #[test]
    fn weak_partners_and_order_references_never_count() {
        let policy = Policy::default();
        let me = id(Phone, "+918040001234");
        let mut set = PartnerSet::default();
        for n in 0..10 {
            assert!(!set.observe(&me, [&nth(CookieId, n), &nth(DeviceId, n)], &policy));
            let order = Identifier::order_reference(Source::Shopify, &n.to_string());
            assert!(!set.observe(&me, [&order], &policy));
        }
        assert!(set.by_kind.values().all(BTreeSet::is_empty));
        assert!(!set.observe(&me, [&me], &policy), "itself is no partner");
        // An order reference never becomes suspect itself either.
        let order = Identifier::order_reference(Source::Shopify, "1001");
        let mut partners = HashMap::new();
        for n in 0..10 {
            observe_partners(&policy, &mut partners, &[order.clone(), nth(Email, n)]);
        }
        assert!(!partners.contains_key(&order));
    }

    #[test]
    fn a_lone_identifier_has_no_partners() {
        let policy = Policy::default();
        let mut partners = HashMap::new();
        assert!(observe_partners(&policy, &mut partners, &[nth(Email, 1)]).is_empty());
        assert!(partners.is_empty());
    }

    #[test]
    fn partner_sets_are_capped_just_above_the_threshold() {
        let policy = Policy::default();
        let me = id(Phone, "+918040001234");
        let mut set = PartnerSet::default();
        for n in 0..50 {
            set.observe(&me, [&nth(LoyaltyId, n)], &policy);
        }
        assert_eq!(
            set.by_kind[&LoyaltyId].len(),
            policy.partner_threshold(LoyaltyId) + 1
        );
        assert!(set.is_suspect(&policy));
        // Stored as keys, not values.
        let json = serde_json::to_string(&set).unwrap();
        assert!(!json.contains("L-1"), "{json}");
    }
}
