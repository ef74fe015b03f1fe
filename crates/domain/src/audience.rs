//! Audience rules: what makes a profile a member of a saved audience, as data.
//!
//! A [`Rule`] is a tree of AND / OR / NOT groups over what ConstIntel knows of a
//! profile: identifiers and traits present, order facts, channels, category affinity,
//! predictions, consent, behaviour (events in a time window, an event not followed by
//! another) and membership of other audiences. It travels as JSON (the API's and the
//! dashboard's shape), is checked by [`Rule::validate`], and is evaluated two ways that
//! must agree: compiled to one SQL query (crate `audiences`) for previews and full
//! recomputes, and by [`Rule::evaluate`] here over one profile's [`ProfileFacts`] for
//! live updates. Both read time as "as of" a given instant, truncated to microseconds
//! (Postgres's precision), so a profile is judged the same by either.
//!
//! Every leaf is two-valued: a fact the profile lacks (no order yet, no prediction)
//! makes its condition false, and `not` of it true, in SQL too (three-valued logic is
//! folded with `COALESCE(…, FALSE)` there).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::api::profiles::ChurnBand;
use crate::event::EventType;
use crate::identifier::IdentifierKind;
use crate::source::Channel;

/// Deepest nesting of groups a rule may have.
pub const MAX_DEPTH: usize = 8;
/// Most conditions (leaves) a rule may have.
pub const MAX_CONDITIONS: usize = 64;
/// Longest behaviour window, in days.
pub const MAX_WINDOW_DAYS: u32 = 3650;
/// Longest "not followed within" window, in hours.
pub const MAX_FOLLOW_HOURS: u32 = 24 * 90;
/// Longest text (category, trait key, property key, event name, segment) in a rule.
pub const MAX_TEXT_LEN: usize = 200;
/// Most property conditions on one event.
pub const MAX_PROPERTY_CONDITIONS: usize = 8;
/// Largest magnitude of a number an event property is compared with.
pub const MAX_PROPERTY_NUMBER: i64 = 1_000_000_000_000_000;

/// A condition over one profile; groups nest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Every rule holds (AND).
    All(Vec<Rule>),
    /// At least one rule holds (OR).
    Any(Vec<Rule>),
    /// The rule does not hold.
    Not(Box<Rule>),
    /// The profile holds an identifier of this kind (has an e-mail, a phone, ...).
    HasIdentifier(IdentifierKind),
    /// The profile holds a phone number and has talked to the brand on WhatsApp, so a
    /// WhatsApp message can reach it.
    WhatsappCapable,
    /// The profile has this trait, with a value other than `null`.
    HasTrait(String),
    /// Marketing consent on a channel: the trait `<channel>_marketing` is
    /// `"subscribed"` (Shopify's consent states; Segment and CSV traits use the same).
    Consent(ConsentChannel),
    /// Number of orders.
    OrdersCount(Compare<i64>),
    /// Total spent, in the profile's currency.
    TotalSpent(Compare<Decimal>),
    /// Average order value (total spent / orders); false without orders.
    AverageOrder(Compare<Decimal>),
    /// Days since the last order (only `gt`, `gte`, `lt`, `lte`); false without orders.
    LastOrderDaysAgo(Compare<u32>),
    /// Bought at least one item of this category.
    BoughtCategory(String),
    /// Was seen on this channel.
    UsedChannel(Channel),
    /// Category affinity (0–1, the Customer 360's) of at least `at_least`.
    CategoryAffinity(AffinityCondition),
    /// The segment the active segmentation gave the profile.
    Segment(String),
    /// Churn probability from the active churn model.
    ChurnScore(Compare<f64>),
    /// Churn-risk tier from the active churn model (`low`, `medium`, `high`).
    ChurnLabel(ChurnBand),
    /// Predicted lifetime value (spend over the model's horizon).
    PredictedLtv(Compare<f64>),
    /// Did an event at least N times in the last D days.
    Did(Behaviour),
    /// Did an event in the last D days and not another within H hours after it (an
    /// abandoned checkout: checkout started, no order within 1 hour). The H hours must
    /// have passed.
    DidWithout(Abandonment),
    /// Is a current member of another audience (no cycles).
    InAudience(Uuid),
}

/// A channel marketing consent is recorded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsentChannel {
    /// E-mail (`email_marketing`).
    Email,
    /// SMS (`sms_marketing`).
    Sms,
    /// WhatsApp (`whatsapp_marketing`).
    Whatsapp,
}

impl ConsentChannel {
    /// The trait that records the consent.
    pub fn trait_key(self) -> &'static str {
        match self {
            ConsentChannel::Email => "email_marketing",
            ConsentChannel::Sms => "sms_marketing",
            ConsentChannel::Whatsapp => "whatsapp_marketing",
        }
    }

    /// The trait value that means consent was given.
    pub const SUBSCRIBED: &'static str = "subscribed";
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
}

