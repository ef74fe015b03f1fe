//! A deterministic simulator of one retail / D2C brand: its catalogue, its stores, its
//! customers and 18 months (by default) of what they did.
//!
//! It exists so that every part of ConstIntel can be exercised on data that behaves like
//! a real brand's without any real person in it: the ML models need behaviour that is
//! learnable but not trivial, identity resolution needs people who shop on several
//! channels, and the demo needs something believable to show.
//!
//! How people behave (none of it is read back by the models: they only see activities):
//! - Each person has a hidden [`Archetype`] that sets a base purchase rate, a per-order
//!   chance of silently dropping out (a dead customer keeps browsing for a while, then
//!   fades), a browsing rate, a share of orders placed online versus in store, and
//!   spending habits. `Lapsing` people buy steadily until a hidden date, after which
//!   their rate decays with a person-specific half-life.
//! - A slowly drifting "mood" (a monthly autoregressive process) moves both buying and
//!   browsing up and down together, so recent browsing says something about the next
//!   weeks' orders.
//! - Seasonality: a festive peak in late October / early November, smaller ones at
//!   Christmas, the January and July end-of-season sales, and weekends.
//! - Online orders are preceded by a browsing session (pages, product views, cart,
//!   checkout); store orders by a store visit and sometimes a QR scan. Sessions that end
//!   without an order happen too (abandoned carts).
//! - Baskets follow each person's favourite categories plus complementary categories
//!   (kurtas with jewellery, shoes with accessories), with popular products more likely
//!   and each person's price taste bending the choice.
//! - Some orders are cancelled within hours, some refunded days later; a refund makes
//!   the person more likely to stop buying, and people who prefer WhatsApp complain
//!   there.
//!
//! Determinism: the catalogue and stores come from the seed alone, and each person from
//! the seed and their id alone, so person 17 is the same person whether the brand has
//! 100 or 100,000 customers, and [`Simulator::person`] can stream a huge brand without
//! holding it in memory.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeZone, Utc, Weekday};
use domain::{Channel, OrderItem};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrandConfig {
    /// Seed of every random choice: same seed, same brand.
    pub seed: u64,
    /// Number of people (customers and prospects).
    pub customers: usize,
    /// Length of the simulated history in months, ending at `end`.
    pub months: u32,
    /// The end of the history (exclusive): the simulated "now".
    pub end: DateTime<Utc>,
    /// ISO 4217 currency of every price and order.
    pub currency: String,
    /// Number of physical stores (0 makes a web-only brand).
    pub stores: usize,
}

impl Default for BrandConfig {
    /// About 5,000 people over 18 months ending 2026-11-01, in rupees, with 6 stores.
    fn default() -> Self {
        Self {
            seed: 7,
            customers: 5_000,
            months: 18,
            end: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            currency: "INR".to_owned(),
            stores: 6,
        }
    }
}

impl BrandConfig {
    /// The first instant of the history: `end` minus `months`.
    pub fn start(&self) -> DateTime<Utc> {
        self.end
            .checked_sub_months(Months::new(self.months))
            .unwrap_or(self.end)
    }
}

/// The hidden behaviour type of a person: ground truth for checking models, never an
/// input to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Archetype {
    /// Buys often and rarely leaves.
    Loyal,
    /// Buys every couple of months; may quietly stop.
    Regular,
    /// Signed up in the last five months; many do not come back after a first order.
    New,
    /// Bought steadily until a hidden date, then fades away.
    Lapsing,
    /// Bought once and never again.
    OneTime,
    /// Signed up and browses, never buys.
    BrowserOnly,
}

impl Archetype {
    /// Every archetype, in a stable order.
    pub const ALL: [Archetype; 6] = [
        Archetype::Loyal,
        Archetype::Regular,
        Archetype::New,
        Archetype::Lapsing,
        Archetype::OneTime,
        Archetype::BrowserOnly,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Archetype::Loyal => "loyal",
            Archetype::Regular => "regular",
            Archetype::New => "new",
            Archetype::Lapsing => "lapsing",
            Archetype::OneTime => "one_time",
            Archetype::BrowserOnly => "browser_only",
        }
    }

    /// Share of the population with this archetype.
    fn share(self) -> f64 {
        match self {
            Archetype::Loyal => 0.10,
            Archetype::Regular => 0.27,
            Archetype::New => 0.13,
            Archetype::Lapsing => 0.20,
            Archetype::OneTime => 0.18,
            Archetype::BrowserOnly => 0.12,
        }
    }
}

/// One product of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Stock keeping unit, e.g. `APP-004`.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Category name, e.g. `Apparel`.
    pub category: String,
    /// List price in the brand's currency.
    pub price: Decimal,
}

/// One physical store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Store {
    /// Index of the store (0-based), referenced by people and activities.
    pub store_id: u32,
    /// Short code printed on bills, e.g. `BLR-01`.
    pub code: String,
    /// Display name.
    pub name: String,
    /// City it is in.
    pub city: String,
}

