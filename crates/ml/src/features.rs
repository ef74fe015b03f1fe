//! Per-profile features as of a point in time, and the outcome labels after it.
//!
//! [`compute`] is the only feature code in ConstIntel: training calls it with a past
//! cutoff, scoring with "now", so a model never sees features computed differently from
//! those it was trained on. It ignores every fact at or after `as_of` — including a
//! cancellation or refund of an earlier order — so nothing that happened after a
//! training cutoff can leak into a training row (see the leakage tests).
//!
//! A value that does not exist (the recency of someone who never ordered, the gap
//! statistics of a single order) is `NaN`, which LightGBM treats as missing; in JSON it
//! is `null`. The set is versioned by [`FEATURE_SET_VERSION`]: any change to a
//! definition or to the order of [`FEATURE_NAMES`] must bump it, because models match
//! features by position.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use domain::Channel;

use crate::history::{EventKind, ProfileHistory};

/// Version of the feature definitions below (stored with features and models).
pub const FEATURE_SET_VERSION: i32 = 2;

macro_rules! feature_set {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// One profile's features (see the module doc for missing values).
        #[derive(Debug, Clone, Copy, PartialEq, Default)]
        pub struct Features {
            $($(#[doc = $doc])+ pub $name: f32,)+
        }

        /// Feature names, in model column order.
        pub const FEATURE_NAMES: &[&str] = &[$(stringify!($name)),+];

        impl Features {
            /// The values in [`FEATURE_NAMES`] order.
            pub fn to_vec(&self) -> Vec<f32> {
                vec![$(self.$name),+]
            }

            /// Builds features from values in [`FEATURE_NAMES`] order.
            pub fn from_slice(values: &[f32]) -> Option<Self> {
                let mut it = values.iter().copied();
                let f = Self { $($name: it.next()?,)+ };
                it.next().is_none().then_some(f)
            }
        }
    };
}

feature_set! {
    /// Days since the last order (missing without orders).
    recency_days,
    /// Orders placed and not cancelled.
    frequency,
    /// Spend on those orders net of refunds.
    monetary_total,
    /// Average order total (missing without orders).
    monetary_avg,
    /// Largest order total (missing without orders).
    monetary_max,
    /// Days since the profile was first seen.
    tenure_days,
    /// Days since the first order (missing without orders): the customer's age `T` in
    /// the BG/NBD model.
    first_order_days,
    /// Mean days between consecutive orders (missing below two orders).
    gap_mean_days,
    /// Standard deviation of those gaps (missing below two orders).
    gap_std_days,
    /// Days between the last two orders (missing below two orders).
    gap_last_days,
    /// Recency divided by the mean gap: how overdue the next order is (missing below
    /// two orders).
    recency_over_gap,
    /// Regularity of the rhythm: standard deviation of the gaps over their mean (0 is
    /// clockwork; missing below two orders).
    gap_cv,
    /// Orders in the last 30 days.
    orders_30d,
    /// Orders in the last 90 days.
    orders_90d,
    /// Orders in the last 180 days.
    orders_180d,
    /// Spend in the last 30 days.
    spend_30d,
    /// Spend in the last 90 days.
    spend_90d,
    /// Spend in the last 180 days.
    spend_180d,
    /// Distinct product categories bought.
    distinct_categories,
    /// Distinct channels used (orders and events).
    channels_used,
    /// Share of orders placed online (missing without orders).
    web_order_share,
    /// Product views in the last 30 days.
    product_views_30d,
    /// Product views in the last 90 days.
    product_views_90d,
    /// Cart additions in the last 30 days.
    cart_adds_30d,
    /// Cart additions in the last 90 days.
    cart_adds_90d,
    /// Checkouts started in the last 30 days.
    checkouts_30d,
    /// Page views in the last 30 days.
    page_views_30d,
    /// WhatsApp messages from the customer in the last 90 days.
    whatsapp_inbound_90d,
    /// Store visits and QR scans in the last 90 days.
    store_visits_90d,
    /// Refunds received.
    refunds,
    /// Refunded amount over gross spend (missing without spend).
    refund_share,
    /// Orders cancelled.
    cancellations,
    /// Days since any activity at all (missing if never seen).
    days_since_last_activity,
}

/// Number of features.
pub const N_FEATURES: usize = FEATURE_NAMES.len();

impl Features {
    /// The features as a JSON object `{name: value}`, missing values as `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let map = FEATURE_NAMES
            .iter()
            .zip(self.to_vec())
            .map(|(n, v)| {
                let v = if v.is_finite() {
                    serde_json::json!(v)
                } else {
                    serde_json::Value::Null
                };
                ((*n).to_owned(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// Whether the profile had ordered before these features' `as_of`.
    pub fn has_ordered(&self) -> bool {
        self.frequency > 0.0
    }
}

const DAY_SECS: f64 = 86_400.0;

fn days_between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> f64 {
    (later - earlier).num_milliseconds() as f64 / 1_000.0 / DAY_SECS
}

/// Features of `history` as of `as_of`, from facts strictly before `as_of` only.
pub fn compute(history: &ProfileHistory, as_of: DateTime<Utc>) -> Features {
    let before = |t: DateTime<Utc>| t < as_of;
    let within = |t: DateTime<Utc>, days: i64| t < as_of && t >= as_of - Duration::days(days);

    let cancelled: HashSet<&str> = history
        .events
        .iter()
        .filter(|e| before(e.at))
        .filter_map(|e| match &e.kind {
            EventKind::OrderCancelled { order_key } => Some(order_key.as_str()),
            _ => None,
        })
        .collect();
    let mut orders: Vec<_> = history
        .orders
        .iter()
        .filter(|o| before(o.placed_at) && !cancelled.contains(o.order_key.as_str()))
        .collect();
    orders.sort_by_key(|o| o.placed_at);
    let placed: HashMap<&str, ()> = orders.iter().map(|o| (o.order_key.as_str(), ())).collect();

    let mut f = Features {
        frequency: orders.len() as f32,
        cancellations: cancelled.len() as f32,
        ..Features::default()
    };

    let gross: f64 = orders.iter().map(|o| o.total).sum();
    let mut refunded = 0.0;
    let count = |days: i64, kind: fn(&EventKind) -> bool| {
        history
            .events
            .iter()
            .filter(|e| within(e.at, days) && kind(&e.kind))
            .count() as f32
    };
    f.product_views_30d = count(30, |k| matches!(k, EventKind::ProductViewed));
    f.product_views_90d = count(90, |k| matches!(k, EventKind::ProductViewed));
    f.cart_adds_30d = count(30, |k| matches!(k, EventKind::AddedToCart));
    f.cart_adds_90d = count(90, |k| matches!(k, EventKind::AddedToCart));
    f.checkouts_30d = count(30, |k| matches!(k, EventKind::CheckoutStarted));
    f.page_views_30d = count(30, |k| matches!(k, EventKind::PageViewed));
    f.whatsapp_inbound_90d = count(90, |k| matches!(k, EventKind::MessageReceived));
    f.store_visits_90d = count(90, |k| {
        matches!(k, EventKind::StoreVisit | EventKind::QrScanned)
    });

    for e in history.events.iter().filter(|e| before(e.at)) {
        if let EventKind::RefundIssued { order_key, amount } = &e.kind
            && placed.contains_key(order_key.as_str())
        {
            f.refunds += 1.0;
            refunded += amount;
        }
    }
    f.monetary_total = (gross - refunded).max(0.0) as f32;
    f.refund_share = if gross > 0.0 {
        (refunded / gross).min(1.0) as f32
    } else {
        f32::NAN
    };

    let first_seen = history
        .orders
        .iter()
        .map(|o| o.placed_at)
        .chain(history.events.iter().map(|e| e.at))
        .filter(|t| before(*t))
        .min();
    let last_active = history
        .orders
        .iter()
        .map(|o| o.placed_at)
        .chain(history.events.iter().map(|e| e.at))
        .filter(|t| before(*t))
        .max();
    f.tenure_days = first_seen.map_or(0.0, |t| days_between(t, as_of) as f32);
    f.days_since_last_activity = last_active.map_or(f32::NAN, |t| days_between(t, as_of) as f32);

    let mut channels: HashSet<Channel> = orders.iter().map(|o| o.channel).collect();
    channels.extend(
        history
            .events
            .iter()
            .filter(|e| before(e.at))
            .map(|e| e.channel),
    );
    f.channels_used = channels.len() as f32;
    let categories: HashSet<&str> = orders
        .iter()
        .flat_map(|o| o.categories.iter().map(String::as_str))
        .collect();
    f.distinct_categories = categories.len() as f32;

    for (days, n, spend) in [
        (30, &mut f.orders_30d, &mut f.spend_30d),
        (90, &mut f.orders_90d, &mut f.spend_90d),
        (180, &mut f.orders_180d, &mut f.spend_180d),
    ] {
        let recent = orders.iter().filter(|o| within(o.placed_at, days));
        let (c, s) = recent.fold((0.0_f64, 0.0_f64), |(c, s), o| (c + 1.0, s + o.total));
        *n = c as f32;
        *spend = s as f32;
    }

    match (orders.first(), orders.last()) {
        (Some(first), Some(last)) => {
            let recency = days_between(last.placed_at, as_of);
            f.recency_days = recency as f32;
            f.first_order_days = days_between(first.placed_at, as_of) as f32;
            f.monetary_avg = (gross / orders.len() as f64) as f32;
            f.monetary_max = orders.iter().map(|o| o.total).fold(f64::MIN, f64::max) as f32;
            let web = orders.iter().filter(|o| o.channel == Channel::Web).count();
            f.web_order_share = (web as f64 / orders.len() as f64) as f32;
            let gaps: Vec<f64> = orders
                .windows(2)
                .map(|w| days_between(w[0].placed_at, w[1].placed_at))
                .collect();
            if gaps.is_empty() {
                f.gap_mean_days = f32::NAN;
                f.gap_std_days = f32::NAN;
                f.gap_last_days = f32::NAN;
                f.recency_over_gap = f32::NAN;
                f.gap_cv = f32::NAN;
            } else {
                let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
                let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
                f.gap_mean_days = mean as f32;
                f.gap_std_days = var.sqrt() as f32;
                f.gap_last_days = gaps[gaps.len() - 1] as f32;
                f.recency_over_gap = (recency / mean.max(1.0)) as f32;
                f.gap_cv = (var.sqrt() / mean.max(1.0)) as f32;
            }
        }
        _ => {
            f.recency_days = f32::NAN;
            f.first_order_days = f32::NAN;
            f.gap_cv = f32::NAN;
            f.monetary_avg = f32::NAN;
            f.monetary_max = f32::NAN;
            f.web_order_share = f32::NAN;
            f.gap_mean_days = f32::NAN;
            f.gap_std_days = f32::NAN;
            f.gap_last_days = f32::NAN;
            f.recency_over_gap = f32::NAN;
        }
    }
    f
}

/// What a profile did in the `horizon_days` after a cutoff: the labels of churn
/// (no order) and LTV (spend).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Orders placed in the window and not cancelled.
    pub orders: u32,
    /// Their total.
    pub spend: f64,
}

impl Outcome {
    /// Churned: no order in the window.
    pub fn churned(&self) -> bool {
        self.orders == 0
    }
}

/// The outcome of `history` in `[cutoff, cutoff + horizon_days)`. This is the only
/// place that reads facts after a cutoff.
pub fn outcome(history: &ProfileHistory, cutoff: DateTime<Utc>, horizon_days: u32) -> Outcome {
    let end = cutoff + Duration::days(i64::from(horizon_days));
    let cancelled: HashSet<&str> = history
        .events
        .iter()
        .filter(|e| e.at < end)
        .filter_map(|e| match &e.kind {
            EventKind::OrderCancelled { order_key } => Some(order_key.as_str()),
            _ => None,
        })
        .collect();
    history
        .orders
        .iter()
        .filter(|o| o.placed_at >= cutoff && o.placed_at < end)
        .filter(|o| !cancelled.contains(o.order_key.as_str()))
        .fold(
            Outcome {
                orders: 0,
                spend: 0.0,
            },
            |acc, o| Outcome {
                orders: acc.orders + 1,
                spend: acc.spend + o.total,
            },
        )
}

/// The naive LTV baseline: the profile's past spend rate (net spend over its tenure,
/// at least 30 days) carried over the horizon.
pub fn past_spend_rate_forecast(f: &Features, horizon_days: u32) -> f64 {
    let tenure = f64::from(f.tenure_days).max(30.0);
    f64::from(f.monetary_total) / tenure * f64::from(horizon_days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventFact, OrderFact};
    use chrono::TimeZone;

    fn day(d: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(d)
    }

    fn order(key: &str, d: i64, total: f64, channel: Channel, cats: &[&str]) -> OrderFact {
        OrderFact {
            order_key: key.into(),
            placed_at: day(d),
            channel,
            total,
            categories: cats.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn event(d: i64, kind: EventKind) -> EventFact {
        EventFact {
            at: day(d),
            channel: Channel::Web,
            kind,
        }
    }

    /// A profile with four orders (one cancelled, one partly refunded) and some
    /// browsing, whose features are worked out by hand below.
    fn history() -> ProfileHistory {
        ProfileHistory {
            profile_id: uuid::Uuid::nil(),
            orders: vec![
                order("s:1", 10, 100.0, Channel::Web, &["A"]),
                order("s:2", 40, 300.0, Channel::Pos, &["A", "B"]),
                order("s:3", 100, 200.0, Channel::Web, &["C"]),
                order("s:4", 101, 999.0, Channel::Web, &["D"]),
            ],
            events: vec![
                event(5, EventKind::Other),
                event(
                    101,
                    EventKind::OrderCancelled {
                        order_key: "s:4".into(),
                    },
                ),
                event(
                    50,
                    EventKind::RefundIssued {
                        order_key: "s:2".into(),
                        amount: 60.0,
                    },
                ),
                event(95, EventKind::ProductViewed),
                event(115, EventKind::ProductViewed),
                event(118, EventKind::AddedToCart),
                EventFact {
                    at: day(119),
                    channel: Channel::Whatsapp,
                    kind: EventKind::MessageReceived,
                },
            ],
        }
    }

    #[test]
    fn features_match_hand_computed_values() {
        let f = compute(&history(), day(120));
        // Orders 1-3 count; order 4 was cancelled before day 120.
        assert_eq!(f.frequency, 3.0);
        assert_eq!(f.cancellations, 1.0);
        assert_eq!(f.recency_days, 20.0);
        assert_eq!(f.monetary_total, 540.0); // 600 gross - 60 refunded
        assert_eq!(f.monetary_avg, 200.0);
        assert_eq!(f.monetary_max, 300.0);
        assert_eq!(f.refunds, 1.0);
        assert_eq!(f.refund_share, 0.1);
        assert_eq!(f.tenure_days, 115.0); // first seen on day 5
        // Gaps 30 and 60: mean 45, population std 15, last 60.
        assert_eq!(f.gap_mean_days, 45.0);
        assert_eq!(f.gap_std_days, 15.0);
        assert_eq!(f.gap_last_days, 60.0);
        assert!((f.recency_over_gap - 20.0 / 45.0).abs() < 1e-6);
        assert!((f.gap_cv - 15.0 / 45.0).abs() < 1e-6);
        assert_eq!(f.first_order_days, 110.0); // first order on day 10
        // Windows look back from day 120: [90, 120) holds order 3, [30, 120) orders 2-3.
        assert_eq!((f.orders_30d, f.orders_90d, f.orders_180d), (1.0, 2.0, 3.0));
        assert_eq!(
            (f.spend_30d, f.spend_90d, f.spend_180d),
            (200.0, 500.0, 600.0)
        );
        assert_eq!(f.distinct_categories, 3.0);
        assert_eq!(f.channels_used, 3.0); // web, pos, whatsapp
        assert!((f.web_order_share - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!((f.product_views_30d, f.product_views_90d), (2.0, 2.0));
        assert_eq!(f.cart_adds_30d, 1.0);
        assert_eq!(f.whatsapp_inbound_90d, 1.0);
        assert_eq!(f.days_since_last_activity, 1.0);
    }

    #[test]
    fn a_cancellation_after_the_cutoff_does_not_reach_back() {
        let mut h = history();
        h.orders.push(order("s:5", 60, 50.0, Channel::Web, &["A"]));
        h.events.push(event(
            61,
            EventKind::OrderCancelled {
                order_key: "s:5".into(),
            },
        ));
        h.events.push(event(
            62,
            EventKind::RefundIssued {
                order_key: "s:1".into(),
                amount: 100.0,
            },
        ));
        // On day 60 at noon order 5 stands and order 1 is not refunded yet.
        let f = compute(&h, day(60) + Duration::hours(12));
        assert_eq!((f.frequency, f.cancellations, f.refunds), (3.0, 0.0, 1.0));
        assert_eq!(f.monetary_total, 390.0); // 100 + 300 + 50 - 60
        let g = compute(&h, day(63));
        assert_eq!((g.frequency, g.cancellations, g.refunds), (2.0, 1.0, 2.0));
        assert_eq!(g.monetary_total, 240.0); // 100 + 300 - 60 - 100
    }

    #[test]
    fn missing_values_without_orders() {
        let h = ProfileHistory {
            events: vec![event(3, EventKind::PageViewed)],
            ..ProfileHistory::default()
        };
        let f = compute(&h, day(10));
        assert_eq!(f.frequency, 0.0);
        assert!(f.recency_days.is_nan() && f.monetary_avg.is_nan() && f.gap_mean_days.is_nan());
        assert!(f.first_order_days.is_nan() && f.gap_cv.is_nan());
        assert_eq!(f.tenure_days, 7.0);
        assert!(!f.has_ordered());
        let json = f.to_json();
        assert!(json["recency_days"].is_null());
        assert_eq!(json["tenure_days"], 7.0);
        assert_eq!(json.as_object().unwrap().len(), N_FEATURES);
        assert_eq!(
            Features::from_slice(&f.to_vec()).map(|g| g.to_vec().len()),
            Some(N_FEATURES)
        );
        assert!(Features::from_slice(&[1.0]).is_none());
    }

    #[test]
    fn outcome_counts_the_window_only() {
        let h = history();
        let o = outcome(&h, day(90), 30);
        assert_eq!(
            o,
            Outcome {
                orders: 1,
                spend: 200.0
            },
            "order 4 is cancelled"
        );
        assert!(!o.churned());
        assert!(outcome(&h, day(102), 30).churned());
    }

    #[test]
    fn past_spend_rate_baseline() {
        let f = Features {
            monetary_total: 600.0,
            tenure_days: 120.0,
            ..Features::default()
        };
        assert_eq!(past_spend_rate_forecast(&f, 90), 450.0);
        let young = Features {
            monetary_total: 60.0,
            tenure_days: 3.0,
            ..Features::default()
        };
        assert_eq!(
            past_spend_rate_forecast(&young, 90),
            180.0,
            "tenure floored at 30 days"
        );
    }
}
