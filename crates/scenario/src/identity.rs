//! The identity layer of the brand simulator: who each person *is* to the brand's
//! systems, and the normalised events their activities become, with the ground truth
//! of who did what.
//!
//! [`brand`](crate::brand) says what people did; this module says which identifiers
//! each touchpoint would really carry, with the mess real data has:
//!
//! - several e-mails and phones per person, used on different occasions, typed with
//!   stray capitals and spaces, phones in every format (`098765 43210`, `+91-…`,
//!   `whatsapp:+91…`);
//! - web sessions on one or two browsers whose cookies are cleared now and then, an app
//!   device id for app users, logged-in sessions carrying the account id, guest
//!   checkouts that are identified later when the person signs up;
//! - WhatsApp on the same number as web orders (or on a second number);
//! - store bills with the phone, only the loyalty card, an e-mail for the e-bill, or —
//!   when the customer will not give a number — the store's own counter phone typed in;
//! - junk typed into forms and tills (`test@test.com`, `9999999999`);
//! - households: family members typing the family phone on their orders, and browsing
//!   and signing in on the family computer.
//!
//! Everything is deterministic: a person's identity depends only on the seed and their
//! id, so [`person_events`] can stream a brand of any size.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use domain::{
    Channel, EventType, Identifier, IdentifierKind, NormalizedEvent, Order, OrderStatus, Source,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::brand::{Activity, ActivityKind, Brand, BrandConfig, Person, Product, Simulator, Store};

/// How messy the identity data is. Rates are probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// The brand to dress.
    pub brand: BrandConfig,
    /// Share of people who have a second e-mail they sometimes use.
    pub second_email: f64,
    /// Share of people who have a second phone (a work phone, a new number).
    pub second_phone: f64,
    /// Share of people in households (two or three people sharing a phone number and a
    /// computer).
    pub households: f64,
    /// Share of store bills where the cashier types the store's counter phone.
    pub counter_phone_bills: f64,
    /// Share of forms and bills carrying a junk value instead of a real one.
    pub junk: f64,
    /// Share of web orders placed as a guest (no account id) by people with an account.
    pub guest_checkout: f64,
    /// Share of a browser's quarters in which its cookie gets cleared.
    pub cookie_churn: f64,
}

impl Default for IdentityConfig {
    /// The default scenario of `ctl identity eval`: 750 people over 18 months, about
    /// 60,000 events.
    fn default() -> Self {
        Self {
            brand: BrandConfig {
                customers: 750,
                ..BrandConfig::default()
            },
            second_email: 0.25,
            second_phone: 0.15,
            households: 0.10,
            counter_phone_bills: 0.08,
            junk: 0.03,
            guest_checkout: 0.30,
            cookie_churn: 0.15,
        }
    }
}

impl IdentityConfig {
    /// The default mess on a brand of `customers` people.
    pub fn with_customers(customers: usize) -> Self {
        let mut cfg = Self::default();
        cfg.brand.customers = customers;
        cfg
    }
}

/// Normalised events with the truth of who is who.
#[derive(Debug, Clone, Default)]
pub struct IdentityScenario {
    /// Every event, in time order.
    pub events: Vec<NormalizedEvent>,
    /// The person (brand `person_id`) behind each event.
    pub truth: HashMap<Uuid, u32>,
    /// Each person's identity.
    pub identities: Vec<PersonIdentity>,
}

/// The identifiers a person has.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonIdentity {
    /// The brand's person id.
    pub person_id: u32,
    /// First name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// E-mail addresses, most used first.
    pub emails: Vec<String>,
    /// Phone numbers (national format, as people type them), most used first.
    pub phones: Vec<String>,
    /// Loyalty card number, for store shoppers who enrolled.
    pub loyalty_id: Option<String>,
    /// The web shop's account id (Shopify customer id).
    pub shop_account: u64,
    /// The tracking user id (Segment `userId`).
    pub user_id: String,
    /// Browsers, each with its cookie generations.
    pub browsers: Vec<Vec<String>>,
    /// App installation id, for app users.
    pub app_device: Option<String>,
    /// The household this person belongs to: (leader, family phone, family computer
    /// device and cookie).
    pub household: Option<Household>,
}

