//! The Overview page's KPIs for a period: profiles, events per minute, orders and
//! revenue, merges and review items, churn-risk bands, segments, best sellers.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use domain::api::{
    ApiErrorBody, CategorySales, ChurnBand, ChurnBandCount, DayRevenue, MoneyTotal, Overview,
    OverviewQuery, ProductSales, RatePoint, SegmentCount,
};
use rust_decimal::Decimal;
use service_kit::ApiError;

use crate::extract::ApiQuery;
use crate::state::AppState;

/// Most points of the events-per-minute series.
const MAX_BUCKETS: i64 = 240;
/// Most days of the per-day revenue series (the last ten years of a longer period).
const MAX_REVENUE_DAYS: u64 = 3660;
/// Best sellers listed.
const TOP: i64 = 10;

/// The bucket length for a period: whole minutes, at most [`MAX_BUCKETS`] buckets.
fn bucket_minutes(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let seconds = (to - from).num_seconds().max(1);
    let per_bucket = MAX_BUCKETS * 60;
    ((seconds + per_bucket - 1) / per_bucket).max(1)
}

/// Every UTC day of `[from, to)` (its last [`MAX_REVENUE_DAYS`] at most) for each
/// currency of `totals` (in that order), with the day's orders and revenue from `daily`
/// or zero.
fn revenue_days(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    totals: &[(String, i64, Decimal)],
    daily: Vec<(chrono::NaiveDate, String, i64, Decimal)>,
) -> Vec<DayRevenue> {
    let by_day: HashMap<(chrono::NaiveDate, String), (i64, Decimal)> = daily
        .into_iter()
        .map(|(day, currency, orders, amount)| ((day, currency), (orders, amount)))
        .collect();
    let last = (to - Duration::microseconds(1)).date_naive();
    let first = from.date_naive().max(
        last.checked_sub_days(chrono::Days::new(MAX_REVENUE_DAYS - 1))
            .unwrap_or(chrono::NaiveDate::MIN),
    );
    totals
        .iter()
        .flat_map(|(currency, _, _)| {
            first
                .iter_days()
                .take_while(move |day| *day <= last)
                .map(|day| {
                    let (orders, amount) = by_day
                        .get(&(day, currency.clone()))
                        .copied()
                        .unwrap_or_default();
                    DayRevenue {
                        day,
                        currency: currency.clone(),
                        orders,
                        amount,
                    }
                })
        })
        .collect()
}

