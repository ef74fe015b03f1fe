//! Identifiers: the values that say "this event belongs to that person".
//!
//! Every identifier is normalised before it is stored or compared, so `User@Mail.com `
//! and `user@mail.com` are one identifier and `+91 98765 43210`, `098765 43210` and
//! `whatsapp:+919876543210` are one phone. An [`Identifier`] can only be built through
//! [`Identifier::parse`], which either normalises the raw value or says why it cannot;
//! values are never guessed.

use serde::{Deserialize, Serialize};
use std::fmt;

names! {
    /// The kinds of identifier the identity graph understands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum IdentifierKind("identifier kind") {
        /// An e-mail address, trimmed and lower-cased.
        Email = "email",
        /// A phone number in E.164 (WhatsApp numbers are phones).
        Phone = "phone",
        /// A source's own customer id, namespaced `source:id` (Shopify/Woo customer id,
        /// Segment `userId`).
        CustomerId = "customer_id",
        /// A loyalty programme id, upper-cased with white space removed.
        LoyaltyId = "loyalty_id",
        /// Point-of-sale bill metadata such as a store customer code, namespaced `store:code`.
        PosCustomer = "pos_customer",
        /// A device id (mobile advertising id, app install id).
        DeviceId = "device_id",
        /// A browser cookie id (Segment `anonymousId`).
        CookieId = "cookie_id",
    }
}

/// How much an identifier says about who a person is. Higher is stronger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    /// Shared by everyone using a browser or device: never merges two people with
    /// different strong identifiers.
    Weak,
    /// Issued by the brand but re-used or typed by staff (loyalty, store codes).
    Medium,
    /// Belongs to one person: e-mail, phone, a source's customer id.
    Strong,
}

impl IdentifierKind {
    /// The strength class of this kind.
    pub fn strength(self) -> Strength {
        match self {
            IdentifierKind::Email | IdentifierKind::Phone | IdentifierKind::CustomerId => {
                Strength::Strong
            }
            IdentifierKind::LoyaltyId | IdentifierKind::PosCustomer => Strength::Medium,
            IdentifierKind::DeviceId | IdentifierKind::CookieId => Strength::Weak,
        }
    }

    /// Match priority: when an event's identifiers point at different profiles, the
    /// match through the highest priority wins. phone/email/customer id (4) >
    /// loyalty id and store code (3) > device id (2) > cookie id (1).
    pub fn priority(self) -> u8 {
        match self {
            IdentifierKind::Email | IdentifierKind::Phone | IdentifierKind::CustomerId => 4,
            IdentifierKind::LoyaltyId | IdentifierKind::PosCustomer => 3,
            IdentifierKind::DeviceId => 2,
            IdentifierKind::CookieId => 1,
        }
    }
}

/// Why a raw value could not become an identifier. The normaliser counts these by
/// reason instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// Nothing but white space.
    #[error("empty {0} value")]
    Empty(IdentifierKind),
    /// Not shaped like an e-mail address.
    #[error("`{0}` is not an e-mail address")]
    InvalidEmail(String),
    /// Not a dialable phone number for the given or default region.
    #[error("`{0}` is not a valid phone number")]
    InvalidPhone(String),
    /// Longer than any real identifier (256 bytes).
    #[error("{0} value longer than 256 bytes")]
    TooLong(IdentifierKind),
    /// A namespaced kind (customer id, POS code) without its namespace.
    #[error("{0} value needs a `namespace:id` form")]
    MissingNamespace(IdentifierKind),
}

/// A normalised identifier: a kind and a canonical value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Identifier {
    /// What kind of identifier this is.
    pub kind: IdentifierKind,
    /// The canonical value (see [`Identifier::parse`]).
    pub value: String,
}

const MAX_LEN: usize = 256;

/// Namespace of order references: customer ids the identity merger mints as
/// `@order:<source>:<order id>` to tie every event of one order together, so a refund
/// or cancellation that carries no customer identifier still lands on the profile that
/// placed the order. No source can produce it; Customer 360 identifier lists leave
/// these out.
pub const ORDER_NAMESPACE: &str = "@order";

/// Whether an identifier of `kind` and `value` is an order reference.
pub fn is_order_reference(kind: IdentifierKind, value: &str) -> bool {
    kind == IdentifierKind::CustomerId
        && value
            .strip_prefix(ORDER_NAMESPACE)
            .is_some_and(|rest| rest.starts_with(':'))
}

