//! The CSV bulk importer, shared by `ctl import csv` and the api-gateway's
//! `POST /api/v1/imports` upload.
//!
//! [`import`] streams any `AsyncRead` (a file, a multipart field) and never holds the
//! file in memory:
//!
//! 1. a `csv_imports` row is created (`running`), so progress is visible at once;
//! 2. the input is copied to a temporary file while its SHA-256 is computed: the hash
//!    keys every row, so it must be known before the first row is stored;
//! 3. the file is parsed on a blocking thread with the `csv` crate, one row at a time,
//!    through the column mapping; each row is validated on its own by the same rules the
//!    normalizer applies. Good rows become raw events keyed `csv:<sha256>:<line>`; bad
//!    rows are reported with their line number and reason in `csv_import_errors`;
//! 4. rows are written in batches of `batch_rows` (one INSERT each, duplicates skipped),
//!    progress counters are updated per batch, and new rows are published on
//!    `events.raw` (or left to the outbox relay);
//! 5. the import is marked `completed` (or `failed` with the reason).
//!
//! Re-importing the same file adds nothing: every row is a duplicate of its earlier self.
//! Order exports with one row per order line (Shopify's, most tills') are understood:
//! consecutive rows sharing an order id form one order.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use domain::Source;
use domain::api::{
    CUSTOMER_FIELDS, CsvImportKind, CsvImportRowError, CsvImportStatus, CsvImportView, CsvMapping,
    LINE_FIELDS, ORDER_LEVEL_FIELDS,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use storage::Named;
use streams::Streams;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::raw;
use crate::raw_event::NewRawEvent;
use crate::sources::admission::{self, storable_text};
use crate::sources::csv_rows::{self, KIND_CUSTOMERS, KIND_ORDERS};
use crate::sources::mapping::parse_decimal;

/// An import could not run (per-row problems are not errors: they are reported rows).
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The mapping or the header is unusable (400).
    #[error("{0}")]
    Mapping(String),
    /// The file is larger than allowed (413).
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    /// The input could not be read or is not CSV.
    #[error("reading the file: {0}")]
    Read(String),
    /// Postgres failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
}

/// Limits and context of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Region for phone numbers without a country code.
    pub region: String,
    /// Largest accepted file.
    pub max_bytes: u64,
    /// Rows per INSERT.
    pub batch_rows: usize,
}

impl ImportOptions {
    /// Options from the settings (`DEFAULT_PHONE_REGION`, `CSV_MAX_BYTES`,
    /// `CSV_BATCH_ROWS`).
    pub fn from_settings(s: &config::Settings) -> Self {
        Self {
            region: s.default_phone_region.clone(),
            max_bytes: s.ingest.csv_max_bytes,
            batch_rows: s.ingest.csv_batch_rows.max(1),
        }
    }
}

const VIEW_COLUMNS: &str = "id, kind, filename, file_sha256, mapping, status, total_rows, \
     imported_rows, duplicate_rows, error_rows, error, created_by, started_at, finished_at";

