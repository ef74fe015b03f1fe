//! The demo brand's audiences: two saved audiences (reused by name on later runs),
//! recomputed once the models have scored everyone, so their members show at once.

use anyhow::Context as _;
use audiences::store;
use chrono::Utc;
use domain::api::AudienceRequest;
use sqlx::PgPool;

/// (name, description, rule JSON) of each demo audience.
pub const DEMO_AUDIENCES: [(&str, &str, &str); 2] = [
    (
        "Abandoned checkout",
        "Started a checkout in the last 7 days and placed no order within the hour after it.",
        r#"{"did_without": {"event": {"type": "checkout_started"}, "within_days": 7, "without": {"type": "order_placed"}, "within_hours": 1}}"#,
    ),
    (
        "High churn risk, worth winning back",
        "Customers the churn model rates high-risk who have spent at least 2,000.",
        r#"{"all": [{"churn_label": "high"}, {"total_spent": {"op": "gte", "value": 2000}}]}"#,
    ),
];

/// Creates the demo audiences that do not exist yet and recomputes every audience;
/// returns each demo audience's name and size.
pub async fn ensure(db: &PgPool) -> anyhow::Result<Vec<(String, i64)>> {
    let existing = store::list(db).await?;
    for (name, description, rule) in DEMO_AUDIENCES {
        if existing.iter().any(|a| a.name == name) {
            continue;
        }
        let request = AudienceRequest {
            name: name.to_owned(),
            description: description.to_owned(),
            rule: serde_json::from_str(rule).with_context(|| format!("the demo rule of {name}"))?,
        };
        store::create(db, &request, "ctl demo").await?;
    }
    store::recompute_all(db, Utc::now()).await?;
    Ok(store::list(db)
        .await?
        .into_iter()
        .filter(|a| DEMO_AUDIENCES.iter().any(|(n, _, _)| *n == a.name))
        .map(|a| (a.name, a.member_count))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_rules_are_valid() {
        for (name, _, rule) in DEMO_AUDIENCES {
            let rule: domain::audience::Rule = serde_json::from_str(rule).unwrap();
            rule.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