impl CmpOp {
    /// The SQL operator (a fixed token, never a value).
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
        }
    }

    /// Whether `left op right` holds.
    pub fn holds<T: PartialOrd>(self, left: &T, right: &T) -> bool {
        match self {
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
            CmpOp::Gt => left > right,
            CmpOp::Gte => left >= right,
            CmpOp::Lt => left < right,
            CmpOp::Lte => left <= right,
        }
    }

    fn ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

/// `<fact> <op> <value>`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare<T> {
    /// The operator.
    pub op: CmpOp,
    /// The value the fact is compared with.
    pub value: T,
}

/// Category affinity of at least a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityCondition {
    /// The category.
    pub category: String,
    /// Lowest affinity (0–1).
    pub at_least: f64,
}

/// Which events count: a type, optionally the source's own name for it, and conditions
/// on its properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMatch {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The source's name for the event (a Segment event name, a Shopify topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every condition must hold on the event's properties.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PropertyCondition>,
}

/// A condition on one event property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyCondition {
    /// The property's key (top level of the event's properties).
    pub key: String,
    /// How it is compared.
    pub op: PropertyOp,
    /// The value compared with: a string or boolean for `eq`/`ne`, a number for the
    /// ordering operators, absent for `exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// How an event property is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyOp {
    /// Present with exactly this string or boolean.
    Eq,
    /// Absent, or not this string or boolean.
    Ne,
    /// Present and not `null`.
    Exists,
    /// A number greater than the value.
    Gt,
    /// A number at least the value.
    Gte,
    /// A number less than the value.
    Lt,
    /// A number at most the value.
    Lte,
}

/// "Did EVENT at least N times in the last D days".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Which events count.
    pub event: EventMatch,
    /// Fewest matching events.
    #[serde(default = "one")]
    pub at_least: u32,
    /// The window: events after `as_of - within_days` and not after `as_of`.
    pub within_days: u32,
}

fn one() -> u32 {
    1
}

/// "Did EVENT in the last D days and not EVENT2 within H hours after it".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abandonment {
    /// The first event.
    pub event: EventMatch,
    /// The window the first event falls in, in days before `as_of`.
    pub within_days: u32,
    /// The event that must not follow.
    pub without: EventMatch,
    /// Hours after the first event in which the second must not happen (strictly after
    /// the first, at most this long after it).
    pub within_hours: u32,
}

