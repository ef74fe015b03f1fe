//! Overview: the brand at a glance for a period — KPI cards and charts of events per
//! minute, revenue per day, churn risk, segments and top categories and products.
//! The period lives in the URL (`?period=7d`).

use chrono::Duration;
use domain::api::{ChurnBand, Overview as OverviewData, OverviewQuery};
use leptos::prelude::*;

use super::{href, query_param};
use crate::api;
use crate::charts::{BarChart, Donut, HBars, LineChart};
use crate::format;
use crate::widgets::{Empty, Kpi, loaded};

/// The Overview page.
#[component]
pub fn Overview() -> impl IntoView {
    let period = query_param("period");
    let period_value = move || period.get().unwrap_or_else(|| "30d".to_owned());
    let overview = LocalResource::new(move || {
        let days = format::period_days(&period_value());
        async move {
            let to = format::now();
            let query = OverviewQuery {
                from: Some(to - Duration::days(days)),
                to: Some(to),
            };
            api::get::<OverviewData>(&api::with_query("/overview", &query)).await
        }
    });

    view! {
        <div class="page-head">
            <h1>"Overview"</h1>
            <nav class="segmented" aria-label="Period">
                {format::PERIODS
                    .iter()
                    .map(|(value, label, _)| {
                        let value = *value;
                        view! {
                            <a
                                href=href("/", &[("period", Some(value.to_owned()))])
                                aria-current=move || (period_value() == value).then_some("page")
                            >
                                {*label}
                            </a>
                        }
                    })
                    .collect_view()}
            </nav>
        </div>
        {loaded(overview, move |o| view! { <OverviewBody o=o days=format::period_days(&period_value())/> })}
    }
}

