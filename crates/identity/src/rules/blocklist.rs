//! Junk identifier values: the ones people and tills type when they have nothing real
//! to give (`test@test.com`, `n/a`, `9999999999`). Junk is dropped before resolution,
//! so it never creates, attaches or merges anything.
//!
//! The built-in list covers the obvious values; `IDENTITY_BLOCKLIST_EXTRA` adds more
//! (comma separated, each either `value` for any kind or `kind:value`).

use std::collections::BTreeSet;

use domain::{Identifier, IdentifierKind};

/// Values junk for every kind (compared lower-cased, after normalisation).
const JUNK_ANY: &[&str] = &[
    "",
    "null",
    "nil",
    "none",
    "undefined",
    "unknown",
    "n/a",
    "na",
    "n.a.",
    "-",
    "--",
    ".",
    "0",
    "00",
    "000",
    "x",
    "xx",
    "xxx",
    "test",
    "tester",
    "dummy",
    "fake",
    "sample",
    "asdf",
    "nan",
    "false",
    "true",
    "[object object]",
    "guest",
    "anonymous",
    "customer",
];

/// E-mail local parts that only ever mean "no e-mail".
const JUNK_EMAIL_LOCAL: &[&str] = &[
    "test",
    "tester",
    "testing",
    "na",
    "n.a",
    "none",
    "noemail",
    "no-email",
    "no.email",
    "nomail",
    "no-mail",
    "null",
    "undefined",
    "dummy",
    "fake",
    "abc",
    "xyz",
    "asdf",
    "qwerty",
    "example",
    "sample",
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "nobody",
    "customer",
    "guest",
    "a",
    "aa",
    "aaa",
    "x",
    "xx",
    "xxx",
    "1",
    "123",
    "1234",
    "12345",
];

/// E-mail domains that are never a person's mailbox.
const JUNK_EMAIL_DOMAIN: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "test.com",
    "test.in",
    "none.com",
    "noemail.com",
    "nomail.com",
    "na.com",
    "email.com.invalid",
    "invalid",
    "mailinator.com",
    "localhost.localdomain",
];

/// National numbers that are obviously typed filler.
const JUNK_PHONE_DIGITS: &[&str] = &[
    "1234567890",
    "0123456789",
    "9876543210",
    "1234567",
    "12345678",
    "123456789",
];

/// The junk-value rules in force.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    extra_any: BTreeSet<String>,
    extra_exact: BTreeSet<(IdentifierKind, String)>,
}

impl Blocklist {
    /// The built-in rules plus `extra` (comma separated `value` or `kind:value`).
    pub fn new(extra: &str) -> Self {
        let mut list = Self::default();
        for entry in extra.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let lowered = entry.to_lowercase();
            match lowered.split_once(':').and_then(|(k, v)| {
                k.parse::<IdentifierKind>()
                    .ok()
                    .and_then(|kind| Identifier::parse(kind, v, "IN").ok())
            }) {
                Some(id) => {
                    list.extra_exact.insert((id.kind, id.value.to_lowercase()));
                }
                None => {
                    list.extra_any.insert(lowered);
                }
            }
        }
        list
    }

    /// Whether `identifier` is junk and must be ignored.
    pub fn is_junk(&self, identifier: &Identifier) -> bool {
        let value = identifier.value.to_lowercase();
        if JUNK_ANY.contains(&value.as_str())
            || self.extra_any.contains(&value)
            || self.extra_exact.contains(&(identifier.kind, value.clone()))
        {
            return true;
        }
        // Namespaced kinds: the part after the namespace is what a person typed.
        if matches!(
            identifier.kind,
            IdentifierKind::CustomerId | IdentifierKind::PosCustomer
        ) && let Some((_, id)) = value.split_once(':')
        {
            let id = id.trim();
            return JUNK_ANY.contains(&id) || self.extra_any.contains(id) || all_same(id);
        }
        match identifier.kind {
            IdentifierKind::Email => junk_email(&value),
            IdentifierKind::Phone => junk_phone(&value),
            IdentifierKind::LoyaltyId | IdentifierKind::DeviceId | IdentifierKind::CookieId => {
                all_same(&value)
            }
            IdentifierKind::CustomerId | IdentifierKind::PosCustomer => false,
        }
    }
}