/// A `csv_imports` row.
#[derive(sqlx::FromRow)]
struct ImportRow {
    id: Uuid,
    kind: Named<CsvImportKind>,
    filename: String,
    file_sha256: Option<String>,
    mapping: sqlx::types::Json<CsvMapping>,
    status: Named<CsvImportStatus>,
    total_rows: i64,
    imported_rows: i64,
    duplicate_rows: i64,
    error_rows: i64,
    error: Option<String>,
    created_by: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<ImportRow> for CsvImportView {
    fn from(r: ImportRow) -> Self {
        CsvImportView {
            id: r.id,
            kind: r.kind.0,
            filename: r.filename,
            file_sha256: r.file_sha256,
            mapping: r.mapping.0,
            status: r.status.0,
            total_rows: r.total_rows,
            imported_rows: r.imported_rows,
            duplicate_rows: r.duplicate_rows,
            error_rows: r.error_rows,
            error: r.error,
            created_by: r.created_by,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

/// Imports a CSV file: see the module documentation. Returns the final summary; the
/// import's progress is visible in `csv_imports` while it runs. `streams` of `None`
/// leaves new rows to the outbox relay.
#[allow(clippy::too_many_arguments)]
pub async fn import<R: AsyncRead + Unpin + Send>(
    db: &PgPool,
    streams: Option<&Streams>,
    reader: R,
    kind: CsvImportKind,
    mapping: &CsvMapping,
    filename: &str,
    actor: &str,
    opts: &ImportOptions,
) -> Result<CsvImportView, CsvError> {
    let id = Uuid::now_v7();
    if admission::has_nul(&serde_json::to_value(mapping).unwrap_or_default()) {
        return Err(CsvError::Mapping(
            "the mapping contains a U+0000 character".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO csv_imports (id, kind, filename, mapping, status, created_by) \
         VALUES ($1, $2, $3, $4, 'running', $5)",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(storable_text(filename))
    .bind(sqlx::types::Json(mapping))
    .bind(storable_text(actor))
    .execute(db)
    .await?;
    match run(db, streams, id, reader, kind, mapping, opts).await {
        Ok(()) => {}
        Err(e) => {
            sqlx::query(
                "UPDATE csv_imports SET status = 'failed', error = $2, finished_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(storable_text(&e.to_string()))
            .execute(db)
            .await?;
            return Err(e);
        }
    }
    sqlx::query("UPDATE csv_imports SET status = 'completed', finished_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(summary(db, id).await?.expect("the import row exists"))
}

/// An import and its progress.
pub async fn summary(db: &PgPool, id: Uuid) -> Result<Option<CsvImportView>, sqlx::Error> {
    let row: Option<ImportRow> = sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM csv_imports WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(CsvImportView::from))
}

/// At most `limit` imports started before `before` (a `(started_at, id)` keyset
/// position), newest first.
pub async fn list(
    db: &PgPool,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<CsvImportView>, sqlx::Error> {
    let (at, id) = before.unzip();
    let rows: Vec<ImportRow> = sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM csv_imports \
         WHERE $1::timestamptz IS NULL OR (started_at, id) < ($1, $2) \
         ORDER BY started_at DESC, id DESC LIMIT $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(CsvImportView::from).collect())
}

/// Rejected rows of an import after line `after_line`, in line order.
pub async fn row_errors(
    db: &PgPool,
    id: Uuid,
    after_line: i64,
    limit: i64,
) -> Result<Vec<CsvImportRowError>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT line, reason FROM csv_import_errors WHERE import_id = $1 AND line > $2 \
         ORDER BY line LIMIT $3",
    )
    .bind(id)
    .bind(after_line)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(line, reason)| CsvImportRowError { line, reason })
        .collect())
}

/// A parsed unit handed from the parser thread to the writer.
enum Item {
    /// A raw event standing for `rows` rows of the file.
    Event { event: NewRawEvent, rows: i64 },
    /// A rejected row.
    Bad(CsvImportRowError),
}

async fn run<R: AsyncRead + Unpin + Send>(
    db: &PgPool,
    streams: Option<&Streams>,
    id: Uuid,
    reader: R,
    kind: CsvImportKind,
    mapping: &CsvMapping,
    opts: &ImportOptions,
) -> Result<(), CsvError> {
    let (file, sha) = spool(reader, opts.max_bytes).await?;
    sqlx::query("UPDATE csv_imports SET file_sha256 = $2 WHERE id = $1")
        .bind(id)
        .bind(&sha)
        .execute(db)
        .await?;

    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(4);
    let parser = {
        let mapping = mapping.clone();
        let opts = opts.clone();
        let sha = sha.clone();
        tokio::task::spawn_blocking(move || {
            let path: PathBuf = file.path().to_owned();
            let mut send = |chunk: Vec<Item>| {
                tx.blocking_send(chunk)
                    .map_err(|_| CsvError::Read("the writer stopped".into()))
            };
            let opened = std::fs::File::open(&path).map_err(|e| CsvError::Read(e.to_string()));
            let result = opened.and_then(|f| parse(f, kind, &mapping, &opts, id, &sha, &mut send));
            drop(file);
            result
        })
    };
    let mut write_error = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = write_chunk(db, streams, id, chunk).await {
            write_error = Some(e);
            break;
        }
    }
    drop(rx);
    let parsed = parser
        .await
        .map_err(|e| CsvError::Read(format!("the parser stopped: {e}")))?;
    if let Some(e) = write_error {
        return Err(e);
    }
    parsed
}

/// Copies the input to a temporary file, hashing it on the way.
async fn spool<R: AsyncRead + Unpin + Send>(
    mut reader: R,
    max_bytes: u64,
) -> Result<(tempfile::NamedTempFile, String), CsvError> {
    let read_err = |e: std::io::Error| CsvError::Read(e.to_string());
    let mut file = tempfile::NamedTempFile::new().map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = reader.read(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return Err(CsvError::TooLarge(max_bytes));
        }
        hasher.update(&buf[..n]);
        // Small synchronous writes to a local temporary file; the 64 KB chunking keeps
        // each one short.
        file.write_all(&buf[..n]).map_err(read_err)?;
    }
    file.flush().map_err(read_err)?;
    Ok((file, hex::encode(hasher.finalize())))
}

async fn write_chunk(
    db: &PgPool,
    streams: Option<&Streams>,
    id: Uuid,
    chunk: Vec<Item>,
) -> Result<(), CsvError> {
    let mut events = Vec::new();
    let mut weights = Vec::new();
    let mut bad = Vec::new();
    for item in chunk {
        match item {
            Item::Event { event, rows } => {
                events.push(event);
                weights.push(rows);
            }
            Item::Bad(e) => bad.push(e),
        }
    }
    let outcomes = raw::insert_batch(db, &events).await?;
    let (mut imported, mut duplicates) = (0i64, 0i64);
    for (o, rows) in outcomes.iter().zip(&weights) {
        if o.duplicate {
            duplicates += rows;
        } else {
            imported += rows;
        }
    }
    if !bad.is_empty() {
        let lines: Vec<i64> = bad.iter().map(|e| e.line).collect();
        let reasons: Vec<std::borrow::Cow<'_, str>> =
            bad.iter().map(|e| storable_text(&e.reason)).collect();
        sqlx::query(
            "INSERT INTO csv_import_errors (import_id, line, reason) \
             SELECT $1, * FROM UNNEST($2::int8[], $3::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&lines)
        .bind(&reasons)
        .execute(db)
        .await?;
    }
    let errors = bad.len() as i64;
    sqlx::query(
        "UPDATE csv_imports SET total_rows = total_rows + $2, imported_rows = imported_rows + $3, \
             duplicate_rows = duplicate_rows + $4, error_rows = error_rows + $5 WHERE id = $1",
    )
    .bind(id)
    .bind(imported + duplicates + errors)
    .bind(imported)
    .bind(duplicates)
    .bind(errors)
    .execute(db)
    .await?;
    if let Some(streams) = streams {
        let fresh: Vec<NewRawEvent> = events
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, o)| !o.duplicate)
            .map(|(e, _)| e)
            .collect();
        raw::publish_stored(streams, db, &fresh).await;
    }
    Ok(())
}

/// Header text as a field name: lower case, runs of anything but letters and digits
/// as one `_`.
fn field_name(header: &str) -> String {
    let mut out = String::new();
    for c in header.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// Field name → column index, checked against the kind's needs.
fn resolve(
    kind: CsvImportKind,
    mapping: &CsvMapping,
    headers: &csv::StringRecord,
) -> Result<BTreeMap<&'static str, usize>, CsvError> {
    let fields = kind.fields();
    for field in mapping.columns.keys() {
        if !fields.contains(&field.as_str()) {
            return Err(CsvError::Mapping(format!(
                "unknown field `{field}` for a {} import (fields: {})",
                kind.as_str(),
                fields.join(", ")
            )));
        }
    }
    let mut resolved = BTreeMap::new();
    for &field in fields {
        let index = match mapping.columns.get(field) {
            Some(column) => Some(
                headers
                    .iter()
                    .position(|h| h.trim() == column.trim())
                    .ok_or_else(|| {
                        CsvError::Mapping(format!(
                            "column `{column}` (for `{field}`) is not in the header"
                        ))
                    })?,
            ),
            None => headers.iter().position(|h| field_name(h) == field),
        };
        if let Some(i) = index {
            resolved.insert(field, i);
        }
    }
    let has = |f: &str| resolved.contains_key(f);
    let missing = |what: &str| {
        Err(CsvError::Mapping(format!(
            "{} import needs {what}",
            kind.as_str()
        )))
    };
    match kind {
        CsvImportKind::Customers => {
            if !["email", "phone", "customer_id", "loyalty_id"]
                .iter()
                .any(|f| has(f))
            {
                return missing("an email, phone, customer_id or loyalty_id column");
            }
        }
        CsvImportKind::Orders | CsvImportKind::OrderLines => {
            for f in ["order_id", "placed_at"] {
                if !has(f) {
                    return missing(&format!("a `{f}` column"));
                }
            }
            if !has("currency") && mapping.default_currency.is_none() {
                return missing("a `currency` column or a default currency");
            }
            if kind == CsvImportKind::OrderLines && !(has("sku") && has("price")) {
                return missing("`sku` and `price` columns");
            }
            if !has("total") && !has("price") {
                return missing("a `total` column or line `price` columns");
            }
        }
    }
    Ok(resolved)
}

/// Reads mapped fields of one row; blank cells are left out.
fn pick(
    row: &csv::StringRecord,
    columns: &BTreeMap<&'static str, usize>,
    fields: &[&str],
) -> Map<String, Value> {
    let mut out = Map::new();
    for &f in fields {
        if let Some(v) = columns
            .get(f)
            .and_then(|&i| row.get(i))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            out.insert(f.to_owned(), Value::String(v.to_owned()));
        }
    }
    out
}