/// KPIs for a period.
#[utoipa::path(
    get,
    path = "/overview",
    tag = "overview",
    summary = "Overview KPIs",
    description = "Totals for the period `[from, to)` (default: the last 30 days) and the \
                   current churn-risk and segment distribution.",
    params(OverviewQuery),
    responses(
        (status = 200, description = "The KPIs", body = Overview),
        (status = 400, description = "A malformed time or `from` not before `to` (`bad_filter`)", body = ApiErrorBody),
    )
)]
pub async fn overview(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> Result<Json<Overview>, ApiError> {
    // Whole seconds: bucket starts computed here must equal the ones Postgres returns
    // (microsecond precision).
    let whole = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    // "Until now" includes this second.
    let to =
        q.to.map_or_else(|| whole(Utc::now()) + Duration::seconds(1), whole);
    // Checked: a `to` near the start of the calendar has no 30 days before it.
    let from = whole(
        match q.from {
            Some(from) => Some(from),
            None => to.checked_sub_signed(Duration::days(30)),
        }
        .ok_or_else(|| ApiError::bad_request("bad_filter", "to is too early to look back from"))?,
    );
    // Any period is answered (one that ends before it starts is empty); the per-day
    // revenue covers at most its last ten years.

    let db = &app.db;

    let (profiles_total, profiles_new): (i64, i64) = sqlx::query_as(
        // New = first seen in the period: the profile's first event (a brand's history
        // loaded today is not all "new"), else when the profile was created.
        "SELECT count(*), count(*) FILTER (WHERE COALESCE(first_event_at, created_at) >= $1 \
                AND COALESCE(first_event_at, created_at) < $2) \
         FROM customer_profile WHERE merged_into IS NULL",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;

    let minutes = bucket_minutes(from, to);
    let buckets: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT date_bin(make_interval(mins => $3::int), occurred_at, $1), count(*) \
         FROM normalized_event WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY 1",
    )
    .bind(from)
    .bind(to)
    .bind(i32::try_from(minutes).unwrap_or(i32::MAX))
    .fetch_all(db)
    .await?;
    let by_bucket: HashMap<DateTime<Utc>, i64> = buckets.into_iter().collect();
    let mut events_per_minute = Vec::new();
    let mut at = from;
    while at < to {
        let count = by_bucket.get(&at).copied().unwrap_or(0);
        events_per_minute.push(RatePoint {
            at,
            count,
            per_minute: count as f64 / minutes as f64,
        });
        at += Duration::minutes(minutes);
    }
    let events_total = events_per_minute.iter().map(|p| p.count).sum();

    let money: Vec<(String, i64, Decimal)> = sqlx::query_as(
        "SELECT currency, count(*), COALESCE(sum(total - refunded_total), 0) FROM orders \
         WHERE placed_at >= $1 AND placed_at < $2 AND status <> 'cancelled' \
         GROUP BY currency ORDER BY 3 DESC",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;

    let daily: Vec<(chrono::NaiveDate, String, i64, Decimal)> = sqlx::query_as(
        "SELECT (placed_at AT TIME ZONE 'UTC')::date, currency, count(*), \
                COALESCE(sum(total - refunded_total), 0) FROM orders \
         WHERE placed_at >= $1 AND placed_at < $2 AND status <> 'cancelled' \
         GROUP BY 1, 2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let revenue_per_day = revenue_days(from, to, &money, daily);

    let merges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM merge_history \
         WHERE created_at >= $1 AND created_at < $2 AND undone_at IS NULL",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    let (review_items_created, review_items_pending): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE created_at >= $1 AND created_at < $2), \
                count(*) FILTER (WHERE status = 'pending') FROM manual_merge_queue",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;

    let bands: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN pr.score >= $2 THEN 'high' WHEN pr.score >= $1 THEN 'medium' \
                ELSE 'low' END, count(*) \
         FROM predictions pr JOIN customer_profile p ON p.id = pr.profile_id \
         WHERE pr.task = 'churn' AND pr.score IS NOT NULL AND p.merged_into IS NULL \
         GROUP BY 1",
    )
    .bind(ChurnBand::MEDIUM_FROM)
    .bind(ChurnBand::HIGH_FROM)
    .fetch_all(db)
    .await?;
    let bands: HashMap<String, i64> = bands.into_iter().collect();
    let churn_risk = ChurnBand::ALL
        .into_iter()
        .map(|band| ChurnBandCount {
            band,
            profiles: bands.get(band.as_str()).copied().unwrap_or(0),
        })
        .collect();

    let segments: Vec<(String, i64)> = sqlx::query_as(
        "SELECT pr.label, count(*) FROM predictions pr \
         JOIN customer_profile p ON p.id = pr.profile_id \
         WHERE pr.task = 'segment' AND pr.label IS NOT NULL AND p.merged_into IS NULL \
         GROUP BY pr.label ORDER BY 2 DESC, 1",
    )
    .fetch_all(db)
    .await?;

    let categories: Vec<(String, i64, i64, Decimal)> = sqlx::query_as(
        "SELECT COALESCE(i.category, '(uncategorised)'), count(DISTINCT o.id), \
                COALESCE(sum(i.qty), 0)::bigint, COALESCE(sum(i.price * i.qty), 0) \
         FROM order_items i JOIN orders o ON o.id = i.order_id \
         WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status <> 'cancelled' \
         GROUP BY 1 ORDER BY 4 DESC, 1 LIMIT $3",
    )
    .bind(from)
    .bind(to)
    .bind(TOP)
    .fetch_all(db)
    .await?;
    let products: Vec<(String, String, Option<String>, i64, Decimal)> = sqlx::query_as(
        "SELECT i.sku, max(i.name), max(i.category), COALESCE(sum(i.qty), 0)::bigint, \
                COALESCE(sum(i.price * i.qty), 0) \
         FROM order_items i JOIN orders o ON o.id = i.order_id \
         WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status <> 'cancelled' \
         GROUP BY i.sku ORDER BY 5 DESC, 1 LIMIT $3",
    )
    .bind(from)
    .bind(to)
    .bind(TOP)
    .fetch_all(db)
    .await?;

    Ok(Json(Overview {
        from,
        to,
        profiles_total,
        profiles_new,
        events_total,
        events_per_minute,
        orders: money.iter().map(|m| m.1).sum(),
        revenue: money
            .into_iter()
            .map(|(currency, _, amount)| MoneyTotal { currency, amount })
            .collect(),
        revenue_per_day,
        merges,
        review_items_created,
        review_items_pending,
        churn_risk,
        segments: segments
            .into_iter()
            .map(|(segment, profiles)| SegmentCount { segment, profiles })
            .collect(),
        top_categories: categories
            .into_iter()
            .map(|(category, orders, units, revenue)| CategorySales {
                category,
                orders,
                units,
                revenue,
            })
            .collect(),
        top_products: products
            .into_iter()
            .map(|(sku, name, category, units, revenue)| ProductSales {
                sku,
                name,
                category,
                units,
                revenue,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revenue_days_cover_the_period_for_each_currency() {
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let at = |d: u32, h: u32| day(d).and_hms_opt(h, 0, 0).unwrap().and_utc();
        let totals = vec![
            ("INR".to_owned(), 3, Decimal::new(300, 0)),
            ("USD".to_owned(), 1, Decimal::new(5, 0)),
        ];
        let daily = vec![
            (day(2), "INR".to_owned(), 2, Decimal::new(200, 0)),
            (day(4), "INR".to_owned(), 1, Decimal::new(100, 0)),
            (day(3), "USD".to_owned(), 1, Decimal::new(5, 0)),
        ];
        // 1 Nov 12:00 to 4 Nov 06:00: four days, the last one partial.
        let days = revenue_days(at(1, 12), at(4, 6), &totals, daily);
        let inr: Vec<(u32, i64, Decimal)> = days
            .iter()
            .filter(|d| d.currency == "INR")
            .map(|d| (chrono::Datelike::day(&d.day), d.orders, d.amount))
            .collect();
        assert_eq!(
            inr,
            vec![
                (1, 0, Decimal::ZERO),
                (2, 2, Decimal::new(200, 0)),
                (3, 0, Decimal::ZERO),
                (4, 1, Decimal::new(100, 0)),
            ]
        );
        assert_eq!(days.len(), 8, "USD has its four days too");
        // A period ending exactly at midnight does not include the next day.
        assert_eq!(
            revenue_days(at(1, 0), at(3, 0), &totals[..1], vec![]).len(),
            2
        );
        assert!(revenue_days(at(1, 0), at(3, 0), &[], vec![]).is_empty());
    }

    #[test]
    fn buckets_are_whole_minutes_and_at_most_240() {
        let to = Utc::now();
        assert_eq!(bucket_minutes(to - Duration::hours(1), to), 1);
        assert_eq!(bucket_minutes(to - Duration::hours(4), to), 1);
        assert_eq!(bucket_minutes(to - Duration::days(30), to), 180);
        for span in [Duration::days(7), Duration::hours(4) + Duration::seconds(1)] {
            let m = bucket_minutes(to - span, to);
            let buckets = (span.num_seconds() + m * 60 - 1) / (m * 60);
            assert!(buckets <= MAX_BUCKETS, "{span}: {buckets}");
        }
    }
}