fn junk_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return true;
    };
    if JUNK_EMAIL_DOMAIN.contains(&domain) || domain.ends_with(".invalid") {
        return true;
    }
    if JUNK_EMAIL_LOCAL.contains(&local) {
        // `test@test.com`, `na@na.com`, `abc@xyz.com`: a junk local part is junk on any
        // domain except a brand's own catch-all, which a config entry can block.
        return true;
    }
    // `aaaa@aaaa.com`: the same character repeated on both sides.
    let domain_name = domain.split('.').next().unwrap_or(domain);
    all_same(local) && all_same(domain_name)
}

fn junk_phone(e164: &str) -> bool {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    // The national part: the last ten digits for most plans, fewer for short numbers.
    let national = if digits.len() > 10 {
        &digits[digits.len() - 10..]
    } else {
        &digits[..]
    };
    let tail7 = &national[national.len().saturating_sub(7)..];
    all_same(national)
        || all_same(tail7)
        || JUNK_PHONE_DIGITS.contains(&national)
        || JUNK_PHONE_DIGITS
            .iter()
            .any(|j| national.ends_with(j) && j.len() >= 9)
}

fn all_same(s: &str) -> bool {
    let mut chars = s.chars().filter(|c| c.is_alphanumeric());
    match chars.next() {
        Some(first) => chars.all(|c| c == first),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: IdentifierKind, raw: &str) -> Identifier {
        Identifier::parse(kind, raw, "IN").unwrap()
    }

    #[test]
    fn obvious_junk_is_blocked() {
        let list = Blocklist::new("");
        use IdentifierKind::*;
        for (kind, raw) in [
            (Email, "test@test.com"),
            (Email, "TEST@gmail.com"),
            (Email, "na@na.com"),
            (Email, "noemail@brand.in"),
            (Email, "someone@example.com"),
            (Email, "aaaa@aaaa.com"),
            (Phone, "9999999999"),
            (Phone, "+91 98888 88888"),
            (Phone, "+91 9876543210"),
            (LoyaltyId, "0000"),
            (LoyaltyId, "N/A"),
            (LoyaltyId, "null"),
            (CustomerId, "shopify:0"),
            (CustomerId, "segment:undefined"),
            (CookieId, "undefined"),
            (DeviceId, "00000000-0000-0000-0000-000000000000"),
            (PosCustomer, "store1:000"),
        ] {
            assert!(list.is_junk(&id(kind, raw)), "{kind}:{raw} should be junk");
        }
    }

    #[test]
    fn real_values_pass() {
        let list = Blocklist::new("");
        use IdentifierKind::*;
        for (kind, raw) in [
            (Email, "asha.rao@gmail.com"),
            (Email, "a.b@test-lab.com"),
            (Phone, "+91 98765 43211"),
            (Phone, "+1 415 555 2671"),
            (LoyaltyId, "LOY-88812"),
            (CustomerId, "shopify:1001"),
            (CookieId, "5f2c-ab"),
            (DeviceId, "a1b2c3"),
        ] {
            assert!(!list.is_junk(&id(kind, raw)), "{kind}:{raw} is not junk");
        }
    }

    #[test]
    fn configured_values_extend_the_list() {
        let list = Blocklist::new("store@brand.in, phone:+91 80 4000 1234 ,walkin");
        use IdentifierKind::*;
        assert!(list.is_junk(&id(Email, "store@brand.in")));
        assert!(list.is_junk(&id(Phone, "08040001234")));
        assert!(list.is_junk(&id(LoyaltyId, "WALKIN")));
        assert!(list.is_junk(&id(CustomerId, "pos:walkin")));
        assert!(!list.is_junk(&id(Email, "owner@brand.in")));
    }
}