/// Namespaces a bare customer id (`123` → `csv:123`).
fn namespace_customer_id(record: &mut Map<String, Value>, namespace: &str) {
    if let Some(Value::String(id)) = record.get_mut("customer_id")
        && !id.contains(':')
    {
        *id = format!("{namespace}:{id}");
    }
}

struct Parser<'a> {
    kind: CsvImportKind,
    columns: BTreeMap<&'static str, usize>,
    mapping: &'a CsvMapping,
    opts: &'a ImportOptions,
    import_id: Uuid,
    sha: &'a str,
    out: Vec<Item>,
    sink: &'a mut dyn FnMut(Vec<Item>) -> Result<(), CsvError>,
    group: Option<OrderGroup>,
}

/// Consecutive rows of one order.
struct OrderGroup {
    order_id: String,
    order: Map<String, Value>,
    items: Vec<Value>,
    lines: Vec<i64>,
    /// The first bad line of the group and its reason.
    bad: Option<(i64, String)>,
}

const MAX_LINES_PER_ORDER: usize = 10_000;

impl Parser<'_> {
    fn emit(&mut self, item: Item) -> Result<(), CsvError> {
        self.out.push(item);
        if self.out.len() >= self.opts.batch_rows {
            let chunk = std::mem::take(&mut self.out);
            (self.sink)(chunk)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CsvError> {
        if !self.out.is_empty() {
            let chunk = std::mem::take(&mut self.out);
            (self.sink)(chunk)?;
        }
        Ok(())
    }

    fn event(&self, kind: &str, key_line: i64, body: Value) -> Result<NewRawEvent, String> {
        let mut ev = NewRawEvent::new(
            None,
            Source::Csv,
            format!("{}:{key_line}", self.sha),
            kind,
            body,
        );
        // The mapping and every limit of what can be stored, as ingest's edge checks.
        let normalized = admission::admit(&ev, "invalid_row").map_err(|r| r.to_string())?;
        ev.occurred_at = normalized
            .event
            .as_ref()
            .filter(|_| kind == KIND_ORDERS)
            .map(|e| e.occurred_at);
        Ok(ev)
    }

    fn customer_row(&mut self, line: i64, row: &csv::StringRecord) -> Result<(), CsvError> {
        let mut record = pick(row, &self.columns, &CUSTOMER_FIELDS);
        namespace_customer_id(&mut record, self.namespace());
        let checked = csv_rows::check_customer(&record, &self.opts.region).and_then(|()| {
            let body =
                serde_json::json!({"import_id": self.import_id, "line": line, "record": record});
            self.event(KIND_CUSTOMERS, line, body)
        });
        match checked {
            Ok(event) => self.emit(Item::Event { event, rows: 1 }),
            Err(reason) => self.emit(Item::Bad(CsvImportRowError { line, reason })),
        }
    }

    fn namespace(&self) -> &str {
        self.mapping
            .customer_id_namespace
            .as_deref()
            .unwrap_or("csv")
    }

    fn order_row(&mut self, line: i64, row: &csv::StringRecord) -> Result<(), CsvError> {
        let mut order = pick(row, &self.columns, &ORDER_LEVEL_FIELDS);
        let item = pick(row, &self.columns, &LINE_FIELDS);
        let Some(order_id) = order
            .get("order_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            self.finish_group()?;
            return self.emit(Item::Bad(CsvImportRowError {
                line,
                reason: "missing `order_id`".into(),
            }));
        };
        if self.group.as_ref().is_some_and(|g| g.order_id != order_id) {
            self.finish_group()?;
        }
        let line_problem = line_problem(self.kind, &item);
        let group = self.group.get_or_insert_with(|| {
            if let Some(default) = &self.mapping.default_currency {
                order
                    .entry("currency")
                    .or_insert_with(|| Value::String(default.clone()));
            }
            namespace_customer_id(
                &mut order,
                self.mapping
                    .customer_id_namespace
                    .as_deref()
                    .unwrap_or("csv"),
            );
            OrderGroup {
                order_id,
                order,
                items: Vec::new(),
                lines: Vec::new(),
                bad: None,
            }
        });
        group.lines.push(line);
        if let Some(reason) = line_problem {
            group.bad.get_or_insert((line, reason));
        } else if !item.is_empty() {
            group.items.push(Value::Object(item));
        }
        if group.lines.len() > MAX_LINES_PER_ORDER {
            group.bad.get_or_insert((
                line,
                format!("more than {MAX_LINES_PER_ORDER} lines in one order"),
            ));
        }
        Ok(())
    }

    fn finish_group(&mut self) -> Result<(), CsvError> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        let first = group.lines[0];
        let verdict = match group.bad {
            Some(bad) => Err(bad),
            None => {
                let body = serde_json::json!({
                    "import_id": self.import_id,
                    "lines": group.lines,
                    "order": group.order,
                    "items": group.items,
                });
                self.event(KIND_ORDERS, first, body)
                    .map_err(|reason| (first, reason))
            }
        };
        match verdict {
            Ok(event) => self.emit(Item::Event {
                event,
                rows: group.lines.len() as i64,
            }),
            Err((bad_line, reason)) => {
                for &line in &group.lines {
                    let reason = if line == bad_line {
                        reason.clone()
                    } else {
                        format!(
                            "order `{}` rejected: line {bad_line} is invalid",
                            group.order_id
                        )
                    };
                    self.emit(Item::Bad(CsvImportRowError { line, reason }))?;
                }
                Ok(())
            }
        }
    }
}