#[component]
fn OverviewBody(o: OverviewData, days: i64) -> impl IntoView {
    let revenue_main = o.revenue.first().cloned();
    let revenue_exact = revenue_main
        .as_ref()
        .map(|m| format::money(m.amount, Some(&m.currency)))
        .unwrap_or_else(|| format::money(Default::default(), None));
    let revenue_text = revenue_main.as_ref().map_or_else(
        || revenue_exact.clone(),
        |m| {
            format::kpi_figure(
                &revenue_exact,
                m.amount.to_string().parse().unwrap_or(0.0),
                Some(&m.currency),
            )
        },
    );
    let revenue_others = o
        .revenue
        .iter()
        .skip(1)
        .map(|m| format::money(m.amount, Some(&m.currency)))
        .collect::<Vec<_>>()
        .join(" + ");
    let short_buckets = days <= 1;
    let rate_points: Vec<(String, f64)> = o
        .events_per_minute
        .iter()
        .map(|p| {
            let label = if short_buckets {
                p.at.format("%H:%M").to_string()
            } else {
                p.at.format("%d %b").to_string()
            };
            (label, p.per_minute)
        })
        .collect();
    // The main currency's days (the one with the most revenue, as on the KPI card).
    let revenue_days: Vec<(String, f64)> = o
        .revenue_per_day
        .iter()
        .filter(|d| {
            revenue_main
                .as_ref()
                .is_some_and(|m| m.currency == d.currency)
        })
        .map(|d| {
            (
                d.day.format("%d %b").to_string(),
                d.amount.to_string().parse().unwrap_or(0.0),
            )
        })
        .collect();
    let churn: Vec<(String, f64, &'static str)> = ChurnBand::ALL
        .iter()
        .map(|band| {
            let n = o
                .churn_risk
                .iter()
                .find(|c| c.band == *band)
                .map(|c| c.profiles)
                .unwrap_or(0);
            (
                format!("{} risk", format::humanize(band.as_str())),
                n as f64,
                band.as_str(),
            )
        })
        .collect();
    let has_churn = o.churn_risk.iter().any(|c| c.profiles > 0);
    let segments: Vec<(String, f64, String)> = o
        .segments
        .iter()
        .map(|s| {
            (
                s.segment.clone(),
                s.profiles as f64,
                format::count(s.profiles),
            )
        })
        .collect();
    let currency = revenue_main.as_ref().map(|m| m.currency.clone());
    let categories: Vec<(String, f64, String)> = o
        .top_categories
        .iter()
        .map(|c| {
            (
                c.category.clone(),
                c.revenue.to_string().parse().unwrap_or(0.0),
                format::money(c.revenue, currency.as_deref()),
            )
        })
        .collect();
    let products = o.top_products.clone();
    let empty_brand = o.profiles_total == 0 && o.events_total == 0;

    view! {
        {empty_brand
            .then(|| {
                view! {
                    <Empty
                        title="No customer data yet"
                        hint="Connect a source on the Integrations page, or upload a CSV of customers or orders, and the figures appear here within seconds."
                            .into()
                    >
                        <a class="button" href="/integrations">"Add an integration"</a>
                        " "
                        <a class="button ghost" href="/imports">"Upload a CSV"</a>
                    </Empty>
                }
            })}
        <section class="kpis">
            <Kpi
                name="profiles"
                label="Profiles"
                value=format::kpi_count(o.profiles_total)
                exact=format::count(o.profiles_total)
                hint=format!("+{} new in the period", format::count(o.profiles_new))
            />
            <Kpi
                name="new_profiles"
                label="New profiles"
                value=format::kpi_count(o.profiles_new)
                exact=format::count(o.profiles_new)
                hint="first seen in the period"
            />
            <Kpi
                name="orders"
                label="Orders"
                value=format::kpi_count(o.orders)
                exact=format::count(o.orders)
                hint=format!("{} events", format::count(o.events_total))
            />
            <Kpi
                name="revenue"
                label="Revenue"
                value=revenue_text
                exact=revenue_exact
                hint=if revenue_others.is_empty() { "net of refunds".to_owned() } else { format!("+ {revenue_others}") }
            />
            <Kpi
                name="merges"
                label="Merges"
                value=format::kpi_count(o.merges)
                exact=format::count(o.merges)
                hint="profiles joined in the period"
            />
            <Kpi
                name="review_items"
                label="Open review items"
                value=format::kpi_count(o.review_items_pending)
                exact=format::count(o.review_items_pending)
                hint=format!("{} raised in the period", format::count(o.review_items_created))
            />
        </section>
        <section class="grid two">
            <div class="card">
                <h2>"Events per minute"</h2>
                {if rate_points.iter().any(|p| p.1 > 0.0) {
                    view! { <LineChart label="Events per minute".into() points=rate_points/> }.into_any()
                } else {
                    view! { <p class="muted">"No events in this period."</p> }.into_any()
                }}
            </div>
            <div class="card">
                <h2>"Revenue per day"</h2>
                {if revenue_days.iter().any(|d| d.1 > 0.0) {
                    view! { <BarChart label="Revenue per day".into() bars=revenue_days/> }.into_any()
                } else {
                    view! { <p class="muted">"No orders in this period."</p> }.into_any()
                }}
            </div>
            <div class="card">
                <h2>"Churn risk"</h2>
                {if has_churn {
                    view! { <Donut label="Profiles per churn-risk band".into() slices=churn/> }.into_any()
                } else {
                    view! {
                        <p class="muted">
                            "Not enough data to predict churn yet: no churn model has passed its checks against chance and the baselines (the Models page says why)."
                        </p>
                    }
                        .into_any()
                }}
            </div>
            <div class="card">
                <h2>"Segments"</h2>
                {if segments.is_empty() {
                    view! { <p class="muted">"No segments yet: they appear once the segment model has run."</p> }.into_any()
                } else {
                    view! { <HBars label="Profiles per segment".into() rows=segments/> }.into_any()
                }}
            </div>
            <div class="card">
                <h2>"Top categories"</h2>
                {if categories.is_empty() {
                    view! { <p class="muted">"No sales in this period."</p> }.into_any()
                } else {
                    view! { <HBars label="Revenue per category".into() rows=categories/> }.into_any()
                }}
            </div>
            <div class="card">
                <h2>"Top products"</h2>
                {if products.is_empty() {
                    view! { <p class="muted">"No sales in this period."</p> }.into_any()
                } else {
                    view! {
                        <table class="table compact">
                            <thead>
                                <tr>
                                    <th>"Product"</th>
                                    <th>"Category"</th>
                                    <th class="num">"Units"</th>
                                    <th class="num">"Revenue"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {products
                                    .into_iter()
                                    .map(|p| {
                                        view! {
                                            <tr>
                                                <td title=p.sku.clone()>{p.name}</td>
                                                <td>{p.category.unwrap_or_default()}</td>
                                                <td class="num">{format::count(p.units)}</td>
                                                <td class="num">{format::money(p.revenue, currency.as_deref())}</td>
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                    }
                        .into_any()
                }}
            </div>
        </section>
    }
}