/// One simulated person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Index of the person (0-based), referenced by activities.
    pub person_id: u32,
    /// Hidden behaviour type (ground truth).
    pub archetype: Archetype,
    /// Given name (drawn from a list of common names; nobody real).
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Home city.
    pub city: String,
    /// The store they usually shop in, if they shop in stores at all.
    pub home_store: Option<u32>,
    /// Whether they like to talk to the brand on WhatsApp.
    pub prefers_whatsapp: bool,
    /// Share of their orders placed online (the rest at a till).
    pub web_share: f64,
    /// When they first appeared (their `SignedUp` activity).
    pub signed_up_at: DateTime<Utc>,
    /// Their favourite categories, most favourite first.
    pub favourite_categories: Vec<String>,
    /// Ground truth: when they stopped buying for good (dropped out, or their lapse
    /// made them all but stop), or `None` if they were still buying at the end or never
    /// bought.
    pub stopped_buying_at: Option<DateTime<Utc>>,
}

/// One thing a person did, at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// The person who did it (index into `Brand::people`).
    pub person_id: u32,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What they did, with its details.
    pub kind: ActivityKind,
}

/// What a person did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActivityKind {
    /// Created an account (web sign-up or loyalty enrolment at a till).
    SignedUp,
    /// Placed an order online (`Channel::Web`) or paid a bill in a store
    /// (`Channel::Pos`, with `store`).
    OrderPlaced {
        /// Order id (web) or `{store code}/{bill}` (store); unique within the brand.
        order_id: String,
        /// `Web` or `Pos`.
        channel: Channel,
        /// The store, for store orders.
        store: Option<u32>,
        /// Order lines.
        items: Vec<OrderItem>,
        /// Sum of `qty × price` over the lines.
        total: Decimal,
        /// ISO 4217 currency.
        currency: String,
    },
    /// An order was cancelled (within hours of being placed).
    OrderCancelled {
        /// The cancelled order.
        order_id: String,
    },
    /// Money was refunded on an order (days after it was placed).
    Refund {
        /// The refunded order.
        order_id: String,
        /// Amount refunded (the whole order or one line).
        amount: Decimal,
    },
    /// Looked at a product page.
    ProductViewed {
        /// The product.
        sku: String,
    },
    /// Put a product into the cart.
    AddedToCart {
        /// The product.
        sku: String,
    },
    /// Started checkout.
    CheckoutStarted,
    /// Viewed a page of the web shop.
    PageViewed {
        /// Path of the page, e.g. `/collections/apparel`.
        path: String,
    },
    /// Wrote to the brand on WhatsApp.
    WhatsAppInbound {
        /// Message text.
        body: String,
    },
    /// Scanned a QR code in a store.
    QrScanned {
        /// The code's payload.
        code: String,
        /// The store it is displayed in.
        store: u32,
    },
    /// Was seen in a store.
    StoreVisit {
        /// The store.
        store: u32,
    },
}

/// A whole simulated brand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Brand {
    /// The configuration it was generated from.
    pub config: BrandConfig,
    /// Every product.
    pub catalogue: Vec<Product>,
    /// Every store.
    pub stores: Vec<Store>,
    /// Every person, by `person_id`.
    pub people: Vec<Person>,
    /// Everything everyone did, ordered by time (ties by person, then as generated).
    pub activities: Vec<Activity>,
}

impl Brand {
    /// The product with this SKU.
    pub fn product(&self, sku: &str) -> Option<&Product> {
        self.catalogue.iter().find(|p| p.sku == sku)
    }
}

/// Generates a whole brand in memory. For very large brands, stream people one by one
/// with [`Simulator::person`] instead.
pub fn generate(cfg: &BrandConfig) -> Brand {
    let sim = Simulator::new(cfg);
    let mut people = Vec::with_capacity(cfg.customers);
    let mut activities = Vec::new();
    for person_id in 0..cfg.customers as u32 {
        let (person, acts) = sim.person(person_id);
        people.push(person);
        activities.extend(acts);
    }
    // Stable: equal instants keep person order, then generation order.
    activities.sort_by(|a, b| a.at.cmp(&b.at).then(a.person_id.cmp(&b.person_id)));
    Brand {
        config: cfg.clone(),
        catalogue: sim.catalogue,
        stores: sim.stores,
        people,
        activities,
    }
}

/// The parts of a brand shared by all its people, ready to simulate any one of them.
#[derive(Debug, Clone)]
pub struct Simulator {
    cfg: BrandConfig,
    catalogue: Vec<Product>,
    stores: Vec<Store>,
    /// Product indexes per category (same order as [`CATEGORIES`]), most popular first.
    by_category: Vec<Vec<usize>>,
}

impl Simulator {
    /// Builds the catalogue and stores of `cfg`.
    pub fn new(cfg: &BrandConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, u64::MAX));
        let mut catalogue = Vec::new();
        let mut by_category = Vec::new();
        for (c, spec) in CATEGORIES.iter().enumerate() {
            let mut idx = Vec::new();
            for i in 0..PRODUCTS_PER_CATEGORY {
                let adjective = ADJECTIVES[(i * 7 + c * 3) % ADJECTIVES.len()];
                let noun = spec.nouns[i % spec.nouns.len()];
                let raw = spec.lo as f64 + rng.random::<f64>() * (spec.hi - spec.lo) as f64;
                // Shelf prices end in 49 or 99.
                let rupees = ((raw / 50.0).round() as i64 * 50 - 1).max(49);
                idx.push(catalogue.len());
                catalogue.push(Product {
                    sku: format!("{}-{:03}", spec.code, i + 1),
                    name: format!("{adjective} {noun}"),
                    category: spec.name.to_owned(),
                    price: Decimal::new(rupees * 100, 2),
                });
            }
            by_category.push(idx);
        }
        let stores = (0..cfg.stores)
            .map(|s| {
                let (city, code) = CITIES[s % CITIES.len()];
                let n = s / CITIES.len() + 1;
                Store {
                    store_id: s as u32,
                    code: format!("{code}-{n:02}"),
                    name: format!("{city} {}", STORE_NAMES[s % STORE_NAMES.len()]),
                    city: city.to_owned(),
                }
            })
            .collect();
        Self {
            cfg: cfg.clone(),
            catalogue,
            stores,
            by_category,
        }
    }

    /// The catalogue.
    pub fn catalogue(&self) -> &[Product] {
        &self.catalogue
    }

    /// The stores.
    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// Simulates person `person_id`: who they are and everything they did, ordered by
    /// time. Depends only on the seed, the time window and `person_id`.
    pub fn person(&self, person_id: u32) -> (Person, Vec<Activity>) {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, u64::from(person_id)));
        let mut life = Life::new(self, person_id, &mut rng);
        life.run(&mut rng);
        let mut acts = life.activities;
        acts.sort_by_key(|a| a.at);
        (life.person, acts)
    }
}

