//! Audiences: the saved audiences with their size, a builder that shows the rule's
//! live size while it is edited, and per audience its members (paged) and the CSV
//! export.
//!
//! The builder edits the rule as JSON (the API's shape, docs/audiences.md) with
//! one-click conditions to start from; every edit asks `POST /audiences/preview` (after
//! a short pause) and shows the size, a few members, or the server's reason the rule is
//! wrong, with the place in the rule. Saving is for analysts and admins, the export for
//! admins.

use std::time::Duration;

use domain::api::{
    AudienceMemberView, AudiencePreview, AudiencePreviewRequest, AudienceRequest, AudienceView,
    Page, Role,
};
use domain::audience::Rule;
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map};

use super::{href, query_param};
use crate::api::{self, ApiError};
use crate::format;
use crate::session::use_session;
use crate::widgets::{Empty, ErrorNotice, Kpi, Pager, loaded};

/// Conditions the builder offers to start from: (label, rule JSON).
pub const STARTERS: [(&str, &str); 6] = [
    (
        "Big spenders on WhatsApp",
        r#"{"all": [{"total_spent": {"op": "gte", "value": 5000}}, "whatsapp_capable", {"consent": "whatsapp"}]}"#,
    ),
    ("High churn risk", r#"{"churn_label": "high"}"#),
    (
        "Abandoned checkout (1 h, last 7 days)",
        r#"{"did_without": {"event": {"type": "checkout_started"}, "within_days": 7, "without": {"type": "order_placed"}, "within_hours": 1}}"#,
    ),
    (
        "Browsed a lot, never bought",
        r#"{"all": [{"did": {"event": {"type": "product_viewed"}, "at_least": 3, "within_days": 30}}, {"orders_count": {"op": "eq", "value": 0}}]}"#,
    ),
    (
        "Lapsed buyers (no order for 90 days)",
        r#"{"last_order_days_ago": {"op": "gt", "value": 90}}"#,
    ),
    ("Has an e-mail", r#"{"has_identifier": "email"}"#),
];

/// The rule typed so far, read as a rule: the JSON parser's complaint otherwise.
pub fn parse_rule(text: &str) -> Result<Rule, String> {
    serde_json::from_str::<Rule>(text).map_err(|e| format!("Not a rule yet: {e}"))
}

/// The Audiences page (`/audiences`): the list and the builder.
#[component]
pub fn Audiences() -> impl IntoView {
    let session = use_session();
    let cursor = query_param("cursor");
    let list = LocalResource::new(move || {
        let c = cursor.get();
        async move { api::get::<Page<AudienceView>>(&href("/audiences", &[("cursor", c)])).await }
    });
    let building = RwSignal::new(false);
    let now = format::now();
    view! {
        <div class="page-head">
            <div>
                <h1>"Audiences"</h1>
                <p class="sub">"Saved groups of customers, kept up to date as they act."</p>
            </div>
            <Show when=move || session.can(Role::Analyst) && !building.get()>
                <button type="button" class="button" on:click=move |_| building.set(true)>
                    "New audience"
                </button>
            </Show>
        </div>
        <Show when=move || building.get()>
            <AudienceBuilder on_saved=move || { building.set(false); list.refetch(); } on_cancel=move || building.set(false)/>
        </Show>
        {loaded(list, move |page: Page<AudienceView>| {
            if page.items.is_empty() {
                return view! {
                    <Empty
                        title="No audiences yet"
                        hint="An audience is a rule over what ConstIntel knows of each customer: orders, channels, predictions, consent and behaviour. Its members stay current by themselves.".into()
                    />
                }.into_any();
            }
            let next_href = page.next_cursor.clone().map(|c| href("/audiences", &[("cursor", Some(c))]));
            view! {
                <div class="card table-wrap">
                    <table class="table" data-testid="audiences">
                        <thead>
                            <tr>
                                <th>"Name"</th>
                                <th>"Members"</th>
                                <th class="hide-phone">"Description"</th>
                                <th>"Recomputed"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {page.items.into_iter().map(|a| view! {
                                <tr>
                                    <td><a href=format!("/audiences/{}", a.id)>{a.name.clone()}</a></td>
                                    <td data-testid="member-count">{format::count(a.member_count)}</td>
                                    <td class="hide-phone">{a.description.clone()}</td>
                                    <td>{a.recomputed_at.map(|t| format::ago(t, now)).unwrap_or_else(|| "not yet".into())}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page=cursor.get().is_some() first_href="/audiences".into() next_href/>
                </div>
            }.into_any()
        })}
    }
}

/// The builder: name, description, the rule with its live size, save.
#[component]
fn AudienceBuilder(
    on_saved: impl Fn() + Copy + Send + Sync + 'static,
    on_cancel: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let description = RwSignal::new(String::new());
    let rule_text = RwSignal::new(STARTERS[0].1.to_owned());
    let preview = RwSignal::new(None::<Result<AudiencePreview, String>>);
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    // Each edit bumps the generation; a preview answers only if no newer edit came.
    let generation = RwSignal::new(0u64);

    Effect::new(move |_| {
        let text = rule_text.get();
        let mine = generation.get_untracked() + 1;
        generation.set(mine);
        leptos::task::spawn_local(async move {
            gloo_timers::future::sleep(Duration::from_millis(300)).await;
            if generation.get_untracked() != mine {
                return;
            }
            let result = match parse_rule(&text) {
                Err(e) => Err(e),
                Ok(rule) => api::post::<_, AudiencePreview>(
                    "/audiences/preview",
                    &AudiencePreviewRequest { rule },
                )
                .await
                .map_err(|e| e.to_string()),
            };
            if generation.get_untracked() == mine {
                preview.set(Some(result));
            }
        });
    });

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let rule = match parse_rule(&rule_text.get_untracked()) {
            Ok(rule) => rule,
            Err(message) => {
                error.set(Some(ApiError::Status {
                    status: 400,
                    code: "invalid_rule".into(),
                    message,
                }));
                return;
            }
        };
        let body = AudienceRequest {
            name: name.get_untracked().trim().to_owned(),
            description: description.get_untracked().trim().to_owned(),
            rule,
        };
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::post::<_, AudienceView>("/audiences", &body).await {
                Ok(_) => on_saved(),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };

    view! {
        <form class="card stack" on:submit=submit data-testid="audience-builder">
            <h2>"New audience"</h2>
            <div class="filters">
                <label class="search">
                    "Name"
                    <input type="text" required maxlength="200" placeholder="e.g. Cart abandoners" bind:value=name/>
                </label>
                <label class="search">
                    "Description"
                    <input type="text" maxlength="2000" placeholder="What it is for" bind:value=description/>
                </label>
            </div>
            <div class="row">
                <small>"Start from:"</small>
                {STARTERS.into_iter().map(|(label, json)| view! {
                    <button type="button" class="button small ghost" on:click=move |_| rule_text.set(json.to_owned())>{label}</button>
                }).collect_view()}
            </div>
            <label>
                "Rule (JSON: conditions and all / any / not groups — see the API documentation)"
                <textarea rows="8" class="mono" spellcheck="false" data-testid="rule" bind:value=rule_text></textarea>
            </label>
            <div data-testid="live-size" aria-live="polite">
                {move || match preview.get() {
                    None => view! { <span class="muted">"Sizing…"</span> }.into_any(),
                    Some(Err(message)) => view! { <p class="notice warn" data-testid="rule-problem">{message}</p> }.into_any(),
                    Some(Ok(p)) => view! {
                        <div class="row">
                            <Kpi label="Matching now" value=format::count(p.size) hint=format!("counted in {} ms", p.elapsed_ms) name="audience-size"/>
                            <ul class="plain">
                                {p.sample.into_iter().map(|m| view! {
                                    <li><a href=format!("/profiles/{}", m.profile_id)>{m.display_name.unwrap_or_else(|| m.profile_id.to_string())}</a></li>
                                }).collect_view()}
                            </ul>
                        </div>
                    }.into_any(),
                }}
            </div>
            {move || error.get().map(|error| view! { <ErrorNotice error/> })}
            <div class="row">
                <button type="submit" class="button" disabled=move || busy.get()>"Save audience"</button>
                <button type="button" class="button ghost" on:click=move |_| on_cancel()>"Cancel"</button>
            </div>
        </form>
    }
}

/// One audience (`/audiences/:id`): its rule, members and export.
#[component]
pub fn AudienceDetail() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id")).unwrap_or_default());
    let audience = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<AudienceView>(&format!("/audiences/{id}")).await }
    });
    let cursor = query_param("cursor");
    let members = LocalResource::new(move || {
        let id = id.get();
        let c = cursor.get();
        async move {
            api::get::<Page<AudienceMemberView>>(&href(
                &format!("/audiences/{id}/members"),
                &[("cursor", c)],
            ))
            .await
        }
    });
    let error = RwSignal::new(None::<ApiError>);
    let delete = move |_| {
        let id = id.get_untracked();
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/audiences/{id}")).await {
                Ok(()) => navigate("/audiences", Default::default()),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let export_href = move || api::url(&format!("/audiences/{}/export", id.get()));
    view! {
        {loaded(audience, move |a: AudienceView| {
            let rule = serde_json::to_string_pretty(&a.rule).unwrap_or_default();
            view! {
                <div class="page-head">
                    <div>
                        <h1>{a.name.clone()}</h1>
                        <p class="sub">{a.description.clone()}</p>
                    </div>
                </div>
                <div class="kpis">
                    <Kpi label="Members" value=format::count(a.member_count) hint=format!("recomputed {}", format::maybe_datetime(a.recomputed_at)) name="members"/>
                </div>
                <details class="card"><summary>"Rule"</summary><pre class="json">{rule}</pre></details>
            }
        })}
        <div class="row">
            // The frame shows pages only once the session is known: checked once.
            {session.can(Role::Admin).then(|| view! {
                <a class="button ghost" href=export_href download="" data-testid="export">"Export CSV"</a>
            })}
            {session.can(Role::Analyst).then(|| view! {
                <button type="button" class="button ghost danger" on:click=delete>"Delete audience"</button>
            })}
        </div>
        {move || error.get().map(|error| view! { <ErrorNotice error/> })}
        {loaded(members, move |page: Page<AudienceMemberView>| {
            if page.items.is_empty() {
                return view! { <Empty title="No members right now" hint="Members join as soon as they match the rule.".into()/> }.into_any();
            }
            let base = format!("/audiences/{}", id.get_untracked());
            let next_href = page.next_cursor.clone().map(|c| href(&base, &[("cursor", Some(c))]));
            view! {
                <div class="card table-wrap">
                    <table class="table" data-testid="audience-members">
                        <thead><tr><th>"Customer"</th><th>"Member since"</th></tr></thead>
                        <tbody>
                            {page.items.into_iter().map(|m| view! {
                                <tr>
                                    <td><a href=format!("/profiles/{}", m.profile_id)>{m.display_name.clone().unwrap_or_else(|| m.profile_id.to_string())}</a></td>
                                    <td>{format::datetime(m.entered_at)}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page=cursor.get().is_some() first_href=base next_href/>
                </div>
            }.into_any()
        })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_starter_is_a_valid_rule() {
        for (label, json) in STARTERS {
            let rule = parse_rule(json).unwrap_or_else(|e| panic!("{label}: {e}"));
            rule.validate().unwrap_or_else(|e| panic!("{label}: {e}"));
        }
        assert!(
            parse_rule("{\"all\": [")
                .unwrap_err()
                .starts_with("Not a rule yet")
        );
    }
}
