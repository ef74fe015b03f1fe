//! How numbers, money, times and names read on screen.
//!
//! Pure functions (the clock is passed in), so they are unit-tested on the host; the
//! one exception is [`now`], which asks the browser because `chrono`'s clock is not
//! available on `wasm32-unknown-unknown`.

use chrono::{DateTime, Duration, Utc};
use domain::{Channel, IdentifierKind};
use rust_decimal::Decimal;

/// The current time, from the browser's clock.
pub fn now() -> DateTime<Utc> {
    #[cfg(target_arch = "wasm32")]
    let millis = js_sys::Date::now() as i64;
    #[cfg(not(target_arch = "wasm32"))]
    let millis = Utc::now().timestamp_millis();
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// `1234567` → `1,234,567`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Short form for chart axes: `950`, `1.2k`, `3.4M`.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "B")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if suffix.is_empty() && a > 0.0 && a < 1.0 {
        // Two significant digits, so small rates (0.0042 events a minute) do not all
        // read "0.0".
        let decimals = (1.0 - a.log10().floor()).max(1.0) as usize;
        let text = format!("{scaled:.decimals$}");
        let text = text.trim_end_matches('0');
        text.trim_end_matches('.').to_owned()
    } else if suffix.is_empty() && scaled.fract().abs() > 1e-9 && a < 10.0 {
        format!("{scaled:.1}")
    } else if suffix.is_empty() {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 100.0 || scaled.fract().abs() < 0.05 {
        format!("{scaled:.0}{suffix}")
    } else {
        format!("{scaled:.1}{suffix}")
    }
}

/// The symbol shown before an amount in `currency`, or the code and a space.
fn currency_prefix(currency: &str) -> String {
    match currency {
        "INR" => "₹".into(),
        "USD" => "$".into(),
        "EUR" => "€".into(),
        "GBP" => "£".into(),
        "JPY" => "¥".into(),
        "" => String::new(),
        other => format!("{other} "),
    }
}

/// Longest figure a KPI card shows in full; longer ones are abbreviated (with the exact
/// value on hover), so a card never wraps a number across two lines.
pub const KPI_MAX_CHARS: usize = 10;

/// A KPI figure: `exact` when it fits a card, otherwise `amount` abbreviated to three
/// significant digits with the currency's symbol (`₹5.95M`).
pub fn kpi_figure(exact: &str, amount: f64, currency: Option<&str>) -> String {
    if exact.chars().count() <= KPI_MAX_CHARS {
        return exact.to_owned();
    }
    let a = amount.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (amount / 1e9, "B")
    } else if a >= 1e6 {
        (amount / 1e6, "M")
    } else {
        (amount / 1e3, "k")
    };
    let decimals = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!(
        "{}{scaled:.decimals$}{suffix}",
        currency_prefix(currency.unwrap_or(""))
    )
}

/// A count as a KPI figure (see [`kpi_figure`]).
pub fn kpi_count(n: i64) -> String {
    kpi_figure(&count(n), n as f64, None)
}

/// `1234.5` in `INR` → `₹1,234.50`.
pub fn money(amount: Decimal, currency: Option<&str>) -> String {
    let rounded = amount.round_dp(2);
    let negative = rounded.is_sign_negative() && !rounded.is_zero();
    let abs = rounded.abs();
    let whole = abs.trunc();
    let cents = ((abs - whole) * Decimal::ONE_HUNDRED).trunc();
    let whole: i64 = whole.to_string().parse().unwrap_or(i64::MAX);
    let cents: i64 = cents.to_string().parse().unwrap_or(0);
    format!(
        "{}{}{}.{cents:02}",
        if negative { "-" } else { "" },
        currency_prefix(currency.unwrap_or("")),
        count(whole)
    )
}

/// A probability as a whole percentage: `0.734` → `73 %`.
pub fn percent(p: f64) -> String {
    format!("{:.0} %", (p * 100.0).clamp(0.0, 100.0))
}

/// `2026-11-27 18:52 UTC`.
pub fn datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `2026-11-27`.
pub fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// An optional time, or a dash.
pub fn maybe_datetime(t: Option<DateTime<Utc>>) -> String {
    t.map(datetime).unwrap_or_else(|| "—".into())
}

/// How long ago `t` was, seen at `now`: `just now`, `5 min ago`, `3 h ago`,
/// `12 days ago`, then the date.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - t;
    if d < Duration::seconds(45) {
        "just now".into()
    } else if d < Duration::minutes(60) {
        format!("{} min ago", (d.num_seconds() + 30) / 60)
    } else if d < Duration::hours(24) {
        format!("{} h ago", d.num_hours())
    } else if d < Duration::days(60) {
        let days = d.num_days();
        format!("{days} day{} ago", if days == 1 { "" } else { "s" })
    } else {
        date(t)
    }
}