/// What a household shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Household {
    /// The person whose phone number the family gives.
    pub leader: u32,
    /// The family phone (the leader's first phone).
    pub phone: String,
    /// The family computer's device id.
    pub device: String,
    /// Its browser cookie.
    pub cookie: String,
}

/// Generates the whole scenario in memory.
pub fn generate(cfg: &IdentityConfig) -> IdentityScenario {
    let sim = Simulator::new(&cfg.brand);
    let mut scenario = IdentityScenario::default();
    for person_id in 0..cfg.brand.customers as u32 {
        let (person, activities) = sim.person(person_id);
        let identity = identity_of(cfg, &person);
        let events = events_of(
            cfg,
            sim.stores(),
            sim.catalogue(),
            &person,
            &identity,
            &activities,
        );
        scenario.add_person(person_id, identity, events);
    }
    scenario.sort();
    scenario
}

/// The events of one person (time order), for streaming very large scenarios.
pub fn person_events(
    cfg: &IdentityConfig,
    sim: &Simulator,
    person_id: u32,
) -> Vec<NormalizedEvent> {
    let (person, activities) = sim.person(person_id);
    let identity = identity_of(cfg, &person);
    events_of(
        cfg,
        sim.stores(),
        sim.catalogue(),
        &person,
        &identity,
        &activities,
    )
}

/// The identity layer over an already generated brand.
pub fn dress(cfg: &IdentityConfig, brand: &Brand) -> IdentityScenario {
    let mut by_person: HashMap<u32, Vec<Activity>> = HashMap::new();
    for a in &brand.activities {
        by_person.entry(a.person_id).or_default().push(a.clone());
    }
    let mut scenario = IdentityScenario::default();
    for person in &brand.people {
        let identity = identity_of(cfg, person);
        let acts = by_person.remove(&person.person_id).unwrap_or_default();
        let events = events_of(
            cfg,
            &brand.stores,
            &brand.catalogue,
            person,
            &identity,
            &acts,
        );
        scenario.add_person(person.person_id, identity, events);
    }
    scenario.sort();
    scenario
}

impl IdentityScenario {
    /// Adds one person's identity and events, recording who did each.
    fn add_person(
        &mut self,
        person_id: u32,
        identity: PersonIdentity,
        events: Vec<NormalizedEvent>,
    ) {
        for ev in events {
            self.truth.insert(ev.event_id, person_id);
            self.events.push(ev);
        }
        self.identities.push(identity);
    }

    /// Puts the events in canonical order (time, then event id).
    fn sort(&mut self) {
        self.events.sort_by_key(|e| (e.occurred_at, e.event_id));
    }
}

/// SplitMix64 of two words.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(cfg: &IdentityConfig, stream: u64, id: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(cfg.brand.seed ^ 0x1D, stream), id))
}

/// Households are blocks of three consecutive people; some blocks are families of two
/// or three. Returns (leader, size) for the block of `person_id`, if it is a family.
fn household_block(cfg: &IdentityConfig, person_id: u32) -> Option<(u32, u32)> {
    let block = person_id / 3;
    let mut rng = rng_for(cfg, 7, u64::from(block));
    if !rng.random_bool(cfg.households.clamp(0.0, 1.0)) {
        return None;
    }
    let size = if rng.random_bool(0.5) { 2 } else { 3 };
    let leader = block * 3;
    (person_id - leader < size && leader + size <= cfg.brand.customers as u32)
        .then_some((leader, size))
}

const DOMAINS: [&str; 6] = [
    "gmail.com",
    "yahoo.co.in",
    "outlook.com",
    "rediffmail.com",
    "hotmail.com",
    "icloud.com",
];

fn national_phone(rng: &mut ChaCha8Rng) -> String {
    // Indian mobiles start with 6-9; avoid runs a blocklist would reject.
    loop {
        let first = rng.random_range(6..=9u32);
        let rest: u64 = rng.random_range(100_000_000..999_999_999);
        let s = format!("{first}{rest}");
        let distinct: std::collections::BTreeSet<char> = s.chars().collect();
        if distinct.len() >= 4 {
            return s;
        }
    }
}

