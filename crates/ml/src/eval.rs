//! Reading any brand's transaction log (CSV) into profile histories, for
//! `ctl ml eval`: a brand checks the models on its own history before trusting them.
//!
//! Columns (header names mappable): `customer_id`, `date`, `amount` are required;
//! `order_id`, `sku`, `category` are used when present. Rows sharing an order id (or,
//! without that column, a customer and a timestamp) form one order. Bad rows — empty
//! customer, unreadable date or amount — are skipped and reported with their line
//! number; baskets that total zero or less (returns) are left out and counted.

use std::collections::HashMap;
use std::io::Read;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use domain::Channel;
use uuid::Uuid;

use crate::MlError;
use crate::history::{OrderFact, ProfileHistory};

/// Which header names hold which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// Customer identifier column.
    pub customer: String,
    /// Transaction date/time column.
    pub date: String,
    /// Amount column.
    pub amount: String,
    /// Order id column, if any.
    pub order: Option<String>,
    /// SKU column, if any.
    pub sku: Option<String>,
    /// Category column, if any.
    pub category: Option<String>,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            customer: "customer_id".into(),
            date: "date".into(),
            amount: "amount".into(),
            order: Some("order_id".into()),
            sku: Some("sku".into()),
            category: Some("category".into()),
        }
    }
}

/// A transaction log read into histories.
#[derive(Debug, Clone, Default)]
pub struct TransactionLog {
    /// One history per customer (ids are stand-ins: `Uuid::from_u128(n)`).
    pub histories: Vec<ProfileHistory>,
    /// Data rows read.
    pub rows: usize,
    /// Orders formed.
    pub orders: usize,
    /// Rows skipped: (line number, reason).
    pub bad_rows: Vec<(u64, String)>,
    /// Baskets left out because they total zero or less.
    pub returns_ignored: usize,
    /// Earliest transaction.
    pub first: Option<DateTime<Utc>>,
    /// Latest transaction.
    pub last: Option<DateTime<Utc>>,
}

/// Parses the date formats transaction exports commonly use.
pub fn parse_date(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%d/%m/%Y %H:%M",
        "%d-%m-%Y %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    for fmt in ["%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, fmt) {
            return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        }
    }
    None
}

/// Parses an amount, tolerating a currency symbol and thousands separators.
pub fn parse_amount(raw: &str) -> Option<f64> {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ',' | '₹' | '$' | '€' | '£' | ' '))
        .collect();
    cleaned.parse::<f64>().ok().filter(|v| v.is_finite())
}

struct Basket {
    customer: usize,
    at: DateTime<Utc>,
    total: f64,
    categories: Vec<String>,
}

/// A CSV reader (ragged rows allowed, fields trimmed) and its header row.
pub(crate) fn open_csv<R: Read>(input: R) -> Result<(csv::Reader<R>, csv::StringRecord), MlError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| MlError::Invalid(format!("reading the CSV header: {e}")))?
        .clone();
    Ok((reader, headers))
}

/// The error for a required column the header lacks (`hint` is appended).
pub(crate) fn missing_column(headers: &csv::StringRecord, name: &str, hint: &str) -> MlError {
    MlError::Invalid(format!(
        "column `{name}` not in the header ({}){hint}",
        headers.iter().collect::<Vec<_>>().join(", ")
    ))
}