/// A period of the overview's selector: its query value, label and length.
pub const PERIODS: [(&str, &str, i64); 4] = [
    ("24h", "Last 24 hours", 1),
    ("7d", "Last 7 days", 7),
    ("30d", "Last 30 days", 30),
    ("90d", "Last 90 days", 90),
];

/// The length of a period value (`7d`), defaulting to 30 days.
pub fn period_days(value: &str) -> i64 {
    PERIODS
        .iter()
        .find(|(v, _, _)| *v == value)
        .map(|(_, _, d)| *d)
        .unwrap_or(30)
}

/// How people call an identifier kind.
pub fn identifier_kind(kind: IdentifierKind) -> &'static str {
    match kind {
        IdentifierKind::Email => "E-mail",
        IdentifierKind::Phone => "Phone",
        IdentifierKind::CustomerId => "Customer id",
        IdentifierKind::LoyaltyId => "Loyalty id",
        IdentifierKind::PosCustomer => "Store customer code",
        IdentifierKind::DeviceId => "Device id",
        IdentifierKind::CookieId => "Cookie id",
    }
}

/// How people call a channel.
pub fn channel(c: Channel) -> &'static str {
    match c {
        Channel::Web => "Web",
        Channel::Pos => "Store POS",
        Channel::Whatsapp => "WhatsApp",
        Channel::Store => "Store visit",
        Channel::Import => "Import",
        Channel::Api => "API",
    }
}

/// `order_placed` → `Order placed`.
pub fn humanize(snake: &str) -> String {
    let mut out = snake.replace(['_', '.'], " ");
    if let Some(first) = out.get(0..1) {
        let upper = first.to_uppercase();
        out.replace_range(0..1, &upper);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-12345), "-12,345");
    }

    #[test]
    fn kpi_figures_fit_a_card() {
        assert_eq!(
            kpi_figure("₹95,068.20", 95_068.2, Some("INR")),
            "₹95,068.20"
        );
        assert_eq!(
            kpi_figure("₹5,950,688.20", 5_950_688.2, Some("INR")),
            "₹5.95M"
        );
        assert_eq!(
            kpi_figure("₹59,506,882.00", 59_506_882.0, Some("INR")),
            "₹59.5M"
        );
        assert_eq!(kpi_figure("₹595,068.20", 595_068.2, Some("INR")), "₹595k");
        assert_eq!(kpi_figure("12,345,678", 12_345_678.0, None), "12,345,678");
        assert_eq!(kpi_figure("123,456,789", 123_456_789.0, None), "123M");
        assert!(
            kpi_figure("₹1,234,567,890.00", 1_234_567_890.0, Some("INR"))
                .chars()
                .count()
                <= KPI_MAX_CHARS
        );
    }

    #[test]
    fn compact_numbers_for_axes() {
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(2.5), "2.5");
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(0.5), "0.5");
        assert_eq!(compact(0.0042), "0.0042");
        assert_eq!(compact(0.00125), "0.0013");
        assert_eq!(compact(1200.0), "1.2k");
        assert_eq!(compact(40000.0), "40k");
        assert_eq!(compact(3_400_000.0), "3.4M");
    }

    #[test]
    fn money_keeps_cents_and_currency() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(money(d("1234.5"), Some("INR")), "₹1,234.50");
        assert_eq!(money(d("0"), Some("USD")), "$0.00");
        assert_eq!(money(d("-10.005"), Some("EUR")), "-€10.00");
        assert_eq!(money(d("7.1"), Some("AED")), "AED 7.10");
        assert_eq!(money(d("99.999"), None), "100.00");
    }

    #[test]
    fn relative_times() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        assert_eq!(ago(now - Duration::seconds(10), now), "just now");
        assert_eq!(ago(now - Duration::minutes(5), now), "5 min ago");
        assert_eq!(ago(now - Duration::hours(3), now), "3 h ago");
        assert_eq!(ago(now - Duration::days(1), now), "1 day ago");
        assert_eq!(ago(now - Duration::days(12), now), "12 days ago");
        assert_eq!(ago(now - Duration::days(400), now), "2025-10-23");
    }

    #[test]
    fn periods_and_names() {
        assert_eq!(period_days("7d"), 7);
        assert_eq!(period_days("nonsense"), 30);
        assert_eq!(humanize("order_placed"), "Order placed");
        assert_eq!(humanize("events.raw"), "Events raw");
        assert_eq!(percent(0.734), "73 %");
        assert_eq!(percent(1.7), "100 %");
    }
}
