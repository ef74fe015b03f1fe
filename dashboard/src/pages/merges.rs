//! Merges: the merge log — every merge the identity merger made, automatic or by
//! hand, with the rule and the identifiers that matched — filtered by rule, profile and
//! period, with Unmerge for analysts and admins. The review queue is its sibling tab
//! ([`super::reviews`]).

use chrono::Duration;
use domain::Identifier;
use domain::api::{MergeLogEntry, MergeLogQuery, MergeRule, Page, Role};
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use uuid_js::Uuid;

use super::customer360::MergeRow;
use super::href;
use crate::api;
use crate::format;
use crate::session::use_session;
use crate::widgets::{Empty, Pager, loaded};

/// The tabs shared by the merge log and the review queue.
#[component]
pub fn MergeTabs() -> impl IntoView {
    let location = leptos_router::hooks::use_location();
    let current = move |p: &'static str| (location.pathname.get() == p).then_some("page");
    view! {
        <nav class="tabs">
            <a href="/merges" aria-current=move || current("/merges")>"Merge log"</a>
            <a href="/merges/review" aria-current=move || current("/merges/review")>"Review queue"</a>
        </nav>
    }
}

/// The matched identifiers of a merge as `kind: value` lines.
pub fn matched_lines(matched: &[Identifier]) -> Vec<String> {
    matched
        .iter()
        .map(|i| format!("{}: {}", format::identifier_kind(i.kind), i.value))
        .collect()
}

/// The merge log page (`/merges`).
#[component]
pub fn MergeLog() -> impl IntoView {
    let session = use_session();
    let query = use_query_map();
    let navigate = use_navigate();
    let get = move |k: &str| query.with(|q| q.get(k)).filter(|v| !v.is_empty());
    let merges = LocalResource::new(move || {
        let now = format::now();
        let q = MergeLogQuery {
            rule: get("rule").and_then(|r| r.parse::<MergeRule>().ok()),
            profile_id: get("profile_id").and_then(|p| Uuid::parse_str(p.trim()).ok()),
            from: get("period").map(|p| now - Duration::days(format::period_days(&p))),
            cursor: get("cursor"),
            ..Default::default()
        };
        async move { api::get::<Page<MergeLogEntry>>(&api::with_query("/merges", &q)).await }
    });
    let rule = RwSignal::new(get("rule").unwrap_or_default());
    let profile = RwSignal::new(get("profile_id").unwrap_or_default());
    let period = RwSignal::new(get("period").unwrap_or_default());
    let url_for = move |cursor: Option<String>| {
        href(
            "/merges",
            &[
                ("rule", Some(rule.get_untracked())),
                ("profile_id", Some(profile.get_untracked())),
                ("period", Some(period.get_untracked())),
                ("cursor", cursor),
            ],
        )
    };
    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        navigate(&url_for(None), Default::default());
    };

    view! {
        <div class="page-head">
            <div>
                <h1>"Merges"</h1>
                <p class="sub">"Every time two or more profiles were found to be one person."</p>
            </div>
        </div>
        <MergeTabs/>
        <form class="filters" on:submit=apply>
            <label>
                "Rule"
                <select bind:value=rule>
                    <option value="">"Any rule"</option>
                    {MergeRule::ALL.into_iter().map(|r| view! { <option value=r.as_str()>{format::humanize(r.as_str())}</option> }).collect_view()}
                </select>
            </label>
            <label class="search">
                "Profile id"
                <input type="text" placeholder="Survivor or absorbed profile" bind:value=profile/>
            </label>
            <label>
                "Period"
                <select bind:value=period>
                    <option value="">"Any time"</option>
                    {format::PERIODS.into_iter().map(|(v, l, _)| view! { <option value=v>{l}</option> }).collect_view()}
                </select>
            </label>
            <button type="submit" class="button">"Apply"</button>
        </form>
        {loaded(merges, move |page: Page<MergeLogEntry>| {
            if page.items.is_empty() {
                return view! {
                    <Empty
                        title="No merges here"
                        hint="Merges happen when events from different sources share a phone, e-mail or customer id. Loosen the filters, or check the review queue for merges waiting for a decision.".into()
                    >
                        <a class="button ghost" href="/merges/review">"Open the review queue"</a>
                    </Empty>
                }.into_any();
            }
            let next_href = page.next_cursor.clone().map(|c| url_for(Some(c)));
            let on_later_page = get("cursor").is_some();
            view! {
                <div class="card table-wrap">
                    <table class="table" data-testid="merge-log">
                        <thead>
                            <tr>
                                <th>"When"</th>
                                <th>"Rule"</th>
                                <th>"Survivor"</th>
                                <th>"Absorbed"</th>
                                <th class="hide-phone">"Matched on"</th>
                                <th></th>
                            </tr>
                        </thead>
                        <tbody>
                            {page.items.into_iter().map(|m| view! {
                                <MergeRow m detailed=true can_unmerge=session.can(Role::Analyst) on_done=move || merges.refetch()/>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page first_href=url_for(None) next_href/>
                </div>
            }.into_any()
        })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matched_identifiers_read_as_lines() {
        let matched: Vec<Identifier> = serde_json::from_value(
            json!([{"kind": "phone", "value": "+919876543210"}, {"kind": "email", "value": "a@b.in"}]),
        )
        .unwrap();
        assert_eq!(
            matched_lines(&matched),
            ["Phone: +919876543210", "E-mail: a@b.in"]
        );
        assert!(matched_lines(&[]).is_empty());
    }
}