fn email_for(rng: &mut ChaCha8Rng, first: &str, last: &str, pid: u32, n: u32) -> String {
    // Mailbox names are unique per person (a provider never hands one out twice), so
    // every form carries something of the person's own.
    let first = first.to_lowercase();
    let last = last.to_lowercase();
    let initial = first.chars().next().unwrap_or('x');
    let tag = pid * 3 + n + 11;
    let local = match rng.random_range(0..4) {
        0 => format!("{first}.{last}{tag}"),
        1 => format!("{first}{tag}"),
        2 => format!("{initial}{last}.{tag}"),
        _ => format!("{first}_{last}{tag}"),
    };
    let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
    format!("{local}@{domain}")
}

/// The identity of one person (deterministic in the seed and the person id).
pub fn identity_of(cfg: &IdentityConfig, person: &Person) -> PersonIdentity {
    let pid = person.person_id;
    let mut rng = rng_for(cfg, 1, u64::from(pid));
    let first = person.first_name.clone();
    let last = person.last_name.clone();
    let mut emails = vec![email_for(&mut rng, &first, &last, pid, 0)];
    if rng.random_bool(cfg.second_email) {
        emails.push(email_for(&mut rng, &first, &last, pid, 1));
    }
    let household = household_block(cfg, pid).map(|(leader, _)| {
        let mut hrng = rng_for(cfg, 1, u64::from(leader));
        let family_phone = national_phone(&mut hrng);
        let mut crng = rng_for(cfg, 8, u64::from(leader));
        Household {
            leader,
            phone: family_phone,
            device: format!("home-{:016x}", crng.random::<u64>()),
            cookie: format!("ck-{:016x}", crng.random::<u64>()),
        }
    });
    // Everyone draws their own phone the same way, so a household leader's first phone
    // is the family phone; some members have no phone of their own.
    let own_phone = national_phone(&mut rng);
    let mut phones = Vec::new();
    match &household {
        Some(h) if h.leader != pid && rng.random_bool(0.4) => {}
        Some(h) if h.leader == pid => phones.push(h.phone.clone()),
        _ => phones.push(own_phone),
    }
    if rng.random_bool(cfg.second_phone) {
        phones.push(national_phone(&mut rng));
    }
    let loyalty_id = (person.home_store.is_some() && rng.random_bool(0.75))
        .then(|| format!("LOY{:07}", 1_000_000 + u64::from(pid) * 7 + 3));
    let browsers_n = if rng.random_bool(0.4) { 2 } else { 1 };
    let months = cfg.brand.months.max(1);
    let quarters = months.div_ceil(3) as usize;
    let browsers = (0..browsers_n)
        .map(|b| {
            let mut gens = vec![format!("ck-{:016x}", mix(u64::from(pid), 100 + b))];
            for q in 0..quarters {
                if rng.random_bool(cfg.cookie_churn) {
                    gens.push(format!(
                        "ck-{:016x}",
                        mix(u64::from(pid), 1000 + b * 100 + q as u64)
                    ));
                } else {
                    let last = gens.last().cloned().unwrap_or_default();
                    gens.push(last);
                }
            }
            gens
        })
        .collect();
    let app_device = rng
        .random_bool(0.3)
        .then(|| format!("dev-{:016x}", mix(u64::from(pid), 77)));
    PersonIdentity {
        person_id: pid,
        first_name: first,
        last_name: last,
        emails,
        phones,
        loyalty_id,
        shop_account: 7_000_000 + u64::from(pid),
        user_id: format!("u{:06}", pid),
        browsers,
        app_device,
        household,
    }
}

/// The counter phone of a store (a landline, as typed at the till).
pub fn counter_phone(store: &Store) -> String {
    format!(
        "080 4{:03} {:04}",
        100 + store.store_id * 37 % 900,
        2000 + store.store_id * 131 % 7000
    )
}

/// Junk values people and tills type.
const JUNK_EMAILS: [&str; 5] = [
    "test@test.com",
    "na@na.com",
    "noemail@gmail.com",
    "abc@xyz.com",
    "none@none.com",
];
const JUNK_PHONES: [&str; 3] = ["9999999999", "0000000000", "1234567890"];