// ---------------------------------------------------------------------------------
// Fixed vocabulary.

struct CategorySpec {
    name: &'static str,
    code: &'static str,
    /// Price range in whole currency units.
    lo: u32,
    hi: u32,
    /// How often it is somebody's favourite.
    popularity: f64,
    nouns: &'static [&'static str],
    /// Categories bought together with this one.
    complements: &'static [usize],
}

const PRODUCTS_PER_CATEGORY: usize = 12;

const CATEGORIES: [CategorySpec; 7] = [
    CategorySpec {
        name: "Apparel",
        code: "APP",
        lo: 499,
        hi: 2999,
        popularity: 0.30,
        nouns: &["Kurta", "Shirt", "T-Shirt", "Dress", "Jeans", "Saree"],
        complements: &[2, 6, 1],
    },
    CategorySpec {
        name: "Footwear",
        code: "FTW",
        lo: 799,
        hi: 4999,
        popularity: 0.12,
        nouns: &[
            "Sneakers", "Sandals", "Loafers", "Juttis", "Slides", "Heels",
        ],
        complements: &[2, 0],
    },
    CategorySpec {
        name: "Accessories",
        code: "ACC",
        lo: 199,
        hi: 1999,
        popularity: 0.12,
        nouns: &["Belt", "Wallet", "Sunglasses", "Stole", "Tote Bag", "Cap"],
        complements: &[0, 1],
    },
    CategorySpec {
        name: "Beauty",
        code: "BTY",
        lo: 149,
        hi: 1499,
        popularity: 0.18,
        nouns: &[
            "Face Wash",
            "Serum",
            "Lipstick",
            "Sunscreen",
            "Kajal",
            "Body Lotion",
        ],
        complements: &[3],
    },
    CategorySpec {
        name: "Home",
        code: "HOM",
        lo: 299,
        hi: 3999,
        popularity: 0.10,
        nouns: &[
            "Cushion Cover",
            "Bedsheet",
            "Mug Set",
            "Candle",
            "Table Runner",
            "Rug",
        ],
        complements: &[4],
    },
    CategorySpec {
        name: "Kids",
        code: "KID",
        lo: 299,
        hi: 1499,
        popularity: 0.08,
        nouns: &[
            "Romper",
            "Kids Tee",
            "Kids Shorts",
            "Frock",
            "Pyjama Set",
            "Hoodie",
        ],
        complements: &[5, 0],
    },
    CategorySpec {
        name: "Jewellery",
        code: "JWL",
        lo: 299,
        hi: 2499,
        popularity: 0.10,
        nouns: &[
            "Earrings", "Bangles", "Necklace", "Anklet", "Ring", "Nose Pin",
        ],
        complements: &[0, 2],
    },
];

const ADJECTIVES: [&str; 12] = [
    "Indigo",
    "Ivory",
    "Maroon",
    "Olive",
    "Mustard",
    "Teal",
    "Charcoal",
    "Blush",
    "Linen",
    "Block-Print",
    "Classic",
    "Festive",
];

const CITIES: [(&str, &str); 10] = [
    ("Bengaluru", "BLR"),
    ("Mumbai", "BOM"),
    ("Delhi", "DEL"),
    ("Hyderabad", "HYD"),
    ("Chennai", "MAA"),
    ("Pune", "PNQ"),
    ("Kolkata", "CCU"),
    ("Ahmedabad", "AMD"),
    ("Jaipur", "JAI"),
    ("Kochi", "COK"),
];

const STORE_NAMES: [&str; 4] = ["High Street", "City Mall", "Central", "Market Road"];

const FIRST_NAMES: [&str; 40] = [
    "Aarav",
    "Vivaan",
    "Aditya",
    "Arjun",
    "Sai",
    "Reyansh",
    "Krishna",
    "Ishaan",
    "Rohan",
    "Kabir",
    "Ananya",
    "Diya",
    "Saanvi",
    "Aadhya",
    "Isha",
    "Kavya",
    "Meera",
    "Priya",
    "Riya",
    "Sneha",
    "Neha",
    "Pooja",
    "Rahul",
    "Vikram",
    "Karan",
    "Nikhil",
    "Aman",
    "Siddharth",
    "Varun",
    "Manish",
    "Lakshmi",
    "Divya",
    "Shreya",
    "Tanvi",
    "Nandini",
    "Farah",
    "Imran",
    "Zoya",
    "Joseph",
    "Maria",
];