/// Why an order line cannot be used, if it cannot.
fn line_problem(kind: CsvImportKind, item: &Map<String, Value>) -> Option<String> {
    let get = |f: &str| item.get(f).and_then(Value::as_str);
    if item.is_empty() {
        return (kind == CsvImportKind::OrderLines).then(|| "missing `sku` and `price`".to_owned());
    }
    if get("sku").is_none() {
        return Some("an order line without `sku`".into());
    }
    match get("price") {
        None => return Some("an order line without `price`".into()),
        Some(p) if parse_decimal(p).is_none() => {
            return Some(format!("`price` {p} is not a number"));
        }
        _ => {}
    }
    if let Some(q) = get("qty") {
        let whole = parse_decimal(q)
            .is_some_and(|d| d.fract().is_zero() && d >= rust_decimal::Decimal::ZERO);
        if !whole {
            return Some(format!("`qty` {q} is not a whole number"));
        }
    }
    None
}

/// Parses a whole CSV input into raw events and rejected rows, without storing
/// anything: the same rows [`import`] would write, all in memory, so only for small
/// inputs (previews, tests). `sha` is the file hash the rows are keyed by.
pub fn parse_all<R: std::io::Read>(
    input: R,
    kind: CsvImportKind,
    mapping: &CsvMapping,
    opts: &ImportOptions,
    import_id: Uuid,
    sha: &str,
) -> Result<(Vec<NewRawEvent>, Vec<CsvImportRowError>), CsvError> {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut collect = |chunk: Vec<Item>| {
        for item in chunk {
            match item {
                Item::Event { event, .. } => events.push(event),
                Item::Bad(e) => errors.push(e),
            }
        }
        Ok(())
    };
    parse(input, kind, mapping, opts, import_id, sha, &mut collect)?;
    Ok((events, errors))
}