/// What is wrong with a rule, and where (`all[2].did.at_least`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    /// Where in the rule.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Rule {
    /// Checks every bound: non-empty groups, nesting and size limits, windows, counts,
    /// finite numbers in range, texts, property conditions.
    pub fn validate(&self) -> Result<(), RuleError> {
        let mut leaves = 0;
        self.check("rule", 1, &mut leaves)?;
        if leaves > MAX_CONDITIONS {
            return Err(err(
                "rule",
                format!("has {leaves} conditions; at most {MAX_CONDITIONS}"),
            ));
        }
        Ok(())
    }

    fn check(&self, path: &str, depth: usize, leaves: &mut usize) -> Result<(), RuleError> {
        if depth > MAX_DEPTH {
            return Err(err(path, format!("nests deeper than {MAX_DEPTH} levels")));
        }
        match self {
            Rule::All(rules) | Rule::Any(rules) => {
                let name = if matches!(self, Rule::All(_)) {
                    "all"
                } else {
                    "any"
                };
                if rules.is_empty() {
                    return Err(err(path, format!("`{name}` needs at least one rule")));
                }
                for (i, r) in rules.iter().enumerate() {
                    r.check(&format!("{path}.{name}[{i}]"), depth + 1, leaves)?;
                }
                return Ok(());
            }
            Rule::Not(rule) => return rule.check(&format!("{path}.not"), depth + 1, leaves),
            _ => *leaves += 1,
        }
        match self {
            Rule::HasTrait(key) => text(&format!("{path}.has_trait"), key),
            Rule::OrdersCount(c) => non_negative(&format!("{path}.orders_count"), c.value),
            Rule::TotalSpent(c) | Rule::AverageOrder(c) => {
                let p = format!("{path}.{}", self.leaf_name());
                if c.value.is_sign_negative() {
                    Err(err(&p, "the amount cannot be negative"))
                } else if crate::order_write::amount_fits(c.value) {
                    Ok(())
                } else {
                    Err(err(&p, "the amount is larger than any order total"))
                }
            }
            Rule::LastOrderDaysAgo(c) => {
                let p = format!("{path}.last_order_days_ago");
                if !c.op.ordering() {
                    Err(err(&p, "compare days with gt, gte, lt or lte"))
                } else {
                    window_days(&p, c.value, 0)
                }
            }
            Rule::BoughtCategory(c) => text(&format!("{path}.bought_category"), c),
            Rule::CategoryAffinity(a) => {
                let p = format!("{path}.category_affinity");
                text(&format!("{p}.category"), &a.category)?;
                unit_interval(&format!("{p}.at_least"), a.at_least)
            }
            Rule::Segment(s) => text(&format!("{path}.segment"), s),
            Rule::ChurnScore(c) => unit_interval(&format!("{path}.churn_score"), c.value),
            Rule::PredictedLtv(c) => {
                let p = format!("{path}.predicted_ltv");
                if !c.value.is_finite() || c.value < 0.0 || c.value > 1e12 {
                    Err(err(&p, "must be a number from 0 to 1e12"))
                } else {
                    Ok(())
                }
            }
            Rule::Did(b) => {
                let p = format!("{path}.did");
                b.event.check(&format!("{p}.event"))?;
                if b.at_least == 0 || b.at_least > 1_000_000 {
                    return Err(err(&format!("{p}.at_least"), "must be from 1 to 1000000"));
                }
                window_days(&format!("{p}.within_days"), b.within_days, 1)
            }
            Rule::DidWithout(a) => {
                let p = format!("{path}.did_without");
                a.event.check(&format!("{p}.event"))?;
                a.without.check(&format!("{p}.without"))?;
                window_days(&format!("{p}.within_days"), a.within_days, 1)?;
                if a.within_hours == 0 || a.within_hours > MAX_FOLLOW_HOURS {
                    return Err(err(
                        &format!("{p}.within_hours"),
                        format!("must be from 1 to {MAX_FOLLOW_HOURS}"),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn leaf_name(&self) -> &'static str {
        match self {
            Rule::TotalSpent(_) => "total_spent",
            Rule::AverageOrder(_) => "average_order",
            _ => "rule",
        }
    }

    /// The audiences this rule refers to (directly, not through them).
    pub fn referenced_audiences(&self) -> BTreeSet<Uuid> {
        let mut out = BTreeSet::new();
        self.visit(&mut |r| {
            if let Rule::InAudience(id) = r {
                out.insert(*id);
            }
        });
        out
    }

    /// The event types the rule's behaviour conditions look at (what a single-profile
    /// evaluation needs loaded).
    pub fn event_types(&self) -> BTreeSet<EventType> {
        let mut out = BTreeSet::new();
        self.visit(&mut |r| match r {
            Rule::Did(b) => {
                out.insert(b.event.event_type);
            }
            Rule::DidWithout(a) => {
                out.insert(a.event.event_type);
                out.insert(a.without.event_type);
            }
            _ => {}
        });
        out
    }

    /// The longest window back from `as_of` a behaviour condition looks at (with the
    /// follow-up hours), in days rounded up; 0 without behaviour.
    pub fn lookback_days(&self) -> u32 {
        let mut days = 0;
        self.visit(&mut |r| match r {
            Rule::Did(b) => days = days.max(b.within_days),
            Rule::DidWithout(a) => days = days.max(a.within_days + a.within_hours.div_ceil(24)),
            _ => {}
        });
        days
    }

    fn visit(&self, f: &mut impl FnMut(&Rule)) {
        f(self);
        match self {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| r.visit(f)),
            Rule::Not(rule) => rule.visit(f),
            _ => {}
        }
    }

    /// Whether the profile described by `facts` is a member as of `as_of`.
    pub fn evaluate(&self, facts: &ProfileFacts, as_of: DateTime<Utc>) -> bool {
        let as_of = as_of_instant(as_of);
        self.eval(facts, as_of)
    }

    fn eval(&self, f: &ProfileFacts, as_of: DateTime<Utc>) -> bool {
        match self {
            Rule::All(rules) => rules.iter().all(|r| r.eval(f, as_of)),
            Rule::Any(rules) => rules.iter().any(|r| r.eval(f, as_of)),
            Rule::Not(rule) => !rule.eval(f, as_of),
            Rule::HasIdentifier(kind) => f.identifier_kinds.contains(kind),
            Rule::WhatsappCapable => {
                f.identifier_kinds.contains(&IdentifierKind::Phone)
                    && f.channels.contains(Channel::Whatsapp.as_str())
            }
            Rule::HasTrait(key) => f.traits.get(key).is_some_and(|v| !v.is_null()),
            Rule::Consent(channel) => {
                f.traits.get(channel.trait_key()).and_then(Value::as_str)
                    == Some(ConsentChannel::SUBSCRIBED)
            }
            Rule::OrdersCount(c) => c.op.holds(&f.orders_count, &c.value),
            Rule::TotalSpent(c) => c.op.holds(&f.total_spent, &c.value),
            Rule::AverageOrder(c) => {
                // total / count op value  ⇔  total op value × count (count > 0): exact in
                // both evaluators, no division rounding to disagree on.
                f.orders_count > 0
                    && c.op
                        .holds(&f.total_spent, &(c.value * Decimal::from(f.orders_count)))
            }
            Rule::LastOrderDaysAgo(c) => f.last_order_at.is_some_and(|at| {
                let (op, cutoff) = days_ago_cutoff(c, as_of);
                op.holds(&at, &cutoff)
            }),
            Rule::BoughtCategory(cat) => f.categories_bought.contains(cat),
            Rule::UsedChannel(ch) => f.channels.contains(ch.as_str()),
            Rule::CategoryAffinity(a) => f
                .category_affinity
                .get(&a.category)
                .is_some_and(|score| *score >= a.at_least),
            Rule::Segment(s) => f.segment.as_deref() == Some(s.as_str()),
            Rule::ChurnScore(c) => f.churn_score.is_some_and(|s| c.op.holds(&s, &c.value)),
            Rule::ChurnLabel(band) => f.churn_label.as_deref() == Some(band.as_str()),
            Rule::PredictedLtv(c) => f.predicted_ltv.is_some_and(|s| c.op.holds(&s, &c.value)),
            Rule::Did(b) => {
                let from = as_of - Duration::days(b.within_days.into());
                let n = f
                    .events
                    .iter()
                    .filter(|e| e.occurred_at > from && e.occurred_at <= as_of)
                    .filter(|e| b.event.matches(e))
                    .count();
                n >= b.at_least as usize
            }
            Rule::DidWithout(a) => {
                let from = as_of - Duration::days(a.within_days.into());
                let follow = Duration::hours(a.within_hours.into());
                f.events.iter().any(|first| {
                    first.occurred_at > from
                        && first.occurred_at <= as_of - follow
                        && a.event.matches(first)
                        && !f.events.iter().any(|then| {
                            then.occurred_at > first.occurred_at
                                && then.occurred_at <= first.occurred_at + follow
                                && a.without.matches(then)
                        })
                })
            }
            Rule::InAudience(id) => f.audiences.contains(id),
        }
    }
}

/// The instant rules are judged at: `as_of` truncated to Postgres's microseconds.
pub fn as_of_instant(as_of: DateTime<Utc>) -> DateTime<Utc> {
    as_of.trunc_subsecs(6)
}

/// `days_ago op d` as a comparison of the last order's time with `as_of - d days`
/// (more days ago = earlier).
pub fn days_ago_cutoff(c: &Compare<u32>, as_of: DateTime<Utc>) -> (CmpOp, DateTime<Utc>) {
    let cutoff = as_of - Duration::days(c.value.into());
    let op = match c.op {
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Gte => CmpOp::Lte,
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Lte => CmpOp::Gte,
        other => other,
    };
    (op, cutoff)
}

impl EventMatch {
    fn check(&self, path: &str) -> Result<(), RuleError> {
        if let Some(name) = &self.name {
            text(&format!("{path}.name"), name)?;
        }
        if self.conditions.len() > MAX_PROPERTY_CONDITIONS {
            return Err(err(
                &format!("{path}.where"),
                format!("at most {MAX_PROPERTY_CONDITIONS} property conditions"),
            ));
        }
        for (i, c) in self.conditions.iter().enumerate() {
            c.check(&format!("{path}.where[{i}]"))?;
        }
        Ok(())
    }

    /// Whether one event matches.
    pub fn matches(&self, e: &EventFact) -> bool {
        e.event_type == self.event_type
            && self
                .name
                .as_ref()
                .is_none_or(|n| e.name.as_deref() == Some(n.as_str()))
            && self.conditions.iter().all(|c| c.holds(&e.properties))
    }
}

impl PropertyCondition {
    fn check(&self, path: &str) -> Result<(), RuleError> {
        text(&format!("{path}.key"), &self.key)?;
        let value = format!("{path}.value");
        match (self.op, &self.value) {
            (PropertyOp::Exists, None) => Ok(()),
            (PropertyOp::Exists, Some(_)) => Err(err(&value, "`exists` takes no value")),
            (PropertyOp::Eq | PropertyOp::Ne, Some(Value::String(s))) => text(&value, s),
            (PropertyOp::Eq | PropertyOp::Ne, Some(Value::Bool(_))) => Ok(()),
            (PropertyOp::Eq | PropertyOp::Ne, _) => Err(err(
                &value,
                "`eq` and `ne` compare with a string or a boolean (numbers: gt, gte, lt, lte)",
            )),
            (_, Some(Value::Number(n))) => match number(n) {
                Some(x) if x.abs() <= Decimal::from(MAX_PROPERTY_NUMBER) => Ok(()),
                _ => Err(err(
                    &value,
                    format!(
                        "the number must be from -{MAX_PROPERTY_NUMBER} to {MAX_PROPERTY_NUMBER}"
                    ),
                )),
            },
            (_, _) => Err(err(&value, "gt, gte, lt and lte compare with a number")),
        }
    }

    /// The number an ordering condition compares with.
    pub fn number(&self) -> Option<Decimal> {
        match &self.value {
            Some(Value::Number(n)) => number(n),
            _ => None,
        }
    }

    /// Whether the condition holds on an event's properties.
    pub fn holds(&self, props: &Map<String, Value>) -> bool {
        let got = props.get(&self.key);
        match self.op {
            PropertyOp::Exists => got.is_some_and(|v| !v.is_null()),
            PropertyOp::Eq => got.is_some() && got == self.value.as_ref(),
            PropertyOp::Ne => got != self.value.as_ref(),
            op => {
                let (Some(Value::Number(n)), Some(want)) = (got, self.number()) else {
                    return false;
                };
                let Some(have) = number(n) else {
                    return false;
                };
                let cmp = match op {
                    PropertyOp::Gt => CmpOp::Gt,
                    PropertyOp::Gte => CmpOp::Gte,
                    PropertyOp::Lt => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                cmp.holds(&have, &want)
            }
        }
    }
}

/// A JSON number as an exact decimal (what Postgres's `numeric` reads it as).
fn number(n: &serde_json::Number) -> Option<Decimal> {
    let s = n.to_string();
    Decimal::from_str(&s)
        .ok()
        .or_else(|| Decimal::from_scientific(&s).ok())
}

/// One event of a profile, as behaviour conditions see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFact {
    /// The event type.
    pub event_type: EventType,
    /// The source's name for it.
    pub name: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Its properties.
    pub properties: Map<String, Value>,
}

/// What a rule can look at for one profile (the in-memory side of the evaluation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileFacts {
    /// Kinds of identifier the profile holds.
    pub identifier_kinds: BTreeSet<IdentifierKind>,
    /// Person traits.
    pub traits: Map<String, Value>,
    /// Number of orders.
    pub orders_count: i64,
    /// Total spent.
    pub total_spent: Decimal,
    /// When the last order was placed.
    pub last_order_at: Option<DateTime<Utc>>,
    /// Categories of the items of its orders.
    pub categories_bought: BTreeSet<String>,
    /// Channels it was seen on (as stored: channel names).
    pub channels: BTreeSet<String>,
    /// Category affinity scores.
    pub category_affinity: BTreeMap<String, f64>,
    /// Segment label.
    pub segment: Option<String>,
    /// Churn probability.
    pub churn_score: Option<f64>,
    /// Churn tier.
    pub churn_label: Option<String>,
    /// Predicted lifetime value.
    pub predicted_ltv: Option<f64>,
    /// Its events (of the types the rule looks at).
    pub events: Vec<EventFact>,
    /// Audiences it currently belongs to.
    pub audiences: BTreeSet<Uuid>,
}

fn err(path: &str, message: impl fmt::Display) -> RuleError {
    RuleError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn text(path: &str, s: &str) -> Result<(), RuleError> {
    if s.trim().is_empty() {
        Err(err(path, "cannot be empty"))
    } else if s.chars().count() > MAX_TEXT_LEN {
        Err(err(path, format!("longer than {MAX_TEXT_LEN} characters")))
    } else if s.contains('\0') {
        Err(err(path, "cannot contain U+0000"))
    } else {
        Ok(())
    }
}

fn non_negative(path: &str, n: i64) -> Result<(), RuleError> {
    if (0..=i64::from(i32::MAX)).contains(&n) {
        Ok(())
    } else {
        Err(err(path, format!("must be from 0 to {}", i32::MAX)))
    }
}

fn unit_interval(path: &str, x: f64) -> Result<(), RuleError> {
    if x.is_finite() && (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err(err(path, "must be a number from 0 to 1"))
    }
}

fn window_days(path: &str, days: u32, least: u32) -> Result<(), RuleError> {
    if (least..=MAX_WINDOW_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(err(
            path,
            format!("must be from {least} to {MAX_WINDOW_DAYS} days"),
        ))
    }
}

/// The OpenAPI schema of [`Rule`] (`AudienceRule`), written out by hand: serde's
/// externally tagged enum with every bound [`Rule::validate`] checks that a schema can
/// say. Nesting depth, the total number of conditions and the audiences referred to
/// (existing, no cycle) are checked by the server only.
#[cfg(feature = "openapi")]
mod openapi {
    use std::borrow::Cow;

    use serde_json::{Value, json};
    use utoipa::openapi::{RefOr, schema::Schema};

    use super::*;
    use crate::order_write::MAX_AMOUNT;

    fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> Value {
        Value::from(all.iter().map(|t| name(*t)).collect::<Vec<_>>())
    }

    fn text() -> Value {
        json!({"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LEN,
               "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"})
    }

    fn tagged(tag: &str, body: Value) -> Value {
        let mut properties = serde_json::Map::new();
        properties.insert(tag.to_owned(), body);
        json!({"type": "object", "additionalProperties": false, "required": [tag],
               "properties": properties})
    }

    fn compare(ops: &[&str], value: Value) -> Value {
        json!({"type": "object", "additionalProperties": false, "required": ["op", "value"],
               "properties": {"op": {"type": "string", "enum": ops}, "value": value}})
    }

    const ALL_OPS: [&str; 6] = ["eq", "ne", "gt", "gte", "lt", "lte"];

    fn event_match() -> Value {
        let key = text();
        let condition = json!({"oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["key", "op", "value"],
             "properties": {"key": key, "op": {"type": "string", "enum": ["eq", "ne"]},
                            "value": {"oneOf": [text(), {"type": "boolean"}]}}},
            {"type": "object", "additionalProperties": false, "required": ["key", "op"],
             "properties": {"key": key, "op": {"type": "string", "enum": ["exists"]}}},
            {"type": "object", "additionalProperties": false, "required": ["key", "op", "value"],
             "properties": {"key": key, "op": {"type": "string", "enum": ["gt", "gte", "lt", "lte"]},
                            "value": {"type": "number", "minimum": -MAX_PROPERTY_NUMBER,
                                      "maximum": MAX_PROPERTY_NUMBER}}},
        ]});
        json!({"type": "object", "additionalProperties": false, "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": names(&EventType::ALL, EventType::as_str)},
            // serde reads an explicit null as "no name", so the document allows it too.
            "name": {"anyOf": [text(), {"type": "null"}]},
            "where": {"type": "array", "maxItems": MAX_PROPERTY_CONDITIONS, "items": condition},
        }})
    }

    fn days(least: u32) -> Value {
        json!({"type": "integer", "minimum": least, "maximum": MAX_WINDOW_DAYS})
    }

    /// The schema as JSON.
    pub fn rule_schema() -> Value {
        let this = json!({"$ref": "#/components/schemas/AudienceRule"});
        let group =
            json!({"type": "array", "minItems": 1, "maxItems": MAX_CONDITIONS, "items": this});
        let money = json!({"type": "number", "minimum": 0, "maximum": MAX_AMOUNT.to_string().parse::<f64>().unwrap_or(1e12)});
        let unit = json!({"type": "number", "minimum": 0, "maximum": 1});
        json!({
            "description": "Who belongs to an audience: a condition, or `all` / `any` / `not` groups of them (at most 8 levels and 64 conditions). See docs/audiences.md.",
            "oneOf": [
                tagged("all", group.clone()),
                tagged("any", group),
                tagged("not", this),
                {"type": "string", "enum": ["whatsapp_capable"]},
                tagged("has_identifier", json!({"type": "string", "enum": names(&IdentifierKind::ALL, IdentifierKind::as_str)})),
                tagged("has_trait", text()),
                tagged("consent", json!({"type": "string", "enum": ["email", "sms", "whatsapp"]})),
                tagged("orders_count", compare(&ALL_OPS, json!({"type": "integer", "minimum": 0, "maximum": i32::MAX}))),
                tagged("total_spent", compare(&ALL_OPS, money.clone())),
                tagged("average_order", compare(&ALL_OPS, money)),
                tagged("last_order_days_ago", compare(&["gt", "gte", "lt", "lte"], days(0))),
                tagged("bought_category", text()),
                tagged("used_channel", json!({"type": "string", "enum": names(&Channel::ALL, Channel::as_str)})),
                tagged("category_affinity", json!({"type": "object", "additionalProperties": false,
                    "required": ["category", "at_least"],
                    "properties": {"category": text(), "at_least": unit}})),
                tagged("segment", text()),
                tagged("churn_score", compare(&ALL_OPS, unit)),
                tagged("churn_label", json!({"type": "string", "enum": ["low", "medium", "high"]})),
                tagged("predicted_ltv", compare(&ALL_OPS, json!({"type": "number", "minimum": 0, "maximum": 1e12}))),
                tagged("did", json!({"type": "object", "additionalProperties": false,
                    "required": ["event", "within_days"],
                    "properties": {"event": event_match(),
                                   "at_least": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                                   "within_days": days(1)}})),
                tagged("did_without", json!({"type": "object", "additionalProperties": false,
                    "required": ["event", "within_days", "without", "within_hours"],
                    "properties": {"event": event_match(), "within_days": days(1),
                                   "without": event_match(),
                                   "within_hours": {"type": "integer", "minimum": 1, "maximum": MAX_FOLLOW_HOURS}}})),
                tagged("in_audience", json!({"type": "string", "format": "uuid"})),
            ]
        })
    }

    impl utoipa::PartialSchema for Rule {
        fn schema() -> RefOr<Schema> {
            serde_json::from_value(rule_schema()).expect("the audience rule schema is valid")
        }
    }

    impl utoipa::ToSchema for Rule {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("AudienceRule")
        }
    }

    #[cfg(test)]
    mod tests {
        use utoipa::PartialSchema as _;

        use super::*;

        #[test]
        fn the_schema_survives_the_trip_through_utoipa_whole() {
            let served = serde_json::to_value(Rule::schema()).unwrap();
            let variants = served["oneOf"].as_array().expect("a oneOf of the variants");
            assert_eq!(variants.len(), 21);
            let did = variants
                .iter()
                .find(|v| v["required"][0] == "did")
                .expect("the did variant");
            assert_eq!(
                did["properties"]["did"]["properties"]["within_days"]["maximum"],
                MAX_WINDOW_DAYS
            );
            assert_eq!(
                did["properties"]["did"]["properties"]["event"]["properties"]["where"]["items"]["oneOf"]
                    .as_array()
                    .map(Vec::len),
                Some(3)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        serde_json::from_value(v).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_json_shape_reads_as_documented() {
        let r = rule(json!({"all": [
            {"has_identifier": "email"},
            "whatsapp_capable",
            {"consent": "whatsapp"},
            {"total_spent": {"op": "gte", "value": "1000.50"}},
            {"not": {"churn_label": "high"}},
            {"did": {"event": {"type": "product_viewed", "where": [
                {"key": "category", "op": "eq", "value": "shoes"}]}, "at_least": 3, "within_days": 30}},
            {"did_without": {"event": {"type": "checkout_started"}, "within_days": 7,
                "without": {"type": "order_placed"}, "within_hours": 1}},
        ]}));
        r.validate().unwrap();
        let back: Rule = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            r.event_types(),
            [
                EventType::ProductViewed,
                EventType::CheckoutStarted,
                EventType::OrderPlaced
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(r.lookback_days(), 30);
    }

    #[test]
    fn unknown_fields_and_conditions_are_refused() {
        assert!(serde_json::from_value::<Rule>(json!({"shoe_size": 42})).is_err());
        assert!(
            serde_json::from_value::<Rule>(
                json!({"did": {"event": {"type": "qr_scanned"}, "within_days": 3, "times": 2}})
            )
            .is_err()
        );
    }

    #[test]
    fn validation_names_the_place_and_the_problem() {
        let cases = [
            (json!({"all": []}), "rule: `all` needs at least one rule"),
            (
                json!({"any": [{"has_trait": "city"}, {"did": {"event": {"type": "qr_scanned"}, "at_least": 0, "within_days": 3}}]}),
                "rule.any[1].did.at_least: must be from 1 to 1000000",
            ),
            (
                json!({"not": {"churn_score": {"op": "gt", "value": 1.5}}}),
                "rule.not.churn_score: must be a number from 0 to 1",
            ),
            (
                json!({"last_order_days_ago": {"op": "eq", "value": 3}}),
                "rule.last_order_days_ago: compare days with gt, gte, lt or lte",
            ),
            (
                json!({"did_without": {"event": {"type": "checkout_started"}, "within_days": 7, "without": {"type": "order_placed"}, "within_hours": 0}}),
                "rule.did_without.within_hours: must be from 1 to 2160",
            ),
            (
                json!({"did": {"event": {"type": "page_viewed", "where": [{"key": "price", "op": "gt", "value": "x"}]}, "within_days": 3}}),
                "rule.did.event.where[0].value: gt, gte, lt and lte compare with a number",
            ),
            (
                json!({"did": {"event": {"type": "page_viewed", "where": [{"key": "n", "op": "eq", "value": 3}]}, "within_days": 3}}),
                "rule.did.event.where[0].value: `eq` and `ne` compare with a string or a boolean (numbers: gt, gte, lt, lte)",
            ),
            (
                json!({"bought_category": "  "}),
                "rule.bought_category: cannot be empty",
            ),
            (
                json!({"total_spent": {"op": "gte", "value": -1}}),
                "rule.total_spent: the amount cannot be negative",
            ),
        ];
        for (json, want) in cases {
            assert_eq!(rule(json).validate().unwrap_err().to_string(), want);
        }
        let mut deep = rule(json!({"has_trait": "city"}));
        for _ in 0..MAX_DEPTH {
            deep = Rule::Not(Box::new(deep));
        }
        assert!(deep.validate().unwrap_err().message.contains("deeper"));
        let wide = Rule::All(vec![Rule::WhatsappCapable; MAX_CONDITIONS + 1]);
        assert!(wide.validate().unwrap_err().message.contains("conditions"));
    }

    fn ev(t: EventType, at_: &str, props: Value) -> EventFact {
        EventFact {
            event_type: t,
            name: None,
            occurred_at: at(at_),
            properties: props.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn an_abandoned_checkout_counts_only_once_its_hour_has_passed_without_an_order() {
        let r = rule(
            json!({"did_without": {"event": {"type": "checkout_started"}, "within_days": 7,
            "without": {"type": "order_placed"}, "within_hours": 1}}),
        );
        let mut f = ProfileFacts {
            events: vec![ev(
                EventType::CheckoutStarted,
                "2026-12-01T10:00:00Z",
                json!({}),
            )],
            ..Default::default()
        };
        assert!(
            !r.evaluate(&f, at("2026-12-01T10:30:00Z")),
            "the hour is not over"
        );
        assert!(r.evaluate(&f, at("2026-12-01T11:00:00Z")));
        f.events.push(ev(
            EventType::OrderPlaced,
            "2026-12-01T10:40:00Z",
            json!({}),
        ));
        assert!(
            !r.evaluate(&f, at("2026-12-01T11:00:00Z")),
            "the order came"
        );
        assert!(
            !r.evaluate(&f, at("2026-12-09T11:00:00Z")),
            "out of the window"
        );
    }

    #[test]
    fn behaviour_counts_matching_events_in_the_window() {
        let r = rule(
            json!({"did": {"event": {"type": "product_viewed", "where": [
            {"key": "category", "op": "eq", "value": "shoes"},
            {"key": "price", "op": "gte", "value": 100}]}, "at_least": 2, "within_days": 30}}),
        );
        let f = ProfileFacts {
            events: vec![
                ev(
                    EventType::ProductViewed,
                    "2026-11-20T00:00:00Z",
                    json!({"category": "shoes", "price": 120}),
                ),
                ev(
                    EventType::ProductViewed,
                    "2026-11-21T00:00:00Z",
                    json!({"category": "shoes", "price": 99.5}),
                ),
                ev(
                    EventType::ProductViewed,
                    "2026-10-01T00:00:00Z",
                    json!({"category": "shoes", "price": 300}),
                ),
                ev(
                    EventType::ProductViewed,
                    "2026-11-22T00:00:00Z",
                    json!({"category": "shoes", "price": 100.0}),
                ),
            ],
            ..Default::default()
        };
        assert!(r.evaluate(&f, at("2026-12-01T00:00:00Z")));
        assert!(
            !r.evaluate(&f, at("2026-11-21T12:00:00Z")),
            "one in the window so far"
        );
    }

    #[test]
    fn facts_a_profile_lacks_make_a_condition_false_and_its_negation_true() {
        let f = ProfileFacts::default();
        for r in [
            json!({"last_order_days_ago": {"op": "gt", "value": 30}}),
            json!({"last_order_days_ago": {"op": "lte", "value": 30}}),
            json!({"average_order": {"op": "gte", "value": 0}}),
            json!({"churn_score": {"op": "lt", "value": 0.5}}),
            json!({"predicted_ltv": {"op": "gte", "value": 0}}),
        ] {
            let r = rule(r);
            assert!(!r.evaluate(&f, Utc::now()), "{r:?}");
            assert!(Rule::Not(Box::new(r)).evaluate(&f, Utc::now()));
        }
    }

    #[test]
    fn average_order_and_days_since_the_last_order() {
        let f = ProfileFacts {
            orders_count: 3,
            total_spent: Decimal::new(1000, 0),
            last_order_at: Some(at("2026-11-01T00:00:00Z")),
            ..Default::default()
        };
        let now = at("2026-12-01T00:00:00Z");
        assert!(rule(json!({"average_order": {"op": "gt", "value": "333.33"}})).evaluate(&f, now));
        assert!(
            !rule(json!({"average_order": {"op": "gte", "value": "333.34"}})).evaluate(&f, now)
        );
        assert!(rule(json!({"last_order_days_ago": {"op": "gte", "value": 30}})).evaluate(&f, now));
        assert!(!rule(json!({"last_order_days_ago": {"op": "gt", "value": 30}})).evaluate(&f, now));
        assert!(rule(json!({"last_order_days_ago": {"op": "lt", "value": 31}})).evaluate(&f, now));
    }
}
