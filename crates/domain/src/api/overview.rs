//! The Overview page's KPIs for a period (`GET /overview`).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::profiles::ChurnBand;

/// `GET /overview` parameters: the period (default: the last 30 days).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct OverviewQuery {
    /// Start of the period (inclusive).
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// End of the period (exclusive), default now.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

/// The Overview page's KPIs for one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    /// Start of the period.
    pub from: DateTime<Utc>,
    /// End of the period.
    pub to: DateTime<Utc>,
    /// Live (not merged-away) profiles now.
    pub profiles_total: i64,
    /// Live profiles first seen in the period (their first event; else their creation).
    pub profiles_new: i64,
    /// Normalised events that occurred in the period.
    pub events_total: i64,
    /// Events per minute over the period, in equal buckets (at most 240).
    pub events_per_minute: Vec<RatePoint>,
    /// Orders placed in the period (cancelled excluded).
    pub orders: i64,
    /// Revenue of those orders net of refunds, per currency.
    pub revenue: Vec<MoneyTotal>,
    /// The same revenue per UTC day of the period, for each currency in `revenue`
    /// (days without orders included, at zero), oldest day first.
    pub revenue_per_day: Vec<DayRevenue>,
    /// Merges made in the period (automatic and manual, not undone).
    pub merges: i64,
    /// Review items created in the period.
    pub review_items_created: i64,
    /// Review items pending now.
    pub review_items_pending: i64,
    /// Live profiles per churn-risk band (profiles without a churn score are left out).
    pub churn_risk: Vec<ChurnBandCount>,
    /// Live profiles per segment.
    pub segments: Vec<SegmentCount>,
    /// Best-selling categories in the period, by revenue.
    pub top_categories: Vec<CategorySales>,
    /// Best-selling products in the period, by revenue.
    pub top_products: Vec<ProductSales>,
}

/// One bucket of a rate time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RatePoint {
    /// Start of the bucket.
    pub at: DateTime<Utc>,
    /// Events in the bucket.
    pub count: i64,
    /// `count` divided by the bucket's length in minutes.
    pub per_minute: f64,
}

/// Revenue of one day in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayRevenue {
    /// The day (UTC).
    pub day: NaiveDate,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Orders placed that day (cancelled excluded).
    pub orders: i64,
    /// Their revenue net of refunds.
    pub amount: Decimal,
}

/// An amount of money in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoneyTotal {
    /// ISO 4217 currency code.
    pub currency: String,
    /// The sum, exact to the cent.
    pub amount: Decimal,
}

/// Profiles in one churn-risk band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChurnBandCount {
    /// The band.
    pub band: ChurnBand,
    /// Live profiles in it.
    pub profiles: i64,
}

/// Profiles in one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SegmentCount {
    /// Segment name (Champions, Loyal, At Risk, ...).
    pub segment: String,
    /// Live profiles in it.
    pub profiles: i64,
}

/// Sales of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CategorySales {
    /// Category name.
    pub category: String,
    /// Orders containing it.
    pub orders: i64,
    /// Units sold.
    pub units: i64,
    /// Revenue (line price × quantity), all currencies added.
    pub revenue: Decimal,
}

/// Sales of one product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductSales {
    /// Stock keeping unit.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Category, when known.
    #[serde(default)]
    pub category: Option<String>,
    /// Units sold.
    pub units: i64,
    /// Revenue (line price × quantity), all currencies added.
    pub revenue: Decimal,
}