const LAST_NAMES: [&str; 30] = [
    "Sharma",
    "Verma",
    "Iyer",
    "Reddy",
    "Nair",
    "Patel",
    "Shah",
    "Mehta",
    "Gupta",
    "Singh",
    "Kumar",
    "Das",
    "Banerjee",
    "Chatterjee",
    "Rao",
    "Pillai",
    "Menon",
    "Joshi",
    "Kulkarni",
    "Desai",
    "Khan",
    "Sheikh",
    "Fernandes",
    "D'Souza",
    "Agarwal",
    "Bose",
    "Ghosh",
    "Mishra",
    "Pandey",
    "Chopra",
];

/// Relative likelihood of an online order or session starting in each hour (UTC).
const WEB_HOURS: [f64; 24] = [
    2.0, 1.0, 0.5, 0.3, 0.3, 0.5, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 5.0, 5.0, 4.0, 4.0, 5.0, 6.0, 7.0,
    8.0, 9.0, 9.0, 7.0, 4.0,
];

// ---------------------------------------------------------------------------------
// One person's life.

/// The hidden parameters of one person.
struct Habits {
    /// Orders per day while buying normally.
    order_rate: f64,
    /// Chance of silently leaving after each order.
    drop_after_order: f64,
    /// Chance of leaving after the very first order.
    drop_after_first: f64,
    /// Browsing sessions without an order, per day, while engaged.
    browse_rate: f64,
    /// Chance an order is refunded.
    refund_rate: f64,
    /// Chance an extra line is added to a basket.
    extra_line: f64,
    /// Exponent bending product choice towards (positive) or away from dear items.
    price_taste: f64,
    /// Favourite categories (indexes into `CATEGORIES`).
    favourites: Vec<usize>,
    /// Day (since the start) from which a `Lapsing` person's rate decays.
    lapse_day: Option<i64>,
    /// Half-life of that decay, in days.
    lapse_half_life: f64,
    /// The day of a `OneTime` person's only order.
    only_order_day: Option<i64>,
}

struct Life<'a> {
    sim: &'a Simulator,
    person: Person,
    habits: Habits,
    activities: Vec<Activity>,
    start: DateTime<Utc>,
    days: i64,
    signup_day: i64,
    orders_placed: u32,
    /// Days on which a refund may make the person give up.
    unhappy_days: Vec<i64>,
}

