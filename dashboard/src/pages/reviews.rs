//! The review queue: merges the identity merger did not dare to make alone (too many
//! profiles, two people on one device, ...). Each item shows the candidate profiles
//! side by side with the evidence; analysts and admins approve (merge them all),
//! reject (keep them apart) or merge a selection by hand.
//!
//! Decisions are applied asynchronously by the merger: after a decision the item is
//! polled until its status shows the outcome, so "approved" turns into "applied" (or
//! "failed", with the reason) in front of the user.

use std::collections::BTreeSet;

use domain::api::{
    Accepted, ManualMergeRequest, Page, ProfileSummary, ReviewItem, ReviewQuery, ReviewStatus, Role,
};
use leptos::prelude::*;
use uuid_js::Uuid;

use super::merges::MergeTabs;
use super::profiles::{best_identifiers, churn_tone};
use super::{href, query_param};
use crate::api::{self, ApiError};
use crate::format;
use crate::session::use_session;
use crate::widgets::{Badge, Empty, ErrorNotice, JsonBlock, Pager, loaded};

/// The status filters offered, as (query value, label).
const FILTERS: [(&str, &str); 5] = [
    ("pending", "Pending"),
    ("applied", "Applied"),
    ("rejected", "Rejected"),
    ("failed", "Failed"),
    ("all", "All"),
];

/// The badge tone of a review status.
fn status_tone(s: ReviewStatus) -> &'static str {
    match s {
        ReviewStatus::Pending => "warn",
        ReviewStatus::Approved => "info",
        ReviewStatus::Applied => "ok",
        ReviewStatus::Rejected => "muted",
        ReviewStatus::Failed => "bad",
    }
}

/// Whether the merger has finished with an item (no more changes to wait for).
fn settled(s: ReviewStatus) -> bool {
    matches!(
        s,
        ReviewStatus::Applied | ReviewStatus::Rejected | ReviewStatus::Failed
    )
}

/// The review queue page (`/merges/review`).
#[component]
pub fn ReviewQueue() -> impl IntoView {
    let status = query_param("status");
    let cursor = query_param("cursor");
    let status_value = move || status.get().unwrap_or_else(|| "pending".into());
    let items = LocalResource::new(move || {
        let s = status_value();
        let q = ReviewQuery {
            status: s.parse::<ReviewStatus>().ok(),
            cursor: cursor.get(),
            ..Default::default()
        };
        async move { api::get::<Page<ReviewItem>>(&api::with_query("/reviews", &q)).await }
    });

    view! {
        <div class="page-head">
            <div>
                <h1>"Merges"</h1>
                <p class="sub">"Profiles that may be one person, waiting for a decision."</p>
            </div>
        </div>
        <MergeTabs/>
        <nav class="segmented" aria-label="Status" style="margin-bottom:1rem">
            {FILTERS
                .into_iter()
                .map(|(v, label)| view! {
                    <a href=href("/merges/review", &[("status", Some(v.to_owned()))]) aria-current=move || (status_value() == v).then_some("page")>
                        {label}
                    </a>
                })
                .collect_view()}
        </nav>
        {loaded(items, move |page: Page<ReviewItem>| {
            if page.items.is_empty() {
                let hint = if status_value() == "pending" {
                    "Nothing waits for a decision. Items appear here when an event would join more than three profiles, or when a shared device links people with different phones or e-mails."
                } else {
                    "No review items with this status."
                };
                return view! { <Empty title="The queue is empty" hint=hint.into()/> }.into_any();
            }
            let next_href = page.next_cursor.clone().map(|c| href("/merges/review", &[("status", Some(status_value())), ("cursor", Some(c))]));
            let first_href = href("/merges/review", &[("status", Some(status_value()))]);
            view! {
                <div class="stack">
                    {page.items.into_iter().map(|item| view! { <Review item/> }).collect_view()}
                </div>
                <Pager on_later_page=cursor.get().is_some() first_href next_href/>
            }.into_any()
        })}
    }
}