/// Types an e-mail the way people do: sometimes capitalised or padded.
fn typed_email(rng: &mut ChaCha8Rng, email: &str) -> String {
    match rng.random_range(0..10) {
        0 => format!(" {email} "),
        1 => {
            let mut c = email.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
        2 => email.to_uppercase(),
        _ => email.to_owned(),
    }
}

/// Types a national phone number in one of the usual formats.
fn typed_phone(rng: &mut ChaCha8Rng, national: &str) -> String {
    match rng.random_range(0..6) {
        0 => format!("+91{national}"),
        1 => format!("+91 {} {}", &national[..5], &national[5..]),
        2 => format!("0{national}"),
        3 => format!("91{national}"),
        4 => format!("+91-{}-{}", &national[..5], &national[5..]),
        _ => national.to_owned(),
    }
}

fn parse(kind: IdentifierKind, raw: &str) -> Option<Identifier> {
    Identifier::parse(kind, raw, "IN").ok()
}

/// Builds one person's events.
struct Dresser<'a> {
    cfg: &'a IdentityConfig,
    stores: &'a [Store],
    products: &'a [Product],
    person: &'a Person,
    id: &'a PersonIdentity,
    rng: ChaCha8Rng,
    start: DateTime<Utc>,
    seq: u64,
    /// The current web session: (started, browser index or app, logged in, on the
    /// family computer).
    session: Option<(DateTime<Utc>, Option<usize>, bool, bool)>,
    /// Whether the person has an account yet (after a web sign-up or first login).
    has_account: bool,
    /// Whether the current session came from a newsletter click (identified by e-mail).
    newsletter: bool,
    /// Identifiers to add to the next tracking event.
    pending_extra: Vec<Identifier>,
    /// Orders placed, with the identifiers their bill or checkout carried.
    orders: HashMap<String, (Source, Channel, Vec<Identifier>)>,
    out: Vec<NormalizedEvent>,
}

fn events_of(
    cfg: &IdentityConfig,
    stores: &[Store],
    products: &[Product],
    person: &Person,
    id: &PersonIdentity,
    acts: &[Activity],
) -> Vec<NormalizedEvent> {
    let mut d = Dresser {
        cfg,
        stores,
        products,
        person,
        id,
        rng: rng_for(cfg, 2, u64::from(person.person_id)),
        start: cfg.brand.start(),
        seq: 0,
        session: None,
        has_account: false,
        newsletter: false,
        pending_extra: Vec::new(),
        orders: HashMap::new(),
        out: Vec::with_capacity(acts.len()),
    };
    for a in acts {
        d.activity(a);
    }
    d.out
}