fn parse<R: std::io::Read>(
    input: R,
    kind: CsvImportKind,
    mapping: &CsvMapping,
    opts: &ImportOptions,
    import_id: Uuid,
    sha: &str,
    sink: &mut dyn FnMut(Vec<Item>) -> Result<(), CsvError>,
) -> Result<(), CsvError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| CsvError::Read(format!("the header: {e}")))?
        .clone();
    let columns = resolve(kind, mapping, &headers)?;
    let mut parser = Parser {
        kind,
        columns,
        mapping,
        opts,
        import_id,
        sha,
        out: Vec::with_capacity(opts.batch_rows),
        sink,
        group: None,
    };
    let mut row = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as i64;
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                let line = row.position().map_or(line, |p| p.line() as i64);
                if row.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                if row.iter().any(|c| c.contains('\0')) {
                    // Postgres text cannot hold U+0000: the row is refused, and its
                    // order with it, without echoing the cell.
                    parser.finish_group()?;
                    parser.emit(Item::Bad(CsvImportRowError {
                        line,
                        reason: "a cell contains a U+0000 character, which cannot be stored".into(),
                    }))?;
                    continue;
                }
                match kind {
                    CsvImportKind::Customers => parser.customer_row(line, &row)?,
                    CsvImportKind::Orders | CsvImportKind::OrderLines => {
                        parser.order_row(line, &row)?
                    }
                }
            }
            // A row the csv crate cannot read (bad UTF-8, broken quoting) is a bad row;
            // the reader carries on with the next record.
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line() as i64);
                parser.finish_group()?;
                parser.emit(Item::Bad(CsvImportRowError {
                    line,
                    reason: format!("unreadable row: {}", e.kind_description()),
                }))?;
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(CsvError::Read(e.to_string()));
                }
            }
        }
    }
    parser.finish_group()?;
    parser.flush()
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for csv::Error {
    fn kind_description(&self) -> String {
        match self.kind() {
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
            csv::ErrorKind::UnequalLengths { .. } => "wrong number of fields".into(),
            _ => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_field_names() {
        assert_eq!(field_name(" Order ID "), "order_id");
        assert_eq!(field_name("E-mail"), "e_mail");
        assert_eq!(field_name("Placed At (UTC)"), "placed_at_utc");
        assert_eq!(field_name("email"), "email");
    }

    #[test]
    fn resolve_checks_the_kind_needs() {
        let headers = csv::StringRecord::from(vec!["Order ID", "Placed At", "Total"]);
        let err = resolve(CsvImportKind::Orders, &CsvMapping::default(), &headers).unwrap_err();
        assert!(err.to_string().contains("currency"), "{err}");
        let m = CsvMapping {
            default_currency: Some("INR".into()),
            ..Default::default()
        };
        let cols = resolve(CsvImportKind::Orders, &m, &headers).unwrap();
        assert_eq!(cols["order_id"], 0);
        let bad = CsvMapping::parse_pairs("email=Nope").unwrap();
        assert!(resolve(CsvImportKind::Customers, &bad, &headers).is_err());
    }
}
