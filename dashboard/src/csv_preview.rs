//! What the CSV upload page knows about a file before sending it: its header, the
//! first rows for the preview, how many data rows it holds (the denominator of the
//! progress bar), and a first guess of the column mapping.
//!
//! Parsing uses the `csv` crate, as the server's importer does, so quoted fields and
//! line breaks inside quotes are counted the same way on both sides.

use domain::api::CsvImportKind;

/// The start of a file, as the preview shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Preview {
    /// Column headers (the first record).
    pub headers: Vec<String>,
    /// The first data rows.
    pub rows: Vec<Vec<String>>,
    /// Every data row of the file (records after the header).
    pub data_rows: usize,
}

/// Why a file cannot be previewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewError(pub String);

impl std::fmt::Display for PreviewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads `bytes` (the whole file): header, the first `keep` rows, and the row count.
/// Rows with a different number of fields are counted (the importer reports them as
/// row errors), not refused here.
pub fn preview(bytes: &[u8], keep: usize) -> Result<Preview, PreviewError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| PreviewError(format!("not a CSV file: {e}")))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(PreviewError("the file has no header row".into()));
    }
    let mut out = Preview {
        headers,
        ..Preview::default()
    };
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {
                if out.rows.len() < keep {
                    out.rows.push(record.iter().map(str::to_owned).collect());
                }
                out.data_rows += 1;
            }
            Ok(false) => break,
            Err(e) => {
                // A broken row further down is the importer's to report; the preview
                // still counts it so the progress bar can reach 100 %.
                if e.is_io_error() {
                    return Err(PreviewError(e.to_string()));
                }
                out.data_rows += 1;
            }
        }
    }
    Ok(out)
}

/// A header as the importer compares it: lower case, runs of anything but letters
/// and digits as one `_`.
pub fn normalize_header(header: &str) -> String {
    let mut out = String::new();
    for c in header.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

/// The field a column most likely holds, among those of `kind`.
pub fn suggest_field(header: &str, kind: CsvImportKind) -> Option<&'static str> {
    let h = normalize_header(header);
    let synonym = match h.as_str() {
        "e_mail" | "mail" | "email_address" => "email",
        "mobile" | "mobile_number" | "phone_number" | "whatsapp" | "contact" | "msisdn" => "phone",
        "customer" | "customer_code" | "client_id" => "customer_id",
        "loyalty" | "loyalty_number" | "loyalty_card" | "member_id" => "loyalty_id",
        "full_name" | "customer_name" => "name",
        "firstname" | "given_name" => "first_name",
        "lastname" | "surname" | "family_name" => "last_name",
        "order" | "order_no" | "order_number" | "bill_no" | "bill_number" | "invoice" => "order_id",
        "date" | "order_date" | "created" | "bill_date" | "placed" => "placed_at",
        "amount" | "order_total" | "grand_total" | "bill_amount" => "total",
        "quantity" => "qty",
        "unit_price" | "line_price" => "price",
        "product" | "product_name" | "item" => "name",
        other => other,
    };
    kind.fields().iter().copied().find(|f| *f == synonym)
}

/// The `mapping` form field: a JSON object from column header to field, for the
/// columns given a field.
pub fn mapping_json(pairs: &[(String, Option<String>)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .filter_map(|(header, field)| {
            field
                .as_ref()
                .filter(|f| !f.is_empty())
                .map(|f| (header.clone(), serde_json::Value::String(f.clone())))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Progress of an import in percent: rows the server has dealt with over the rows
/// the file holds, 100 once the server says it finished.
pub fn progress_percent(processed: i64, data_rows: usize, finished: bool) -> f64 {
    if finished {
        return 100.0;
    }
    if data_rows == 0 {
        return 0.0;
    }
    // Never show 100 before the server says so.
    ((processed.max(0) as f64) * 100.0 / data_rows as f64).min(99.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_count_every_row_including_quoted_line_breaks() {
        let file = b"Name,Mobile,E-mail\n\"Asha, R\",+91 98765 43210,asha@example.com\n\"Multi\nline\",1,x\nshort\n";
        let p = preview(file, 2).unwrap();
        assert_eq!(p.headers, ["Name", "Mobile", "E-mail"]);
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0][0], "Asha, R");
        assert_eq!(p.data_rows, 3);
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert!(preview(b"", 5).is_err());
        assert_eq!(preview(b"a,b\n", 5).unwrap().data_rows, 0);
    }

    #[test]
    fn headers_suggest_fields() {
        use CsvImportKind::*;
        assert_eq!(suggest_field("E-mail", Customers), Some("email"));
        assert_eq!(suggest_field(" Mobile Number ", Customers), Some("phone"));
        assert_eq!(suggest_field("Order ID", Orders), Some("order_id"));
        assert_eq!(suggest_field("Quantity", OrderLines), Some("qty"));
        assert_eq!(suggest_field("Order ID", Customers), None);
        assert_eq!(suggest_field("Favourite colour", Customers), None);
        assert_eq!(normalize_header("  Order -- ID "), "order_id");
    }

    #[test]
    fn mapping_leaves_out_unmapped_columns() {
        let json = mapping_json(&[
            ("Mobile".into(), Some("phone".into())),
            ("Notes".into(), None),
            ("Mail".into(), Some(String::new())),
        ]);
        assert_eq!(json, r#"{"Mobile":"phone"}"#);
    }

    #[test]
    fn progress_reaches_100_only_when_finished() {
        assert_eq!(progress_percent(0, 10, false), 0.0);
        assert_eq!(progress_percent(5, 10, false), 50.0);
        assert_eq!(progress_percent(10, 10, false), 99.0);
        assert_eq!(progress_percent(10, 10, true), 100.0);
        assert_eq!(progress_percent(3, 0, false), 0.0);
    }
}