impl<'a> Life<'a> {
    fn new(sim: &'a Simulator, person_id: u32, rng: &mut ChaCha8Rng) -> Self {
        let cfg = &sim.cfg;
        let start = cfg.start();
        let days = (cfg.end - start).num_days().max(1);
        let archetype = pick_weighted(rng, &Archetype::ALL.map(Archetype::share))
            .map(|i| Archetype::ALL[i])
            .unwrap_or(Archetype::Regular);

        let signup_day = match archetype {
            Archetype::New => days - 1 - rng.random_range(0..150.min(days)),
            // Loyal customers tend to have been around longer.
            Archetype::Loyal => {
                ((rng.random::<f64>().powf(1.5)) * (days - 60).max(1) as f64) as i64
            }
            _ => (rng.random::<f64>() * (days - 30).max(1) as f64) as i64,
        }
        .clamp(0, days - 1);

        let monthly = |mean: f64, sigma: f64, rng: &mut ChaCha8Rng| {
            mean * (sigma * normal(rng) - sigma * sigma / 2.0).exp() / 30.0
        };
        let (order_rate, drop_after_order, drop_after_first, browse_rate) = match archetype {
            Archetype::Loyal => (monthly(1.3, 0.3, rng), 0.01, 0.01, 0.12),
            Archetype::Regular => (monthly(0.45, 0.35, rng), 0.04, 0.06, 0.05),
            Archetype::New => (monthly(0.55, 0.35, rng), 0.05, 0.35, 0.08),
            Archetype::Lapsing => (monthly(0.8, 0.3, rng), 0.02, 0.03, 0.08),
            Archetype::OneTime => (0.0, 1.0, 1.0, 0.03),
            Archetype::BrowserOnly => (0.0, 0.0, 0.0, 0.04),
        };
        let lapse_day =
            (archetype == Archetype::Lapsing).then(|| signup_day + 60 + rng.random_range(0..days));
        let lapse_half_life = 20.0 + rng.random::<f64>() * 40.0;
        let only_order_day = (archetype == Archetype::OneTime)
            .then(|| (signup_day + rng.random_range(0..120)).min(days - 1));

        let popularity: Vec<f64> = CATEGORIES.iter().map(|c| c.popularity).collect();
        let mut favourites = vec![pick_weighted(rng, &popularity).unwrap_or(0)];
        if rng.random_bool(0.5) {
            let second = pick_weighted(rng, &popularity).unwrap_or(0);
            if second != favourites[0] {
                favourites.push(second);
            }
        }

        let shops_in_store = !sim.stores.is_empty() && rng.random_bool(0.6);
        let home_store = shops_in_store.then(|| rng.random_range(0..sim.stores.len()) as u32);
        let web_share = match home_store {
            None => 1.0,
            Some(_) => 0.1 + rng.random::<f64>() * 0.7,
        };
        let city = match home_store {
            Some(s) => sim.stores[s as usize].city.clone(),
            None => CITIES[rng.random_range(0..CITIES.len())].0.to_owned(),
        };
        let habits = Habits {
            order_rate,
            drop_after_order,
            drop_after_first,
            browse_rate,
            refund_rate: if rng.random_bool(0.12) { 0.2 } else { 0.03 },
            extra_line: 0.2 + rng.random::<f64>() * 0.3,
            price_taste: 0.5 * normal(rng),
            favourites,
            lapse_day,
            lapse_half_life,
            only_order_day,
        };
        let person = Person {
            person_id,
            archetype,
            first_name: FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())].to_owned(),
            last_name: LAST_NAMES[rng.random_range(0..LAST_NAMES.len())].to_owned(),
            city,
            home_store,
            prefers_whatsapp: rng.random_bool(0.35),
            web_share,
            signed_up_at: start
                + Duration::days(signup_day)
                + Duration::seconds(rng.random_range(36_000..79_200)),
            favourite_categories: habits
                .favourites
                .iter()
                .map(|&c| CATEGORIES[c].name.to_owned())
                .collect(),
            stopped_buying_at: None,
        };
        Self {
            sim,
            person,
            habits,
            activities: Vec::new(),
            start,
            days,
            signup_day,
            orders_placed: 0,
            unhappy_days: Vec::new(),
        }
    }

    fn push(&mut self, at: DateTime<Utc>, kind: ActivityKind) {
        self.activities.push(Activity {
            person_id: self.person.person_id,
            at,
            kind,
        });
    }

    fn run(&mut self, rng: &mut ChaCha8Rng) {
        let signed_up_at = self.person.signed_up_at;
        self.push(signed_up_at, ActivityKind::SignedUp);

        let archetype = self.person.archetype;
        let mut mood = 0.0_f64;
        // Day the person silently stopped buying, if they have.
        let mut dropped_on: Option<i64> = None;
        for day in self.signup_day..self.days {
            let since_signup = day - self.signup_day;
            if since_signup % 30 == 0 {
                mood = 0.7 * mood + 0.35 * normal(rng);
            }
            if self.unhappy_days.contains(&day) && dropped_on.is_none() && rng.random_bool(0.3) {
                dropped_on = Some(day);
            }
            if let Some(d) = dropped_on {
                // A few come back on their own.
                if day > d && rng.random_bool(0.0015) {
                    dropped_on = None;
                    mood = 0.0;
                }
            }
            let lapse = match self.habits.lapse_day {
                Some(l) if day > l => 0.5_f64.powf((day - l) as f64 / self.habits.lapse_half_life),
                _ => 1.0,
            };
            let date = (self.start + Duration::days(day)).date_naive();
            let season = seasonality(date);

            // Ground truth: the last time the person stopped buying.
            let stopped = dropped_on.is_some() || lapse < 0.15;
            match (stopped, self.person.stopped_buying_at) {
                (true, None) if self.orders_placed > 0 => {
                    self.person.stopped_buying_at = Some(self.day_start(day));
                }
                (false, Some(_)) => self.person.stopped_buying_at = None,
                _ => {}
            }

            let engagement = match dropped_on {
                // Dead customers keep browsing for a while, then fade.
                Some(d) => 0.5_f64.powf((day - d) as f64 / 30.0).max(0.03),
                None => lapse.sqrt(),
            } * match archetype {
                Archetype::BrowserOnly | Archetype::OneTime => {
                    0.5_f64.powf(since_signup as f64 / 120.0).max(0.1)
                }
                _ => 1.0,
            };

            let order_today = match archetype {
                Archetype::OneTime => self.habits.only_order_day == Some(day),
                Archetype::BrowserOnly => false,
                _ => {
                    let rate = if dropped_on.is_some() {
                        0.0
                    } else {
                        self.habits.order_rate * lapse * season * mood.exp()
                    };
                    rng.random_bool(rate.clamp(0.0, 0.9))
                }
            };
            if order_today {
                let cancelled = self.place_order(day, season, rng);
                if !cancelled {
                    let p = if self.orders_placed == 1 {
                        self.habits.drop_after_first
                    } else {
                        self.habits.drop_after_order
                    };
                    if dropped_on.is_none() && rng.random_bool(p) {
                        dropped_on = Some(day);
                    }
                }
            }

            let browse = self.habits.browse_rate * engagement * season.sqrt() * mood.exp();
            if rng.random_bool(browse.clamp(0.0, 0.9)) {
                let at = self.random_time(day, rng, Channel::Web);
                self.browse_session(at, None, rng);
            }
            if self.person.prefers_whatsapp && rng.random_bool((0.01 * engagement).min(1.0)) {
                let at = self.random_time(day, rng, Channel::Web);
                let body = pick(rng, &CHATTER).to_owned();
                self.push(at, ActivityKind::WhatsAppInbound { body });
            }
        }
    }

    fn day_start(&self, day: i64) -> DateTime<Utc> {
        self.start + Duration::days(day)
    }

    /// A moment on `day`: shop hours for stores, mostly evenings online.
    fn random_time(&self, day: i64, rng: &mut ChaCha8Rng, channel: Channel) -> DateTime<Utc> {
        let hour = match channel {
            Channel::Pos => rng.random_range(10..21),
            _ => pick_weighted(rng, &WEB_HOURS).unwrap_or(12) as i64,
        };
        let at = self.day_start(day) + Duration::seconds(hour * 3600 + rng.random_range(0..3600));
        if at <= self.person.signed_up_at {
            // On the sign-up day, everything happens after signing up.
            self.person.signed_up_at + Duration::minutes(rng.random_range(1..60))
        } else {
            at
        }
    }

    /// Places an order on `day`; returns whether it was cancelled.
    fn place_order(&mut self, day: i64, season: f64, rng: &mut ChaCha8Rng) -> bool {
        let store = match self.person.home_store {
            Some(home) if !rng.random_bool(self.person.web_share) => {
                Some(if rng.random_bool(0.85) {
                    home
                } else {
                    rng.random_range(0..self.sim.stores.len()) as u32
                })
            }
            _ => None,
        };
        let channel = if store.is_some() {
            Channel::Pos
        } else {
            Channel::Web
        };
        let at = self.random_time(day, rng, channel);
        // Sale season: some orders carry a 10% discount.
        let discount = season > 1.5 && rng.random_bool(0.5);
        let items = self.basket(rng, discount);
        let total: Decimal = items.iter().map(|i| i.price * Decimal::from(i.qty)).sum();
        self.orders_placed += 1;
        let order_id = match store {
            Some(s) => format!(
                "{}/B{:07}{:03}",
                self.sim.stores[s as usize].code, self.person.person_id, self.orders_placed
            ),
            None => format!("SO{:07}{:03}", self.person.person_id, self.orders_placed),
        };

        match store {
            None => {
                if rng.random_bool(0.85) {
                    // The session that led to the order, minutes to days before it.
                    let lead = Duration::minutes(rng.random_range(10..60 * 24 * 3));
                    let session_at = (at - lead).max(self.person.signed_up_at);
                    let skus: Vec<String> = items.iter().map(|i| i.sku.clone()).collect();
                    self.browse_session(session_at, Some(&skus), rng);
                }
            }
            Some(s) => {
                let visit = at - Duration::minutes(rng.random_range(5..40));
                self.push(visit, ActivityKind::StoreVisit { store: s });
                if rng.random_bool(0.25) {
                    let code = format!(
                        "QR-{}-{}",
                        self.sim.stores[s as usize].code,
                        pick(rng, &QR_CAMPAIGNS)
                    );
                    self.push(
                        visit + Duration::minutes(2),
                        ActivityKind::QrScanned { code, store: s },
                    );
                }
            }
        }
        if self.person.prefers_whatsapp && rng.random_bool(0.3) {
            let asked = at - Duration::hours(rng.random_range(2..72));
            if asked > self.person.signed_up_at {
                let name = self.product_name(&items[0].sku);
                let body =
                    format!("Hi, is the {name} available in my size? Can I pick it up this week?");
                self.push(asked, ActivityKind::WhatsAppInbound { body });
            }
        }
        self.push(
            at,
            ActivityKind::OrderPlaced {
                order_id: order_id.clone(),
                channel,
                store,
                items: items.clone(),
                total,
                currency: self.sim.cfg.currency.clone(),
            },
        );

        let cancel_rate = if channel == Channel::Web {
            0.025
        } else {
            0.005
        };
        if rng.random_bool(cancel_rate) {
            let when = at + Duration::minutes(rng.random_range(30..8 * 60));
            self.push(when, ActivityKind::OrderCancelled { order_id });
            return true;
        }
        if rng.random_bool(self.habits.refund_rate) {
            let refund_day = day + rng.random_range(3..20);
            let when = self.day_start(refund_day) + Duration::hours(rng.random_range(9..20));
            let amount = if items.len() == 1 || rng.random_bool(0.4) {
                total
            } else {
                let line = &items[rng.random_range(0..items.len())];
                line.price * Decimal::from(line.qty)
            };
            if self.person.prefers_whatsapp && rng.random_bool(0.6) {
                let body = format!("My order {order_id} arrived damaged. I want a refund please.");
                self.push(
                    when - Duration::hours(20),
                    ActivityKind::WhatsAppInbound { body },
                );
            }
            self.push(when, ActivityKind::Refund { order_id, amount });
            self.unhappy_days.push(refund_day);
        }
        false
    }

    /// A browsing session at `at`; with `bought`, the products later ordered are among
    /// those viewed and carted, and checkout is started.
    fn browse_session(
        &mut self,
        at: DateTime<Utc>,
        bought: Option<&[String]>,
        rng: &mut ChaCha8Rng,
    ) {
        let mut t = at;
        let step = |t: &mut DateTime<Utc>, rng: &mut ChaCha8Rng| {
            *t += Duration::seconds(rng.random_range(15..240));
            *t
        };
        let first = if rng.random_bool(0.5) {
            "/".to_owned()
        } else {
            let c = self.affine_category(rng);
            format!("/collections/{}", CATEGORIES[c].name.to_lowercase())
        };
        self.push(t, ActivityKind::PageViewed { path: first });
        let browsed = rng.random_range(1..4);
        for _ in 0..browsed {
            let c = self.affine_category(rng);
            let p = self.product_in(c, rng);
            let sku = self.sim.catalogue[p].sku.clone();
            let at = step(&mut t, rng);
            self.push(at, ActivityKind::ProductViewed { sku });
        }
        match bought {
            Some(skus) => {
                for sku in skus {
                    let at = step(&mut t, rng);
                    self.push(at, ActivityKind::ProductViewed { sku: sku.clone() });
                    let at = step(&mut t, rng);
                    self.push(at, ActivityKind::AddedToCart { sku: sku.clone() });
                }
                let at = step(&mut t, rng);
                self.push(
                    at,
                    ActivityKind::PageViewed {
                        path: "/cart".into(),
                    },
                );
                let at = step(&mut t, rng);
                self.push(at, ActivityKind::CheckoutStarted);
            }
            None => {
                // Abandoned carts.
                if rng.random_bool(0.25) {
                    let c = self.affine_category(rng);
                    let p = self.product_in(c, rng);
                    let sku = self.sim.catalogue[p].sku.clone();
                    let at = step(&mut t, rng);
                    self.push(at, ActivityKind::AddedToCart { sku });
                    if rng.random_bool(0.35) {
                        let at = step(&mut t, rng);
                        self.push(at, ActivityKind::CheckoutStarted);
                    }
                }
            }
        }
    }

    /// A category: a favourite most of the time, otherwise by overall popularity.
    fn affine_category(&self, rng: &mut ChaCha8Rng) -> usize {
        if rng.random_bool(0.75) {
            self.habits.favourites[rng.random_range(0..self.habits.favourites.len())]
        } else {
            let popularity: Vec<f64> = CATEGORIES.iter().map(|c| c.popularity).collect();
            pick_weighted(rng, &popularity).unwrap_or(0)
        }
    }

    /// A product of category `c`: popular ones more likely, bent by price taste.
    fn product_in(&self, c: usize, rng: &mut ChaCha8Rng) -> usize {
        let idx = &self.sim.by_category[c];
        let mid = (CATEGORIES[c].lo + CATEGORIES[c].hi) as f64 / 2.0;
        let weights: Vec<f64> = idx
            .iter()
            .enumerate()
            .map(|(rank, &p)| {
                let price: f64 = self.sim.catalogue[p].price.try_into().unwrap_or(mid);
                (1.0 / (rank as f64 + 1.0).powf(0.8)) * (price / mid).powf(self.habits.price_taste)
            })
            .collect();
        idx[pick_weighted(rng, &weights).unwrap_or(0)]
    }

    fn basket(&self, rng: &mut ChaCha8Rng, discount: bool) -> Vec<OrderItem> {
        let mut lines: Vec<OrderItem> = Vec::new();
        let mut category = self.affine_category(rng);
        loop {
            let p = &self.sim.catalogue[self.product_in(category, rng)];
            let qty = if rng.random_bool(0.12) { 2 } else { 1 };
            match lines.iter_mut().find(|l| l.sku == p.sku) {
                Some(line) => line.qty += qty,
                None => {
                    let price = if discount {
                        (p.price * Decimal::new(9, 1)).round_dp(2)
                    } else {
                        p.price
                    };
                    lines.push(OrderItem {
                        sku: p.sku.clone(),
                        name: p.name.clone(),
                        category: Some(p.category.clone()),
                        qty,
                        price,
                    });
                }
            }
            if lines.len() >= 5 || !rng.random_bool(self.habits.extra_line) {
                return lines;
            }
            let complements = CATEGORIES[category].complements;
            category = if rng.random_bool(0.6) {
                complements[rng.random_range(0..complements.len())]
            } else {
                self.affine_category(rng)
            };
        }
    }

    fn product_name(&self, sku: &str) -> String {
        self.sim
            .catalogue
            .iter()
            .find(|p| p.sku == sku)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| sku.to_owned())
    }
}