/// Reads a CSV transaction log.
pub fn read_transactions<R: Read>(
    input: R,
    mapping: &ColumnMapping,
) -> Result<TransactionLog, MlError> {
    let (mut reader, headers) = open_csv(input)?;
    let find = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let required = |name: &str| {
        find(name).ok_or_else(|| missing_column(&headers, name, "; map it with a column flag"))
    };
    let (c_customer, c_date, c_amount) = (
        required(&mapping.customer)?,
        required(&mapping.date)?,
        required(&mapping.amount)?,
    );
    let c_order = mapping.order.as_deref().and_then(find);
    let c_category = mapping.category.as_deref().and_then(find);

    let mut log = TransactionLog::default();
    let mut customers: HashMap<String, usize> = HashMap::new();
    let mut baskets: HashMap<(usize, String), Basket> = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        log.rows += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                log.bad_rows.push((line, e.to_string()));
                continue;
            }
        };
        let field = |c: usize| record.get(c).unwrap_or("");
        let customer = field(c_customer);
        if customer.is_empty() {
            log.bad_rows
                .push((line, format!("empty `{}`", mapping.customer)));
            continue;
        }
        let Some(at) = parse_date(field(c_date)) else {
            log.bad_rows
                .push((line, format!("unreadable date `{}`", field(c_date))));
            continue;
        };
        let Some(amount) = parse_amount(field(c_amount)) else {
            log.bad_rows
                .push((line, format!("unreadable amount `{}`", field(c_amount))));
            continue;
        };
        let next = customers.len();
        let customer = *customers.entry(customer.to_owned()).or_insert(next);
        let basket_key = match c_order.map(field).filter(|o| !o.is_empty()) {
            Some(order) => order.to_owned(),
            None => field(c_date).to_owned(),
        };
        let basket = baskets.entry((customer, basket_key)).or_insert(Basket {
            customer,
            at,
            total: 0.0,
            categories: Vec::new(),
        });
        basket.at = basket.at.min(at);
        basket.total += amount;
        if let Some(cat) = c_category.map(field).filter(|c| !c.is_empty()) {
            basket.categories.push(cat.to_owned());
        }
        log.first = Some(log.first.map_or(at, |f| f.min(at)));
        log.last = Some(log.last.map_or(at, |l| l.max(at)));
    }

    log.histories = (0..customers.len())
        .map(|n| ProfileHistory {
            profile_id: Uuid::from_u128(n as u128 + 1),
            ..ProfileHistory::default()
        })
        .collect();
    let mut baskets: Vec<((usize, String), Basket)> = baskets.into_iter().collect();
    baskets.sort_by(|a, b| a.0.cmp(&b.0));
    for ((_, key), mut b) in baskets {
        if b.total <= 0.0 {
            log.returns_ignored += 1;
            continue;
        }
        b.categories.sort();
        b.categories.dedup();
        log.orders += 1;
        log.histories[b.customer].orders.push(OrderFact {
            order_key: format!("csv:{}:{key}", b.customer),
            placed_at: b.at,
            channel: Channel::Import,
            total: b.total,
            categories: b.categories,
        });
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_baskets_and_reports_bad_rows() {
        let csv = "Customer,When,Value,Category,Invoice\n\
                   c1,2026-01-05,100.50,Shoes,A1\n\
                   c1,2026-01-05,\"₹1,000\",Bags,A1\n\
                   c2,05/02/2026,50,,B1\n\
                   c2,not a date,10,,B2\n\
                   ,2026-01-01,10,,B3\n\
                   c3,2026-03-01,-20,,C1\n\
                   c1,2026-02-01T10:00:00Z,abc,,A2\n";
        let mapping = ColumnMapping {
            customer: "customer".into(),
            date: "when".into(),
            amount: "value".into(),
            order: Some("invoice".into()),
            ..ColumnMapping::default()
        };
        let log = read_transactions(csv.as_bytes(), &mapping).unwrap();
        assert_eq!(log.rows, 7);
        assert_eq!(
            log.bad_rows.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [5, 6, 8]
        );
        assert_eq!(log.orders, 2);
        assert_eq!(log.returns_ignored, 1);
        assert_eq!(log.histories.len(), 3);
        let c1 = &log.histories[0].orders;
        assert_eq!(c1.len(), 1);
        assert!((c1[0].total - 1_100.5).abs() < 1e-9, "{}", c1[0].total);
        assert_eq!(c1[0].categories, ["Bags", "Shoes"]);
        assert_eq!(
            log.histories[1].orders[0].placed_at,
            parse_date("2026-02-05").unwrap()
        );
    }

    #[test]
    fn missing_required_column_is_a_clear_error() {
        let err = read_transactions(
            "id,date,amount\n1,2026-01-01,5\n".as_bytes(),
            &ColumnMapping::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("customer_id") && err.contains("id, date, amount"),
            "{err}"
        );
    }

    #[test]
    fn dates_and_amounts() {
        assert_eq!(
            parse_date("2026-01-02T03:04:05+05:30"),
            parse_date("2026-01-01 21:34:05")
        );
        assert_eq!(parse_date("31/12/2025"), parse_date("2025-12-31"));
        assert!(
            parse_date("12/31/2025").is_none(),
            "month-first dates are ambiguous, refused"
        );
        assert_eq!(parse_amount(" $1,234.50 "), Some(1234.5));
        assert_eq!(parse_amount("NaN"), None);
    }
}