impl Identifier {
    /// The order reference of `source`'s order `order_id` (`@order:<source>:<id>`).
    ///
    /// An internal strong identifier that ties every event of one order together, so
    /// `orders.profile_id` is simply the owner of this reference. The identity merger
    /// never counts order references towards limits, weak conflicts or suspect
    /// learning and never suppresses them (`crates/identity`, docs/identity.md).
    pub fn order_reference(source: crate::Source, order_id: &str) -> Identifier {
        Identifier {
            kind: IdentifierKind::CustomerId,
            value: format!("{ORDER_NAMESPACE}:{source}:{order_id}"),
        }
    }

    /// Whether this identifier is an order reference (see [`ORDER_NAMESPACE`]).
    pub fn is_order_reference(&self) -> bool {
        is_order_reference(self.kind, &self.value)
    }
}

impl Identifier {
    /// Normalises a raw value of the given kind.
    ///
    /// `default_region` (ISO 3166 alpha-2, e.g. `IN`) reads phone numbers written
    /// without a country code. Rules: e-mail trimmed and lower-cased, one `@` with a
    /// dotted domain; phone to E.164 (`whatsapp:` prefix accepted); loyalty id
    /// upper-cased without white space; customer id and POS code need `namespace:id`;
    /// device and cookie ids trimmed.
    pub fn parse(
        kind: IdentifierKind,
        raw: &str,
        default_region: &str,
    ) -> Result<Self, IdentifierError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(IdentifierError::Empty(kind));
        }
        if trimmed.len() > MAX_LEN {
            return Err(IdentifierError::TooLong(kind));
        }
        let value = match kind {
            IdentifierKind::Email => normalize_email(trimmed)?,
            IdentifierKind::Phone => normalize_phone(trimmed, default_region)?,
            IdentifierKind::LoyaltyId => trimmed
                .chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_uppercase)
                .collect(),
            IdentifierKind::CustomerId | IdentifierKind::PosCustomer => {
                match trimmed.split_once(':') {
                    Some((ns, id)) if !ns.trim().is_empty() && !id.trim().is_empty() => {
                        format!("{}:{}", ns.trim().to_lowercase(), id.trim())
                    }
                    _ => return Err(IdentifierError::MissingNamespace(kind)),
                }
            }
            IdentifierKind::DeviceId | IdentifierKind::CookieId => trimmed.to_owned(),
        };
        Ok(Identifier { kind, value })
    }

    /// Builds a namespaced customer id (`shopify:123`) from a source name and its id.
    pub fn customer_id(namespace: &str, id: &str) -> Result<Self, IdentifierError> {
        Self::parse(IdentifierKind::CustomerId, &format!("{namespace}:{id}"), "")
    }

    /// The strength class of this identifier's kind.
    pub fn strength(&self) -> Strength {
        self.kind.strength()
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

fn normalize_email(raw: &str) -> Result<String, IdentifierError> {
    let email = raw.strip_prefix("mailto:").unwrap_or(raw).to_lowercase();
    let bad = || IdentifierError::InvalidEmail(raw.to_owned());
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if local.is_empty() || domain.contains('@') || email.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    if !domain_ok {
        return Err(bad());
    }
    Ok(email)
}

#[cfg(feature = "phone")]
fn normalize_phone(raw: &str, default_region: &str) -> Result<String, IdentifierError> {
    use phonenumber::Mode;
    let bad = || IdentifierError::InvalidPhone(raw.to_owned());
    let stripped = raw
        .strip_prefix("whatsapp:")
        .or_else(|| raw.strip_prefix("tel:"))
        .unwrap_or(raw)
        .trim();
    if !stripped.chars().any(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let region = default_region.parse::<phonenumber::country::Id>().ok();
    // A bare run of digits longer than a national number is an international number
    // written without its `+` (WhatsApp's `WaId`, many CSV exports).
    let digits_only = stripped.chars().all(|c| c.is_ascii_digit());
    let parsed = phonenumber::parse(region, stripped)
        .ok()
        .filter(phonenumber::is_valid)
        .or_else(|| {
            digits_only
                .then(|| phonenumber::parse(None, format!("+{stripped}")).ok())
                .flatten()
                .filter(phonenumber::is_valid)
        })
        .ok_or_else(bad)?;
    Ok(parsed.format().mode(Mode::E164).to_string())
}

#[cfg(not(feature = "phone"))]
fn normalize_phone(raw: &str, _default_region: &str) -> Result<String, IdentifierError> {
    // Without phone metadata only numbers already in E.164 are accepted.
    let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    if raw.trim_start().starts_with('+') && (8..=15).contains(&digits.len()) {
        Ok(format!("+{digits}"))
    } else {
        Err(IdentifierError::InvalidPhone(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_references_are_told_apart() {
        assert!(is_order_reference(
            IdentifierKind::CustomerId,
            "@order:shopify:1001"
        ));
        assert!(!is_order_reference(
            IdentifierKind::CustomerId,
            "shopify:42"
        ));
        assert!(!is_order_reference(IdentifierKind::CustomerId, "@orders:x"));
        assert!(!is_order_reference(IdentifierKind::Email, "@order:x"));
    }

    #[test]
    fn an_order_reference_is_built_in_its_namespace_and_no_source_id_is_one() {
        let r = Identifier::order_reference(crate::Source::Shopify, "1001");
        assert_eq!(r.value, "@order:shopify:1001");
        assert!(r.is_order_reference());
        assert!(
            !Identifier::customer_id("shopify", "1001")
                .unwrap()
                .is_order_reference()
        );
        assert!(
            !Identifier::customer_id("orderly", "1")
                .unwrap()
                .is_order_reference()
        );
    }

    fn parse(kind: IdentifierKind, raw: &str) -> Result<String, IdentifierError> {
        Identifier::parse(kind, raw, "IN").map(|i| i.value)
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            parse(IdentifierKind::Email, "  User@Mail.COM ").unwrap(),
            "user@mail.com"
        );
        assert_eq!(
            parse(IdentifierKind::Email, "mailto:a.b+c@x.co.in").unwrap(),
            "a.b+c@x.co.in"
        );
        for bad in [
            "no-at-sign",
            "@x.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@b..com",
        ] {
            assert!(parse(IdentifierKind::Email, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_become_e164() {
        for raw in [
            "+91 98765 43210",
            "098765 43210",
            "9876543210",
            "whatsapp:+919876543210",
            "919876543210",
            "+91-98765-43210",
        ] {
            assert_eq!(
                parse(IdentifierKind::Phone, raw).unwrap(),
                "+919876543210",
                "{raw}"
            );
        }
        assert_eq!(
            parse(IdentifierKind::Phone, "+1 (415) 555-2671").unwrap(),
            "+14155552671"
        );
        for bad in ["12", "abc", "+", "0000"] {
            assert!(parse(IdentifierKind::Phone, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaced_and_plain_kinds() {
        assert_eq!(
            parse(IdentifierKind::CustomerId, "Shopify: 123").unwrap(),
            "shopify:123"
        );
        assert_eq!(
            Identifier::customer_id("segment", "u-1").unwrap().value,
            "segment:u-1"
        );
        assert!(parse(IdentifierKind::CustomerId, "123").is_err());
        assert_eq!(
            parse(IdentifierKind::LoyaltyId, " ab 12-c ").unwrap(),
            "AB12-C"
        );
        assert_eq!(
            parse(IdentifierKind::CookieId, " 5f2c-AB ").unwrap(),
            "5f2c-AB"
        );
        assert_eq!(
            parse(IdentifierKind::Email, "   "),
            Err(IdentifierError::Empty(IdentifierKind::Email))
        );
        assert_eq!(
            parse(IdentifierKind::DeviceId, &"x".repeat(300)),
            Err(IdentifierError::TooLong(IdentifierKind::DeviceId))
        );
    }

    #[test]
    fn priority_order_follows_the_brief() {
        use IdentifierKind::*;
        assert!(Email.priority() == Phone.priority() && Phone.priority() == CustomerId.priority());
        assert!(CustomerId.priority() > LoyaltyId.priority());
        assert!(LoyaltyId.priority() > DeviceId.priority());
        assert!(DeviceId.priority() > CookieId.priority());
        assert_eq!(CookieId.strength(), Strength::Weak);
        for k in IdentifierKind::ALL {
            assert_eq!(k.as_str().parse::<IdentifierKind>().unwrap(), k);
        }
    }

    proptest::proptest! {
        #[test]
        fn normalising_is_idempotent(raw in "[ a-zA-Z0-9@.+-]{0,40}") {
            for kind in IdentifierKind::ALL {
                if let Ok(once) = Identifier::parse(kind, &raw, "IN") {
                    let twice = Identifier::parse(kind, &once.value, "IN").unwrap();
                    proptest::prop_assert_eq!(once, twice);
                }
            }
        }
    }
}