const CHATTER: [&str; 6] = [
    "Hi! When does the festive sale start?",
    "Do you have a store near me?",
    "Is cash on delivery available?",
    "Can I exchange a kurta I bought last week?",
    "Please share the new collection catalogue",
    "What are your store timings on Sunday?",
];

const QR_CAMPAIGNS: [&str; 3] = ["LOYALTY", "FEEDBACK", "NEWARRIVALS"];

/// Demand multiplier of a calendar day: festive season (late October), Christmas,
/// end-of-season sales (January, July) and weekends.
pub fn seasonality(date: NaiveDate) -> f64 {
    let doy = f64::from(date.ordinal());
    let bump = |centre: f64, width: f64, height: f64| {
        height * (-((doy - centre) / width).powi(2) / 2.0).exp()
    };
    let weekend = match date.weekday() {
        Weekday::Sat | Weekday::Sun => 0.15,
        _ => 0.0,
    };
    1.0 + bump(300.0, 12.0, 1.2)
        + bump(358.0, 6.0, 0.5)
        + bump(10.0, 6.0, 0.6)
        + bump(190.0, 7.0, 0.5)
        + weekend
}

// ---------------------------------------------------------------------------------
// Small random helpers (kept here so the crate needs no distribution library).

/// SplitMix64 of `seed` and `stream`: independent seeds for independent streams.
fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An index drawn with probability proportional to `weights`.
fn pick_weighted(rng: &mut ChaCha8Rng, weights: &[f64]) -> Option<usize> {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return Some(i);
        }
        x -= w;
    }
    Some(weights.len() - 1)
}

