//! A rule compiled to SQL: one boolean expression over a live profile `p`
//! (`customer_profile`), built with [`QueryBuilder`] so every value the rule holds is a
//! bound parameter and only fixed tokens (column names, operators) are written into
//! the text.
//!
//! Each leaf is two-valued (`COALESCE(…, FALSE)`, `CASE … ELSE FALSE`, and
//! `p.id IN (…)` over a set without NULLs), so `NOT` means what it means to
//! `domain::audience::Rule::evaluate`: a missing fact makes a condition false and its
//! negation true. Conditions on other tables are uncorrelated sets of profile ids
//! (`p.id IN (SELECT profile_id …)`), which Postgres computes once and hashes, also
//! under `OR` and `NOT`, instead of probing per profile. Times are bound as instants computed from
//! `as_of` in Rust, exactly as the in-memory evaluator computes them.

use chrono::{DateTime, Duration, Utc};
use domain::audience::{
    CmpOp, EventMatch, PropertyCondition, PropertyOp, Rule, as_of_instant, days_ago_cutoff,
};
use domain::{Channel, IdentifierKind};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};

/// `SELECT p.id FROM customer_profile p WHERE <live> AND (<rule>)`: the members as of
/// `as_of`.
pub fn members(rule: &Rule, as_of: DateTime<Utc>) -> QueryBuilder<'static, Postgres> {
    let mut qb = QueryBuilder::new("");
    push_members(&mut qb, rule, as_of);
    qb
}

/// Appends the members query (see [`members`]) to `qb`, for use inside a larger
/// statement.
pub fn push_members(qb: &mut QueryBuilder<'static, Postgres>, rule: &Rule, as_of: DateTime<Utc>) {
    qb.push("SELECT p.id FROM customer_profile p WHERE p.merged_into IS NULL AND ");
    push_rule(qb, rule, as_of);
}

/// Appends the rule as a boolean SQL expression over the profile aliased `p`.
pub fn push_rule(qb: &mut QueryBuilder<'static, Postgres>, rule: &Rule, as_of: DateTime<Utc>) {
    let as_of = as_of_instant(as_of);
    Compiler { qb, as_of }.rule(rule);
}

struct Compiler<'q> {
    qb: &'q mut QueryBuilder<'static, Postgres>,
    as_of: DateTime<Utc>,
}

