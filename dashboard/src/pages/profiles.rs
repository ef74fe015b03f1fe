//! Profiles: search by any identifier or name, filter by segment, channel, churn band
//! and last activity, sort, and page through with keyset cursors. Every control writes
//! the URL, so a search can be bookmarked and Back undoes a filter. A row opens the
//! Customer 360.

use chrono::Duration;
use domain::api::{
    ChurnBand, Overview, OverviewQuery, Page, ProfileQuery, ProfileSort, ProfileSummary, SortOrder,
};
use domain::identifier::is_order_reference;
use domain::{Channel, Identifier};
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};

use super::href;
use crate::api;
use crate::format;
use crate::widgets::{Badge, Empty, Pager, loaded};

/// The query-string keys this page understands, in the order they are written.
const KEYS: [&str; 8] = [
    "q",
    "segment",
    "channel",
    "churn_band",
    "last_seen",
    "sort",
    "order",
    "cursor",
];

/// The current URL's value of each of [`KEYS`].
fn current_params(query: &leptos_router::params::ParamsMap) -> Vec<(&'static str, Option<String>)> {
    KEYS.iter()
        .map(|k| (*k, query.get(k).filter(|v| !v.is_empty())))
        .collect()
}

/// The list URL with `changes` applied to the current parameters; any change other
/// than the cursor starts again from the first page.
fn with_changes(
    current: &[(&'static str, Option<String>)],
    changes: &[(&'static str, Option<String>)],
) -> String {
    let resets_paging = changes.iter().any(|(k, _)| *k != "cursor");
    let params: Vec<(&str, Option<String>)> = current
        .iter()
        .map(|(k, v)| {
            let v = changes
                .iter()
                .find(|(ck, _)| ck == k)
                .map(|(_, cv)| cv.clone())
                .unwrap_or_else(|| v.clone());
            (
                *k,
                if *k == "cursor" && resets_paging && !changes.iter().any(|(ck, _)| *ck == "cursor")
                {
                    None
                } else {
                    v
                },
            )
        })
        .collect();
    href("/profiles", &params)
}

/// The API query for the page's parameters, seen at `now`.
fn api_query(
    params: &[(&'static str, Option<String>)],
    now: chrono::DateTime<chrono::Utc>,
) -> ProfileQuery {
    let get = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| *pk == k)
            .and_then(|(_, v)| v.clone())
    };
    ProfileQuery {
        q: get("q").map(|q| q.trim().to_owned()),
        segment: get("segment"),
        channel: get("channel").and_then(|c| c.parse::<Channel>().ok()),
        churn_band: get("churn_band")
            .and_then(|b| ChurnBand::ALL.into_iter().find(|band| band.as_str() == b)),
        last_seen_from: get("last_seen").map(|p| now - Duration::days(format::period_days(&p))),
        sort: get("sort").and_then(|s| match s.as_str() {
            "ltv" => Some(ProfileSort::Ltv),
            "orders" => Some(ProfileSort::Orders),
            "last_seen" => Some(ProfileSort::LastSeen),
            _ => None,
        }),
        order: get("order").and_then(|o| match o.as_str() {
            "asc" => Some(SortOrder::Asc),
            "desc" => Some(SortOrder::Desc),
            _ => None,
        }),
        cursor: get("cursor"),
        ..Default::default()
    }
}

/// The identifiers worth showing in a list row: strongest kinds first, order references
/// left out, at most `n`.
pub fn best_identifiers(ids: &[Identifier], n: usize) -> Vec<Identifier> {
    let mut ids: Vec<Identifier> = ids
        .iter()
        .filter(|i| !is_order_reference(i.kind, &i.value))
        .cloned()
        .collect();
    ids.sort_by_key(|i| std::cmp::Reverse(i.kind.priority()));
    ids.truncate(n);
    ids
}

/// The badge tone of a churn band.
pub fn churn_tone(band: ChurnBand) -> &'static str {
    match band {
        ChurnBand::Low => "ok",
        ChurnBand::Medium => "warn",
        ChurnBand::High => "bad",
    }
}

/// The Profiles page.
#[component]
pub fn Profiles() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let params = Memo::new(move |_| query.with(current_params));
    let get = move |k: &'static str| {
        params.with(|p| {
            p.iter()
                .find(|(pk, _)| *pk == k)
                .and_then(|(_, v)| v.clone())
        })
    };

    let profiles = LocalResource::new(move || {
        let q = api_query(&params.get(), format::now());
        async move { api::get::<Page<ProfileSummary>>(&api::with_query("/profiles", &q)).await }
    });
    // Segment names for the filter: the segments the overview counts.
    let segments = LocalResource::new(|| async {
        let to = format::now();
        let q = OverviewQuery {
            from: Some(to - Duration::days(1)),
            to: Some(to),
        };
        api::get::<Overview>(&api::with_query("/overview", &q))
            .await
            .map(|o| {
                o.segments
                    .into_iter()
                    .map(|s| s.segment)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    });

    let search = RwSignal::new(get("q").unwrap_or_default());
    // Keep the box in step with the URL (Back, a link with ?q=).
    Effect::new(move |_| search.set(get("q").unwrap_or_default()));

    let go = {
        let navigate = navigate.clone();
        move |changes: Vec<(&'static str, Option<String>)>| {
            let url = with_changes(&params.get_untracked(), &changes);
            navigate(&url, Default::default());
        }
    };
    let submit = {
        let go = go.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let q = search.get_untracked();
            go(vec![(
                "q",
                Some(q.trim().to_owned()).filter(|q| !q.is_empty()),
            )]);
        }
    };
    let select = {
        let go = go.clone();
        move |key: &'static str| {
            let go = go.clone();
            move |ev: leptos::ev::Event| {
                let v = event_target_value(&ev);
                go(vec![(key, Some(v).filter(|v| !v.is_empty()))]);
            }
        }
    };

    let sort_link = move |key: &'static str, label: &'static str| {
        let current = get("sort").unwrap_or_else(|| "last_seen".into());
        let order = get("order").unwrap_or_else(|| "desc".into());
        let active = current == key;
        let next_order = if active && order == "desc" {
            "asc"
        } else {
            "desc"
        };
        let url = params.with(|p| {
            with_changes(
                p,
                &[
                    ("sort", Some(key.to_owned())),
                    ("order", Some(next_order.to_owned())),
                ],
            )
        });
        let arrow = if !active {
            ""
        } else if order == "desc" {
            " ↓"
        } else {
            " ↑"
        };
        view! {
            <a class="sort" href=url aria-sort=active.then(|| if order == "desc" { "descending" } else { "ascending" })>
                {label}
                {arrow}
            </a>
        }
    };

    view! {
        <div class="page-head">
            <div>
                <h1>"Profiles"</h1>
                <p class="sub">"One profile per person, across every source."</p>
            </div>
        </div>
        <form class="filters" role="search" on:submit=submit>
            <label class="search">
                "Search"
                <input
                    type="search"
                    name="q"
                    placeholder="Phone, e-mail, customer or loyalty id, device, name…"
                    bind:value=search
                />
            </label>
            <button type="submit" class="button">"Search"</button>
            <label>
                "Segment"
                <select name="segment" on:change=select("segment")>
                    <option value="" selected=move || get("segment").is_none()>"Any"</option>
                    {move || {
                        let current = get("segment");
                        segments
                            .get()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|s| {
                                let selected = current.as_deref() == Some(s.as_str());
                                view! { <option value=s.clone() selected=selected>{s.clone()}</option> }
                            })
                            .collect_view()
                    }}
                </select>
            </label>
            <label>
                "Channel"
                <select name="channel" on:change=select("channel")>
                    <option value="" selected=move || get("channel").is_none()>"Any"</option>
                    {Channel::ALL
                        .into_iter()
                        .map(|c| {
                            view! {
                                <option value=c.as_str() selected=move || get("channel").as_deref() == Some(c.as_str())>
                                    {format::channel(c)}
                                </option>
                            }
                        })
                        .collect_view()}
                </select>
            </label>
            <label>
                "Churn risk"
                <select name="churn_band" on:change=select("churn_band")>
                    <option value="" selected=move || get("churn_band").is_none()>"Any"</option>
                    {ChurnBand::ALL
                        .into_iter()
                        .map(|b| {
                            view! {
                                <option value=b.as_str() selected=move || get("churn_band").as_deref() == Some(b.as_str())>
                                    {format::humanize(b.as_str())}
                                </option>
                            }
                        })
                        .collect_view()}
                </select>
            </label>
            <label>
                "Last seen"
                <select name="last_seen" on:change=select("last_seen")>
                    <option value="" selected=move || get("last_seen").is_none()>"Any time"</option>
                    {format::PERIODS
                        .into_iter()
                        .map(|(v, label, _)| {
                            view! {
                                <option value=v selected=move || get("last_seen").as_deref() == Some(v)>
                                    {label}
                                </option>
                            }
                        })
                        .collect_view()}
                </select>
            </label>
        </form>
        {loaded(profiles, move |page: Page<ProfileSummary>| {
            let q = get("q");
            let filtered = KEYS.iter().any(|k| *k != "sort" && *k != "order" && *k != "cursor" && get(k).is_some());
            if page.items.is_empty() {
                return match q {
                    Some(q) => view! {
                        <Empty
                            title="No profile matches"
                            hint=format!("Nothing matches “{q}”. Identifiers are compared after normalisation, so spaces and case do not matter; try another identifier, the start of a name, or clear the filters.")
                        >
                            <a class="button ghost" href="/profiles">"Clear the search"</a>
                        </Empty>
                    }.into_any(),
                    None if filtered => view! {
                        <Empty title="No profile in this selection" hint="Loosen a filter to see more profiles.".into()>
                            <a class="button ghost" href="/profiles">"Clear the filters"</a>
                        </Empty>
                    }.into_any(),
                    None => view! {
                        <Empty
                            title="No profiles yet"
                            hint="Profiles appear as soon as events arrive: connect a source or upload a CSV of customers.".into()
                        >
                            <a class="button" href="/integrations">"Add an integration"</a>
                        </Empty>
                    }.into_any(),
                };
            }
            let next_href = page.next_cursor.clone().map(|c| params.with_untracked(|p| with_changes(p, &[("cursor", Some(c))])));
            let first_href = params.with_untracked(|p| with_changes(p, &[("cursor", None)]));
            let on_later_page = get("cursor").is_some();
            view! {
                <div class="card table-wrap">
                    <table class="table" data-testid="profiles">
                        <thead>
                            <tr>
                                <th>"Profile"</th>
                                <th class="hide-phone">"Identifiers"</th>
                                <th>"Segment"</th>
                                <th>"Churn risk"</th>
                                <th class="num">{sort_link("orders", "Orders")}</th>
                                <th class="num">{sort_link("ltv", "Lifetime value")}</th>
                                <th class="num hide-phone">{sort_link("last_seen", "Last seen")}</th>
                            </tr>
                        </thead>
                        <tbody>
                            {page.items.into_iter().map(|p| view! { <ProfileRow p/> }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page first_href next_href/>
                </div>
            }.into_any()
        })}
    }
}

#[component]
fn ProfileRow(p: ProfileSummary) -> impl IntoView {
    let navigate = use_navigate();
    let url = format!("/profiles/{}", p.id);
    let open = {
        let url = url.clone();
        move |_| navigate(&url, Default::default())
    };
    let now = format::now();
    let name = p
        .display_name
        .clone()
        .unwrap_or_else(|| "Unnamed profile".into());
    view! {
        <tr class="clickable" on:click=open data-profile-id=p.id.to_string()>
            <td>
                <a href=url on:click=|ev| ev.stop_propagation()>{name}</a>
                <div class="muted">
                    {p.channels.iter().map(|c| format::channel(*c)).collect::<Vec<_>>().join(" · ")}
                </div>
            </td>
            <td class="hide-phone">
                <div class="ids">
                    {best_identifiers(&p.identifiers, 3)
                        .into_iter()
                        .map(|i| view! { <span title=format::identifier_kind(i.kind)>{i.value}</span> })
                        .collect_view()}
                </div>
            </td>
            <td>{p.segment.map(|s| view! { <Badge text=s tone="info"/> })}</td>
            <td>
                {p.churn_band.map(|b| {
                    let text = match p.churn_probability {
                        Some(pr) => format!("{} · {}", format::humanize(b.as_str()), format::percent(pr)),
                        None => format::humanize(b.as_str()),
                    };
                    view! { <Badge text tone=churn_tone(b)/> }
                })}
            </td>
            <td class="num">{format::count(p.total_orders)}</td>
            <td class="num">{format::money(p.lifetime_value, p.currency.as_deref())}</td>
            <td class="num hide-phone">{p.last_seen_at.map(|t| format::ago(t, now)).unwrap_or_else(|| "—".into())}</td>
        </tr>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, Option<String>)> {
        KEYS.iter()
            .map(|k| {
                (
                    *k,
                    pairs
                        .iter()
                        .find(|(pk, _)| pk == k)
                        .map(|(_, v)| v.to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn best_identifiers_are_strong_personal_ones() {
        let id = |kind, value: &str| Identifier {
            kind,
            value: value.into(),
        };
        use domain::IdentifierKind::*;
        let ids = [
            id(CookieId, "c-1"),
            id(CustomerId, "@order:shopify:55"),
            id(Phone, "+919845031277"),
            id(LoyaltyId, "LOY-1"),
            id(Email, "a@b.in"),
        ];
        let best: Vec<String> = best_identifiers(&ids, 3)
            .into_iter()
            .map(|i| i.value)
            .collect();
        assert_eq!(best, ["+919845031277", "a@b.in", "LOY-1"]);
    }

    #[test]
    fn changing_a_filter_starts_from_the_first_page() {
        let current = params(&[("q", "asha"), ("cursor", "abc"), ("sort", "ltv")]);
        assert_eq!(
            with_changes(&current, &[("segment", Some("Loyal".into()))]),
            "/profiles?q=asha&segment=Loyal&sort=ltv"
        );
        assert_eq!(
            with_changes(&current, &[("cursor", Some("def".into()))]),
            "/profiles?q=asha&sort=ltv&cursor=def"
        );
        assert_eq!(with_changes(&current, &[("q", None)]), "/profiles?sort=ltv");
    }

    #[test]
    fn url_parameters_become_the_api_query() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let q = api_query(
            &params(&[
                ("q", " +91 98765 43210 "),
                ("channel", "whatsapp"),
                ("churn_band", "high"),
                ("last_seen", "7d"),
                ("sort", "orders"),
                ("order", "asc"),
                ("segment", "Loyal"),
            ]),
            now,
        );
        assert_eq!(q.q.as_deref(), Some("+91 98765 43210"));
        assert_eq!(q.channel, Some(Channel::Whatsapp));
        assert_eq!(q.churn_band, Some(ChurnBand::High));
        assert_eq!(q.last_seen_from, Some(now - Duration::days(7)));
        assert_eq!(q.sort, Some(ProfileSort::Orders));
        assert_eq!(q.order, Some(SortOrder::Asc));
        assert_eq!(q.segment.as_deref(), Some("Loyal"));
        // Unknown values are ignored rather than sent.
        let q = api_query(&params(&[("channel", "fax"), ("sort", "name")]), now);
        assert_eq!(q.channel, None);
        assert_eq!(q.sort, None);
    }
}