fn pick<'t>(rng: &mut ChaCha8Rng, items: &[&'t str]) -> &'t str {
    items[rng.random_range(0..items.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn small() -> BrandConfig {
        BrandConfig {
            seed: 11,
            customers: 800,
            ..BrandConfig::default()
        }
    }

    #[test]
    fn same_seed_same_brand_and_people_do_not_depend_on_brand_size() {
        let a = generate(&small());
        let b = generate(&small());
        assert_eq!(a, b);
        let bigger = generate(&BrandConfig {
            customers: 900,
            ..small()
        });
        assert_eq!(a.people[17], bigger.people[17]);
        let other = generate(&BrandConfig {
            seed: 12,
            ..small()
        });
        assert_ne!(a.activities, other.activities);
    }

    #[test]
    fn activities_are_ordered_and_inside_the_window() {
        let cfg = small();
        let brand = generate(&cfg);
        assert!(brand.activities.windows(2).all(|w| w[0].at <= w[1].at));
        for a in &brand.activities {
            let person = &brand.people[a.person_id as usize];
            assert!(a.at >= person.signed_up_at, "{a:?} before sign-up");
            // Refunds may land a few days after the end; nothing else does.
            if !matches!(
                a.kind,
                ActivityKind::Refund { .. } | ActivityKind::WhatsAppInbound { .. }
            ) {
                assert!(a.at < cfg.end + Duration::days(1), "{a:?} after the end");
            }
            assert!(a.at >= cfg.start());
        }
    }

    #[test]
    fn orders_are_consistent() {
        let brand = generate(&small());
        let mut ids = HashSet::new();
        let mut placed: HashMap<String, (u32, Decimal, DateTime<Utc>)> = HashMap::new();
        for a in &brand.activities {
            match &a.kind {
                ActivityKind::OrderPlaced {
                    order_id,
                    channel,
                    store,
                    items,
                    total,
                    currency,
                } => {
                    assert!(
                        ids.insert(order_id.clone()),
                        "duplicate order id {order_id}"
                    );
                    assert_eq!(currency, "INR");
                    assert!(!items.is_empty());
                    let sum: Decimal = items.iter().map(|i| i.price * Decimal::from(i.qty)).sum();
                    assert_eq!(&sum, total);
                    assert_eq!(*channel == Channel::Pos, store.is_some());
                    for item in items {
                        let product = brand.product(&item.sku).expect("sku in catalogue");
                        assert_eq!(item.category.as_deref(), Some(product.category.as_str()));
                        assert!(item.price <= product.price);
                    }
                    placed.insert(order_id.clone(), (a.person_id, *total, a.at));
                }
                ActivityKind::OrderCancelled { order_id } => {
                    let (who, _, at) = &placed[order_id];
                    assert_eq!(*who, a.person_id);
                    assert!(a.at > *at);
                }
                ActivityKind::Refund { order_id, amount } => {
                    let (who, total, at) = &placed[order_id];
                    assert_eq!(*who, a.person_id);
                    assert!(amount <= total && *amount > Decimal::ZERO);
                    assert!(a.at > *at);
                }
                _ => {}
            }
        }
        assert!(
            ids.len() > 1_000,
            "an 800-person brand places many orders: {}",
            ids.len()
        );
    }

    #[test]
    fn archetypes_behave_differently() {
        let brand = generate(&small());
        let mut orders: HashMap<Archetype, (usize, usize)> = HashMap::new();
        for p in &brand.people {
            orders.entry(p.archetype).or_default().1 += 1;
        }
        for a in &brand.activities {
            if matches!(a.kind, ActivityKind::OrderPlaced { .. }) {
                orders
                    .entry(brand.people[a.person_id as usize].archetype)
                    .or_default()
                    .0 += 1;
            }
        }
        let per_person = |k: Archetype| {
            let (o, n) = orders[&k];
            o as f64 / n as f64
        };
        assert_eq!(per_person(Archetype::BrowserOnly), 0.0);
        assert!((per_person(Archetype::OneTime) - 1.0).abs() < 1e-9);
        assert!(per_person(Archetype::Loyal) > 2.0 * per_person(Archetype::Regular));
        assert!(per_person(Archetype::Regular) > per_person(Archetype::OneTime));
        // Every archetype is present in a brand this size.
        assert_eq!(orders.len(), Archetype::ALL.len());
    }

    #[test]
    fn lapsing_people_buy_less_and_less_after_they_start_to_lapse() {
        let cfg = small();
        let brand = generate(&cfg);
        let half = cfg.start() + (cfg.end - cfg.start()) / 2;
        let (mut early, mut late) = (0, 0);
        for a in &brand.activities {
            let p = &brand.people[a.person_id as usize];
            if p.archetype == Archetype::Lapsing
                && p.signed_up_at < cfg.start() + Duration::days(60)
                && matches!(a.kind, ActivityKind::OrderPlaced { .. })
            {
                if a.at < half { early += 1 } else { late += 1 }
            }
        }
        assert!(late < early, "early {early}, late {late}");
    }

    #[test]
    fn festive_season_sells_more() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        assert!(seasonality(d(10, 27)) > 2.0);
        assert!(seasonality(d(3, 11)) < 1.01);
        assert!(
            seasonality(d(3, 14)) > seasonality(d(3, 11)),
            "Saturday beats Wednesday"
        );
    }

    #[test]
    fn stores_and_web_only_brands() {
        let web_only = generate(&BrandConfig {
            stores: 0,
            customers: 200,
            ..small()
        });
        assert!(web_only.people.iter().all(|p| p.home_store.is_none()));
        assert!(web_only.activities.iter().all(|a| !matches!(
            a.kind,
            ActivityKind::StoreVisit { .. }
                | ActivityKind::OrderPlaced {
                    channel: Channel::Pos,
                    ..
                }
        )));
        let brand = generate(&small());
        assert_eq!(brand.stores.len(), 6);
        assert_eq!(brand.stores[0].code, "BLR-01");
        assert!(brand.people.iter().any(|p| p.home_store.is_some()));
    }
}