/// One review item: candidates side by side, evidence, decisions.
#[component]
fn Review(item: ReviewItem) -> impl IntoView {
    let session = use_session();
    let id = item.id;
    let current = RwSignal::new(item);
    let selected = RwSignal::new(BTreeSet::<Uuid>::new());
    let busy = RwSignal::new(false);
    let message = RwSignal::new(None::<Result<String, ApiError>>);

    // Polls the item until the merger has settled it (or gives up after a while).
    let watch = move || {
        leptos::task::spawn_local(async move {
            for _ in 0..60 {
                gloo_timers::future::TimeoutFuture::new(500).await;
                match api::get::<ReviewItem>(&format!("/reviews/{id}")).await {
                    Ok(fresh) => {
                        let done = settled(fresh.status);
                        current.set(fresh);
                        if done {
                            busy.set(false);
                            message.set(None);
                            return;
                        }
                    }
                    Err(e) => {
                        message.set(Some(Err(e)));
                        busy.set(false);
                        return;
                    }
                }
            }
            busy.set(false);
            message.set(Some(Ok(
                "Sent; the merger has not applied it yet. Reload later to see the outcome.".into(),
            )));
        });
    };
    let decide = move |action: &'static str| {
        busy.set(true);
        message.set(Some(Ok(match action {
            "approve" => "Approved; merging…".into(),
            _ => "Rejected; closing…".into(),
        })));
        leptos::task::spawn_local(async move {
            match api::post_empty::<Accepted>(&format!("/reviews/{id}/{action}")).await {
                Ok(_) => watch(),
                Err(e) => {
                    busy.set(false);
                    message.set(Some(Err(e)));
                }
            }
        });
    };
    let merge_selected = move |_| {
        let ids: Vec<Uuid> = selected.get_untracked().into_iter().collect();
        busy.set(true);
        message.set(Some(Ok(format!(
            "Merging {} selected profiles…",
            ids.len()
        ))));
        leptos::task::spawn_local(async move {
            match api::post::<_, Accepted>("/merges", &ManualMergeRequest { profile_ids: ids })
                .await
            {
                Ok(_) => {
                    busy.set(false);
                    message.set(Some(Ok("Merge requested: the selected profiles become one in a moment (see the merge log).".into())));
                }
                Err(e) => {
                    busy.set(false);
                    message.set(Some(Err(e)));
                }
            }
        });
    };

    let can_decide =
        move || session.can(Role::Analyst) && current.with(|i| i.status == ReviewStatus::Pending);
    view! {
        <article class="card review" data-review-id=id.to_string()>
            {move || {
                let i = current.get();
                let status = i.status;
                view! {
                    <div class="row">
                        <h2 style="margin:0">{format::humanize(i.reason.as_str())}</h2>
                        <span data-testid="review-status" data-status=status.as_str()>
                            <Badge text=format::humanize(status.as_str()) tone=status_tone(status)/>
                        </span>
                        <span class="spacer"></span>
                        <small>{format!("Raised {}", format::datetime(i.created_at))}</small>
                    </div>
                    {i.decided_by.clone().map(|by| view! {
                        <small>{format!("Decided by {by} {}", format::maybe_datetime(i.decided_at))}</small>
                    })}
                    {(status == ReviewStatus::Applied).then(|| {
                        let survivor = i.outcome.as_ref().and_then(|o| o.get("survivor_id")).and_then(|v| v.as_str()).map(str::to_owned);
                        view! {
                            <p class="notice ok" data-testid="review-applied">
                                "Merged. "
                                {survivor.map(|s| view! { <a href=format!("/profiles/{s}")>"Open the merged profile"</a> })}
                            </p>
                        }
                    })}
                    {(status == ReviewStatus::Failed).then(|| view! {
                        <p class="notice error">{format!("The merge failed: {}", i.outcome.as_ref().map(|o| o.to_string()).unwrap_or_default())}</p>
                    })}
                }
            }}
            <div class="candidates">
                {move || {
                    let i = current.get();
                    let missing = i.candidate_profile_ids.len().saturating_sub(i.candidates.len());
                    let pending = i.status == ReviewStatus::Pending;
                    view! {
                        {i.candidates.into_iter().map(|c| view! { <Candidate c selected selectable=pending && session.can(Role::Analyst)/> }).collect_view()}
                        {(missing > 0).then(|| view! {
                            <div class="candidate muted">{format!("{missing} candidate profile(s) were merged away or erased since.")}</div>
                        })}
                    }
                }}
            </div>
            <details>
                <summary>"Evidence"</summary>
                {move || view! { <JsonBlock value=current.with(|i| i.evidence.clone())/> }}
            </details>
            <Show when=can_decide>
                <div class="row" data-testid="review-actions">
                    <button type="button" class="button ok" disabled=move || busy.get() on:click=move |_| decide("approve")>"Approve (merge all)"</button>
                    <button type="button" class="button ghost" disabled=move || busy.get() on:click=move |_| decide("reject")>"Reject (keep apart)"</button>
                    <button
                        type="button"
                        class="button ghost"
                        disabled=move || busy.get() || selected.with(|s| s.len() < 2)
                        on:click=merge_selected
                        title="Tick two or more candidates to merge just those"
                    >
                        {move || format!("Merge selected ({})", selected.with(BTreeSet::len))}
                    </button>
                </div>
            </Show>
            {move || message.get().map(|m| match m {
                Ok(text) => view! { <p class="notice info" role="status">{text}</p> }.into_any(),
                Err(error) => view! { <ErrorNotice error/> }.into_any(),
            })}
        </article>
    }
}