impl Dresser<'_> {
    /// A UUIDv7 of the time ingest received the event, as ingest mints event ids (its
    /// time decides how the profile the event may create is named: `identity::model`).
    fn event_id(&mut self, received: DateTime<Utc>) -> Uuid {
        self.seq += 1;
        let h = mix(
            mix(self.cfg.brand.seed, u64::from(self.person.person_id) + 1),
            self.seq,
        );
        let l = mix(h, 0xE7);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&h.to_be_bytes());
        bytes[8..].copy_from_slice(&l.to_be_bytes());
        let ms = u64::try_from(received.timestamp_millis()).unwrap_or(0);
        let mut rest = [0u8; 10];
        rest.copy_from_slice(&bytes[6..]);
        uuid::Builder::from_unix_timestamp_millis(ms, &rest).into_uuid()
    }

    fn event(
        &mut self,
        at: DateTime<Utc>,
        source: Source,
        channel: Channel,
        t: EventType,
        ids: Vec<Identifier>,
    ) -> NormalizedEvent {
        let received_at = at + Duration::seconds(2);
        let event_id = self.event_id(received_at);
        let mut identifiers = ids;
        identifiers.sort();
        identifiers.dedup();
        NormalizedEvent {
            event_id,
            occurred_at: at,
            received_at,
            source,
            integration_id: None,
            channel,
            event_type: t,
            name: None,
            identifiers,
            traits: Map::new(),
            properties: Map::new(),
            order: None,
        }
    }

    fn names(&self) -> Map<String, Value> {
        let mut m = Map::new();
        // Names come as people type them: sometimes lower case, padded.
        let first = if self.seq % 7 == 3 {
            self.id.first_name.to_lowercase()
        } else {
            self.id.first_name.clone()
        };
        m.insert("first_name".into(), json!(first));
        m.insert("last_name".into(), json!(self.id.last_name));
        m
    }

    fn quarter(&self, at: DateTime<Utc>) -> usize {
        ((at - self.start).num_days().max(0) / 91) as usize
    }

    fn cookie(&self, browser: usize, at: DateTime<Utc>) -> Identifier {
        let gens = &self.id.browsers[browser.min(self.id.browsers.len() - 1)];
        let g = &gens[self.quarter(at).min(gens.len() - 1)];
        Identifier {
            kind: IdentifierKind::CookieId,
            value: g.clone(),
        }
    }

    fn email(&mut self) -> Option<Identifier> {
        let pick = if self.id.emails.len() > 1 && self.rng.random_bool(0.3) {
            1
        } else {
            0
        };
        let typed = typed_email(&mut self.rng, &self.id.emails[pick].clone());
        parse(IdentifierKind::Email, &typed)
    }

    fn own_phone(&mut self) -> Option<Identifier> {
        if self.id.phones.is_empty() {
            return None;
        }
        let pick = if self.id.phones.len() > 1 && self.rng.random_bool(0.25) {
            self.id.phones.len() - 1
        } else {
            0
        };
        let typed = typed_phone(&mut self.rng, &self.id.phones[pick].clone());
        parse(IdentifierKind::Phone, &typed)
    }

    /// The phone a form gets: the family phone for some household members, else their
    /// own.
    fn given_phone(&mut self) -> Option<Identifier> {
        if let Some(h) = &self.id.household
            && h.leader != self.person.person_id
            && (self.id.phones.is_empty() || self.rng.random_bool(0.5))
        {
            let typed = typed_phone(&mut self.rng, &h.phone.clone());
            return parse(IdentifierKind::Phone, &typed);
        }
        self.own_phone()
    }

    fn customer_id(&self) -> Identifier {
        Identifier::customer_id("shopify", &self.id.shop_account.to_string()).expect("namespaced")
    }

    fn user_id(&self) -> Identifier {
        Identifier::customer_id("segment", &self.id.user_id).expect("namespaced")
    }

    fn loyalty(&self) -> Option<Identifier> {
        self.id
            .loyalty_id
            .as_deref()
            .and_then(|l| parse(IdentifierKind::LoyaltyId, l))
    }

    fn junk_email(&mut self) -> Identifier {
        let j = JUNK_EMAILS[self.rng.random_range(0..JUNK_EMAILS.len())];
        parse(IdentifierKind::Email, j).expect("junk e-mails still parse")
    }

    fn junk_phone(&mut self) -> Option<Identifier> {
        let j = JUNK_PHONES[self.rng.random_range(0..JUNK_PHONES.len())];
        parse(IdentifierKind::Phone, j)
    }

    /// The identifiers of a web session's tracking events, starting one if needed.
    fn session_ids(&mut self, at: DateTime<Utc>) -> Vec<Identifier> {
        let fresh = self
            .session
            .is_none_or(|(started, ..)| at - started > Duration::hours(3));
        if fresh {
            let on_family = self.id.household.is_some() && self.rng.random_bool(0.3);
            let browser = if self.id.app_device.is_some() && self.rng.random_bool(0.4) {
                None
            } else {
                Some(self.rng.random_range(0..self.id.browsers.len()))
            };
            let logged_in = self.has_account && self.rng.random_bool(0.6);
            // Without an account some sessions are still identified: a click from the
            // brand's e-mail newsletter identifies the browser by e-mail.
            let from_newsletter = !self.has_account && self.rng.random_bool(0.2);
            self.session = Some((at, browser, logged_in, on_family));
            self.newsletter = from_newsletter;
        }
        let (_, browser, logged_in, on_family) = self.session.expect("session set");
        if self.newsletter {
            let email = self.id.emails[0].clone();
            self.pending_extra
                .extend(parse(IdentifierKind::Email, &email));
        }
        let mut ids = Vec::new();
        if on_family {
            let h = self.id.household.as_ref().expect("household");
            ids.push(Identifier {
                kind: IdentifierKind::DeviceId,
                value: h.device.clone(),
            });
            ids.push(Identifier {
                kind: IdentifierKind::CookieId,
                value: h.cookie.clone(),
            });
        } else {
            match browser {
                Some(b) => ids.push(self.cookie(b, at)),
                None => ids.push(Identifier {
                    kind: IdentifierKind::DeviceId,
                    value: self.id.app_device.clone().expect("app user"),
                }),
            }
        }
        if logged_in {
            ids.push(self.user_id());
        }
        ids.append(&mut self.pending_extra);
        ids
    }

    fn activity(&mut self, a: &Activity) {
        let at = a.at;
        match &a.kind {
            ActivityKind::SignedUp => self.signed_up(at),
            ActivityKind::OrderPlaced {
                order_id,
                channel,
                store,
                items,
                total,
                currency,
            } => {
                let order = Order {
                    order_id: order_id.clone(),
                    total: *total,
                    currency: currency.clone(),
                    status: if *channel == Channel::Pos {
                        OrderStatus::Paid
                    } else {
                        OrderStatus::Placed
                    },
                    store: store.map(|s| self.stores[s as usize].code.clone()),
                    items: items.clone(),
                };
                if *channel == Channel::Pos {
                    self.bill(at, order, store.unwrap_or(0));
                } else {
                    self.web_order(at, order);
                }
            }
            ActivityKind::OrderCancelled { order_id } => {
                self.order_followup(at, order_id, EventType::OrderCancelled, None)
            }
            ActivityKind::Refund { order_id, amount } => {
                self.order_followup(at, order_id, EventType::RefundIssued, Some(*amount))
            }
            ActivityKind::ProductViewed { sku } | ActivityKind::AddedToCart { sku } => {
                let t = if matches!(a.kind, ActivityKind::ProductViewed { .. }) {
                    EventType::ProductViewed
                } else {
                    EventType::AddedToCart
                };
                let ids = self.session_ids(at);
                let mut ev = self.event(at, Source::Segment, Channel::Web, t, ids);
                ev.properties.insert("sku".into(), json!(sku));
                if let Some(p) = self.products.iter().find(|p| &p.sku == sku) {
                    ev.properties.insert("name".into(), json!(p.name));
                    ev.properties.insert("category".into(), json!(p.category));
                }
                self.out.push(ev);
            }
            ActivityKind::CheckoutStarted => {
                let ids = self.session_ids(at);
                let ev = self.event(
                    at,
                    Source::Segment,
                    Channel::Web,
                    EventType::CheckoutStarted,
                    ids,
                );
                self.out.push(ev);
            }
            ActivityKind::PageViewed { path } => {
                let ids = self.session_ids(at);
                let mut ev = self.event(
                    at,
                    Source::Segment,
                    Channel::Web,
                    EventType::PageViewed,
                    ids,
                );
                ev.properties.insert("path".into(), json!(path));
                self.out.push(ev);
            }
            ActivityKind::WhatsAppInbound { body } => {
                // From the person's phone; household members without one write from the
                // family phone.
                let number = self
                    .id
                    .phones
                    .last()
                    .cloned()
                    .or_else(|| self.id.household.as_ref().map(|h| h.phone.clone()));
                let ids: Vec<Identifier> = number
                    .and_then(|n| parse(IdentifierKind::Phone, &format!("whatsapp:+91{n}")))
                    .into_iter()
                    .collect();
                let mut ev = self.event(
                    at,
                    Source::Twilio,
                    Channel::Whatsapp,
                    EventType::MessageReceived,
                    ids,
                );
                ev.traits.insert(
                    "whatsapp_profile_name".into(),
                    json!(if self.rng.random_bool(0.5) {
                        self.id.first_name.as_str()
                    } else {
                        "🌸"
                    }),
                );
                ev.properties.insert("body".into(), json!(body));
                self.out.push(ev);
            }
            ActivityKind::QrScanned { code, store } => {
                // Scanned with the phone's browser; some codes carry the loyalty number.
                let mut ids = vec![self.cookie(self.id.browsers.len() - 1, at)];
                if self.rng.random_bool(0.3) {
                    ids.extend(self.loyalty());
                }
                let mut ev = self.event(
                    at,
                    Source::Segment,
                    Channel::Store,
                    EventType::QrScanned,
                    ids,
                );
                ev.properties.insert("code".into(), json!(code));
                ev.properties
                    .insert("store".into(), json!(self.stores[*store as usize].code));
                self.out.push(ev);
            }
            ActivityKind::StoreVisit { store } => {
                // A Wi-Fi or loyalty check-in: the loyalty card, else the phone.
                let ids: Vec<Identifier> = self
                    .loyalty()
                    .or_else(|| self.own_phone())
                    .into_iter()
                    .collect();
                let mut ev =
                    self.event(at, Source::Pos, Channel::Store, EventType::StoreVisit, ids);
                ev.properties
                    .insert("store".into(), json!(self.stores[*store as usize].code));
                self.out.push(ev);
            }
        }
    }

    fn signed_up(&mut self, at: DateTime<Utc>) {
        let web = self.person.home_store.is_none()
            || self.person.web_share >= 0.35
            || self.id.loyalty_id.is_none();
        if web {
            // A web sign-up: the account, the e-mail, usually the phone, the browser.
            let mut ids = vec![self.user_id()];
            if self.rng.random_bool(self.cfg.junk) {
                ids.push(self.junk_email());
            } else {
                ids.extend(self.email());
            }
            if self.rng.random_bool(0.7) {
                ids.extend(self.given_phone());
            }
            ids.extend(self.session_ids(at));
            self.has_account = true;
            let mut ev = self.event(at, Source::Segment, Channel::Web, EventType::Identify, ids);
            ev.traits = self.names();
            self.out.push(ev);
        }
        if let Some(loyalty) = self.loyalty() {
            // Loyalty enrolment at the till: the card, the phone, the name.
            let mut ids = vec![loyalty];
            ids.extend(self.given_phone());
            if self.rng.random_bool(0.3) {
                ids.extend(self.email());
            }
            let mut ev = self.event(
                at + Duration::minutes(1),
                Source::Pos,
                Channel::Pos,
                EventType::Identify,
                ids,
            );
            ev.traits = self.names();
            self.out.push(ev);
        }
    }

    fn web_order(&mut self, at: DateTime<Utc>, order: Order) {
        let guest = !self.has_account || self.rng.random_bool(self.cfg.guest_checkout);
        let mut ids = Vec::new();
        if self.rng.random_bool(self.cfg.junk / 2.0) {
            ids.push(self.junk_email());
        } else {
            ids.extend(self.email());
        }
        ids.extend(self.given_phone());
        if !guest {
            ids.push(self.customer_id());
        }
        // The checkout happens in the current session's browser.
        let session = self.session_ids(at);
        ids.extend(
            session
                .into_iter()
                .filter(|i| i.kind != IdentifierKind::CustomerId),
        );
        let mut ev = self.event(
            at,
            Source::Shopify,
            Channel::Web,
            EventType::OrderPlaced,
            ids.clone(),
        );
        ev.traits = self.names();
        self.orders
            .insert(order.order_id.clone(), (Source::Shopify, Channel::Web, ids));
        ev.order = Some(order);
        self.out.push(ev);
        // Checking out after signing in once makes later sessions logged in.
        if !guest {
            self.has_account = true;
        }
    }

    fn bill(&mut self, at: DateTime<Utc>, order: Order, store: u32) {
        let counter = parse(
            IdentifierKind::Phone,
            &counter_phone(&self.stores[store as usize]),
        );
        let mut ids = Vec::new();
        let mut named = false;
        let roll: f64 = self.rng.random();
        let junk = self.cfg.junk;
        let counter_rate = self.cfg.counter_phone_bills;
        if roll < counter_rate {
            // No number given: the cashier types the store's own.
            ids.extend(counter);
            match self.rng.random_range(0..10) {
                0..=4 => {
                    ids.extend(self.loyalty());
                    named = true;
                }
                5..=6 => ids.extend(self.email()),
                _ => {}
            }
        } else if roll < counter_rate + junk {
            ids.extend(self.junk_phone());
            ids.extend(self.loyalty());
        } else if self.id.loyalty_id.is_some() && roll < counter_rate + junk + 0.30 {
            // Only the loyalty card.
            ids.extend(self.loyalty());
            named = self.rng.random_bool(0.5);
        } else {
            ids.extend(self.given_phone());
            if self.rng.random_bool(0.5) {
                ids.extend(self.loyalty());
            }
            if self.rng.random_bool(0.15) {
                ids.extend(self.email());
            }
            named = self.rng.random_bool(0.6);
        }
        let mut ev = self.event(
            at,
            Source::Pos,
            Channel::Pos,
            EventType::OrderPlaced,
            ids.clone(),
        );
        if named {
            let mut t = Map::new();
            t.insert(
                "name".into(),
                json!(format!("{} {}", self.id.first_name, self.id.last_name)),
            );
            ev.traits = t;
        }
        self.orders
            .insert(order.order_id.clone(), (Source::Pos, Channel::Pos, ids));
        ev.order = Some(order);
        self.out.push(ev);
    }

    fn order_followup(
        &mut self,
        at: DateTime<Utc>,
        order_id: &str,
        t: EventType,
        amount: Option<Decimal>,
    ) {
        let Some((source, channel, placed_ids)) = self.orders.get(order_id).cloned() else {
            return;
        };
        // Cancellations repeat the order's customer; refund webhooks carry only the order.
        let ids = if t == EventType::OrderCancelled && source == Source::Shopify {
            placed_ids
                .into_iter()
                .filter(|i| matches!(i.kind, IdentifierKind::Email | IdentifierKind::CustomerId))
                .collect()
        } else {
            Vec::new()
        };
        let mut ev = self.event(at, source, channel, t, ids);
        ev.order = Some(Order {
            order_id: order_id.to_owned(),
            total: amount.unwrap_or_default(),
            currency: self.cfg.brand.currency.clone(),
            status: if t == EventType::OrderCancelled {
                OrderStatus::Cancelled
            } else {
                OrderStatus::PartiallyRefunded
            },
            store: None,
            items: Vec::new(),
        });
        self.out.push(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> IdentityConfig {
        IdentityConfig::with_customers(60)
    }

    #[test]
    fn deterministic_and_time_ordered() {
        let a = generate(&small());
        let b = generate(&small());
        assert_eq!(a.events, b.events);
        assert!(
            a.events
                .windows(2)
                .all(|w| w[0].occurred_at <= w[1].occurred_at)
        );
        assert_eq!(a.truth.len(), a.events.len(), "every event has its person");
        // Streaming one person gives the same events.
        let sim = Simulator::new(&small().brand);
        let p7 = person_events(&small(), &sim, 7);
        let in_whole: Vec<&NormalizedEvent> = a
            .events
            .iter()
            .filter(|e| a.truth[&e.event_id] == 7)
            .collect();
        assert_eq!(p7.len(), in_whole.len());
    }

    #[test]
    fn the_mess_is_there() {
        let s = generate(&IdentityConfig::with_customers(300));
        let has = |pred: &dyn Fn(&NormalizedEvent) -> bool| s.events.iter().any(pred);
        let junk = Identifier::parse(IdentifierKind::Email, "test@test.com", "IN").unwrap();
        assert!(
            has(&|e| e.identifiers.contains(&junk))
                || has(&|e| e.identifiers.iter().any(|i| i.value.starts_with("na@")))
        );
        assert!(has(&|e| e.channel == Channel::Pos
            && e.identifiers.len() == 1
            && e.identifiers[0].kind == IdentifierKind::LoyaltyId));
        assert!(has(
            &|e| e.channel == Channel::Whatsapp && !e.identifiers.is_empty()
        ));
        assert!(has(
            &|e| e.event_type == EventType::RefundIssued && e.identifiers.is_empty()
        ));
        let families = s
            .identities
            .iter()
            .filter(|i| i.household.is_some())
            .count();
        assert!(families > 0);
        let two_emails = s.identities.iter().filter(|i| i.emails.len() > 1).count();
        assert!(two_emails > 30, "{two_emails}");
        // Every phone of a person normalises to one value whatever the format typed.
        let counter = Identifier::parse(
            IdentifierKind::Phone,
            &counter_phone(&Simulator::new(&small().brand).stores()[0]),
            "IN",
        );
        assert!(counter.is_ok(), "counter phones are valid numbers");
    }
}
