//! The demo brand's two automations, created and enabled before the events are sent so
//! their results fill while the demo loads (reused by name on later runs):
//!
//! - **Abandoned checkout** (WhatsApp): a checkout with no order within the hour gets
//!   the cart reminder (free-form inside the 24-hour window, the template outside it);
//! - **Win-back** (WhatsApp, 20% control group): a customer who spent at least 2,000
//!   and whose churn label became `high` gets recommended products.
//!
//! Without a Twilio account configured the fleet sends to the local fake
//! (`ctl fake-twilio`, started by `ctl up`): nothing reaches WhatsApp.

use domain::automation::AutomationSpec;
use sqlx::PgPool;

/// The demo automations as JSON definitions.
pub fn specs() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({
            "name": "Abandoned checkout reminder",
            "description": "Checkout started, no order within the hour: remind them of the cart on WhatsApp.",
            "trigger": {"kind": "event", "event": {"type": "checkout_started"}},
            "wait": {"kind": "until_event", "event": {"type": "order_placed"}, "timeout_seconds": 3600},
            "actions": [{"kind": "whatsapp",
                         "body": "Hi {{first_name}}, you left {{cart_contents}} in your cart. Reply to finish your order!",
                         "content_sid": "HX5d3a9e0b1c2f4a6b8c7d9e0f1a2b3c4d",
                         "content_variables": {"1": "first_name", "2": "cart_contents"}}],
            "guardrails": {"quiet_hours": "hold", "max_sends_per_minute": 120, "conversion_window_hours": 72}
        }),
        serde_json::json!({
            "name": "Win-back of high churn risk",
            "description": "Churn risk became high for a customer worth keeping: suggest what they may like; 20% held out.",
            "trigger": {"kind": "churn_label_became", "label": "high"},
            "conditions": {"total_spent": {"op": "gte", "value": 2000}},
            "actions": [{"kind": "whatsapp",
                         "content_sid": "HX8f7e6d5c4b3a29180f7e6d5c4b3a2918",
                         "content_variables": {"1": "first_name", "2": "recommended_products"}}],
            "guardrails": {"quiet_hours": "hold", "control_percent": 20, "conversion_window_hours": 168}
        }),
    ]
}

/// Creates the demo automations that do not exist yet and enables them; returns their
/// names.
pub async fn ensure(db: &PgPool) -> anyhow::Result<Vec<String>> {
    let existing = journeys::store::page(db, None, 1000).await?;
    let mut names = Vec::new();
    for spec in specs() {
        let spec: AutomationSpec = serde_json::from_value(spec)?;
        let id = match existing.iter().find(|a| a.spec.name == spec.name) {
            Some(a) => a.id,
            None => journeys::store::create(db, &spec, "ctl demo").await?.id,
        };
        journeys::store::set_enabled(db, id, true).await?;
        names.push(spec.name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_automations_are_valid() {
        for spec in specs() {
            let spec: AutomationSpec = serde_json::from_value(spec).unwrap();
            spec.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        }
    }
}