/// One candidate profile of a review item.
#[component]
fn Candidate(
    c: ProfileSummary,
    selected: RwSignal<BTreeSet<Uuid>>,
    selectable: bool,
) -> impl IntoView {
    let id = c.id;
    let now = format::now();
    let is_selected = move || selected.with(|s| s.contains(&id));
    view! {
        <div class="candidate" class:selected=is_selected data-candidate-id=id.to_string()>
            <div class="row">
                {selectable.then(|| view! {
                    <input
                        type="checkbox"
                        aria-label="Select for merging"
                        prop:checked=is_selected
                        on:change=move |ev| {
                            let on = event_target_checked(&ev);
                            selected.update(|s| { if on { s.insert(id); } else { s.remove(&id); } });
                        }
                    />
                })}
                <h3><a href=format!("/profiles/{id}")>{c.display_name.clone().unwrap_or_else(|| "Unnamed profile".into())}</a></h3>
            </div>
            <div class="ids">
                {best_identifiers(&c.identifiers, 6).into_iter().map(|i| view! {
                    <span><small>{format::identifier_kind(i.kind)}": "</small>{i.value}</span>
                }).collect_view()}
            </div>
            <p>
                <small>
                    {format!("{} orders · {} · last seen {}",
                        format::count(c.total_orders),
                        format::money(c.lifetime_value, c.currency.as_deref()),
                        c.last_seen_at.map(|t| format::ago(t, now)).unwrap_or_else(|| "never".into()))}
                </small>
            </p>
            <p>
                {c.channels.iter().map(|ch| view! { <Badge text=format::channel(*ch)/> " " }).collect_view()}
                {c.churn_band.map(|b| view! { <Badge text=format!("{} churn", format::humanize(b.as_str())) tone=churn_tone(b)/> })}
            </p>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_statuses_are_settled() {
        assert!(!settled(ReviewStatus::Pending));
        assert!(!settled(ReviewStatus::Approved));
        assert!(settled(ReviewStatus::Applied));
        assert!(settled(ReviewStatus::Rejected));
        assert!(settled(ReviewStatus::Failed));
    }
}