impl Compiler<'_> {
    fn rule(&mut self, rule: &Rule) {
        match rule {
            Rule::All(rules) => self.group(rules, " AND "),
            Rule::Any(rules) => self.group(rules, " OR "),
            Rule::Not(rule) => {
                self.qb.push("(NOT ");
                self.rule(rule);
                self.qb.push(")");
            }
            Rule::HasIdentifier(kind) => self.has_identifier(*kind),
            Rule::WhatsappCapable => {
                self.qb.push("(");
                self.has_identifier(IdentifierKind::Phone);
                self.qb.push(" AND ");
                self.used_channel(Channel::Whatsapp);
                self.qb.push(")");
            }
            Rule::HasTrait(key) => {
                self.qb
                    .push("COALESCE(jsonb_typeof(p.traits -> ")
                    .push_bind(key.clone())
                    .push(") <> 'null', FALSE)");
            }
            Rule::Consent(channel) => {
                self.qb
                    .push("COALESCE(p.traits ->> ")
                    .push_bind(channel.trait_key())
                    .push(" = ")
                    .push_bind(domain::audience::ConsentChannel::SUBSCRIBED)
                    .push(", FALSE)");
            }
            Rule::OrdersCount(c) => {
                self.qb
                    .push(format!("(p.orders_count {} ", c.op.sql()))
                    .push_bind(c.value)
                    .push(")");
            }
            Rule::TotalSpent(c) => {
                self.qb
                    .push(format!("(p.total_spent {} ", c.op.sql()))
                    .push_bind(c.value)
                    .push(")");
            }
            Rule::AverageOrder(c) => {
                // total / count op value ⇔ total op value × count (count > 0): exact.
                self.qb
                    .push(format!(
                        "(p.orders_count > 0 AND p.total_spent {} ",
                        c.op.sql()
                    ))
                    .push_bind(c.value)
                    .push(" * p.orders_count)");
            }
            Rule::LastOrderDaysAgo(c) => {
                let (op, cutoff) = days_ago_cutoff(c, self.as_of);
                self.qb
                    .push(format!("COALESCE(p.last_order_at {} ", op.sql()))
                    .push_bind(cutoff)
                    .push(", FALSE)");
            }
            Rule::BoughtCategory(category) => {
                self.qb
                    .push(
                        "p.id IN (SELECT o.profile_id FROM orders o JOIN order_items i ON i.order_id = o.id \
                         WHERE o.profile_id IS NOT NULL AND i.category = ",
                    )
                    .push_bind(category.clone())
                    .push(")");
            }
            Rule::UsedChannel(channel) => self.used_channel(*channel),
            Rule::CategoryAffinity(a) => {
                self.qb
                    .push("CASE WHEN jsonb_typeof(p.category_affinity -> ")
                    .push_bind(a.category.clone())
                    .push(") = 'number' THEN (p.category_affinity ->> ")
                    .push_bind(a.category.clone())
                    .push(")::float8 >= ")
                    .push_bind(a.at_least)
                    .push(" ELSE FALSE END");
            }
            Rule::Segment(segment) => self.prediction("segment", "pr.label = ", segment.clone()),
            Rule::ChurnLabel(band) => self.prediction("churn", "pr.label = ", band.as_str()),
            Rule::ChurnScore(c) => self.score("churn", c.op, c.value),
            Rule::PredictedLtv(c) => self.score("ltv", c.op, c.value),
            Rule::Did(b) => {
                let from = self.as_of - Duration::days(b.within_days.into());
                self.qb
                    .push(
                        "p.id IN (SELECT e.profile_id FROM normalized_event e \
                         WHERE e.profile_id IS NOT NULL AND e.occurred_at > ",
                    )
                    .push_bind(from)
                    .push(" AND e.occurred_at <= ")
                    .push_bind(self.as_of);
                self.event_match("e", &b.event);
                if b.at_least > 1 {
                    self.qb
                        .push(" GROUP BY e.profile_id HAVING count(*) >= ")
                        .push_bind(i64::from(b.at_least));
                }
                self.qb.push(")");
            }
            Rule::DidWithout(a) => {
                let from = self.as_of - Duration::days(a.within_days.into());
                let last = self.as_of - Duration::hours(a.within_hours.into());
                self.qb
                    .push(
                        "p.id IN (SELECT e.profile_id FROM normalized_event e \
                         WHERE e.profile_id IS NOT NULL AND e.occurred_at > ",
                    )
                    .push_bind(from)
                    .push(" AND e.occurred_at <= ")
                    .push_bind(last);
                self.event_match("e", &a.event);
                self.qb.push(
                    " AND NOT EXISTS (SELECT 1 FROM normalized_event f WHERE f.profile_id = e.profile_id \
                     AND f.occurred_at > e.occurred_at \
                     AND f.occurred_at <= e.occurred_at + make_interval(hours => ",
                );
                self.qb
                    .push_bind(i32::try_from(a.within_hours).unwrap_or(i32::MAX))
                    .push(")");
                self.event_match("f", &a.without);
                self.qb.push("))");
            }
            Rule::InAudience(id) => {
                self.qb
                    .push(
                        "p.id IN (SELECT am.profile_id FROM audience_membership am \
                         WHERE am.current AND am.audience_id = ",
                    )
                    .push_bind(*id)
                    .push(")");
            }
        }
    }

    fn group(&mut self, rules: &[Rule], joiner: &str) {
        self.qb.push("(");
        for (i, r) in rules.iter().enumerate() {
            if i > 0 {
                self.qb.push(joiner);
            }
            self.rule(r);
        }
        self.qb.push(")");
    }

    fn has_identifier(&mut self, kind: IdentifierKind) {
        // Containment of a partial element: served by the GIN (jsonb_path_ops) index.
        self.qb
            .push("(p.identifiers @> ")
            .push_bind(Json(serde_json::json!([{ "kind": kind.as_str() }])))
            .push(")");
    }

    fn used_channel(&mut self, channel: Channel) {
        self.qb
            .push("(")
            .push_bind(channel.as_str())
            .push(" = ANY (p.channels))");
    }

    fn prediction<T>(&mut self, task: &'static str, test: &str, value: T)
    where
        T: 'static + sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send,
    {
        self.qb
            .push("p.id IN (SELECT pr.profile_id FROM predictions pr WHERE pr.task = ")
            .push_bind(task)
            .push(" AND ")
            .push(test)
            .push_bind(value)
            .push(")");
    }

    fn score(&mut self, task: &'static str, op: CmpOp, value: f64) {
        self.prediction(task, &format!("pr.score {} ", op.sql()), value);
    }

    /// ` AND <alias> matches the event` (type, name, property conditions).
    fn event_match(&mut self, alias: &str, m: &EventMatch) {
        self.qb
            .push(format!(" AND {alias}.type = "))
            .push_bind(m.event_type.as_str());
        if let Some(name) = &m.name {
            self.qb
                .push(format!(" AND {alias}.name = "))
                .push_bind(name.clone());
        }
        for c in &m.conditions {
            self.qb.push(" AND ");
            self.property(alias, c);
        }
    }

    fn property(&mut self, alias: &str, c: &PropertyCondition) {
        let key = c.key.clone();
        match c.op {
            PropertyOp::Exists => {
                self.qb
                    .push(format!("COALESCE(jsonb_typeof({alias}.properties -> "))
                    .push_bind(key)
                    .push(") <> 'null', FALSE)");
            }
            PropertyOp::Eq | PropertyOp::Ne => {
                if c.op == PropertyOp::Ne {
                    self.qb.push("NOT ");
                }
                self.qb
                    .push(format!("COALESCE({alias}.properties -> "))
                    .push_bind(key)
                    .push(" = ")
                    .push_bind(Json(c.value.clone().unwrap_or(serde_json::Value::Null)))
                    .push(", FALSE)");
            }
            op => {
                let cmp = match op {
                    PropertyOp::Gt => CmpOp::Gt,
                    PropertyOp::Gte => CmpOp::Gte,
                    PropertyOp::Lt => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                self.qb
                    .push(format!("CASE WHEN jsonb_typeof({alias}.properties -> "))
                    .push_bind(key.clone())
                    .push(format!(") = 'number' THEN ({alias}.properties ->> "))
                    .push_bind(key)
                    .push(format!(")::numeric {} ", cmp.sql()))
                    .push_bind(c.number())
                    .push(" ELSE FALSE END");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_written_into_the_text() {
        let rule: Rule = serde_json::from_value(serde_json::json!({"all": [
            {"bought_category": "x'); DROP TABLE orders; --"},
            {"did": {"event": {"type": "custom", "name": "O'Brien", "where": [
                {"key": "a'b", "op": "eq", "value": "c'd"}]}, "within_days": 3}},
            {"segment": "vip'"},
        ]}))
        .unwrap();
        let qb = members(&rule, Utc::now());
        let sql = qb.sql();
        for value in ["DROP", "O'Brien", "a'b", "c'd", "vip'"] {
            assert!(!sql.contains(value), "{value} in {sql}");
        }
    }
}
