//! How stream entries look on the wire and how replies are read back.
//!
//! Every entry carries the envelope JSON in one field, [`BODY_FIELD`] (`e`). Replies are
//! parsed by hand from [`redis::Value`] rather than through redis-rs's typed stream
//! replies because an entry trimmed by `MAXLEN` while still pending comes back with a
//! nil body, and that case must be seen (and dead-lettered), not silently dropped.

use redis::Value;

use crate::StreamError;

/// The field of a stream entry holding the envelope JSON.
pub const BODY_FIELD: &str = "e";

/// One entry as Redis returned it.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    /// Stream entry id (`<ms>-<seq>`).
    pub id: String,
    /// Field/value pairs; `None` when the entry was trimmed away while still pending.
    pub fields: Option<Vec<(String, Vec<u8>)>>,
}

impl RawEntry {
    /// The value of `name`, if present.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `name` as (lossy) UTF-8.
    pub fn field_str(&self, name: &str) -> Option<String> {
        self.field(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every field rendered as one JSON object, for dead-lettering an entry that has no
    /// body field.
    pub fn fields_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

fn protocol(what: &str, v: &Value) -> StreamError {
    StreamError::Protocol(format!("{what}: {v:?}"))
}

fn as_string(v: Value) -> Result<String, StreamError> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b).or_else(|e| Ok(String::from_utf8_lossy(e.as_bytes()).into_owned()))
        }
        Value::SimpleString(s) => Ok(s),
        Value::Okay => Ok("OK".into()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(protocol("expected a string", &other)),
    }
}

fn as_bytes(v: Value) -> Result<Vec<u8>, StreamError> {
    match v {
        // Moved, not copied: bodies are the bulk of every reply.
        Value::BulkString(b) => Ok(b),
        other => as_string(other).map(String::into_bytes),
    }
}

/// Parses one `[id, [field, value, ...] | nil]` entry.
fn parse_entry(v: Value) -> Result<RawEntry, StreamError> {
    let Value::Array(parts) = v else {
        return Err(protocol("expected an entry", &v));
    };
    let mut parts = parts.into_iter();
    let id = as_string(
        parts
            .next()
            .ok_or_else(|| StreamError::Protocol("entry without id".into()))?,
    )?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(Value::Array(flat)) => {
            if flat.len() % 2 != 0 {
                return Err(StreamError::Protocol(format!(
                    "entry {id} has an odd number of field items"
                )));
            }
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                fields.push((as_string(k)?, as_bytes(v)?));
            }
            Some(fields)
        }
        Some(Value::Map(pairs)) => Some(
            pairs
                .into_iter()
                .map(|(k, v)| Ok((as_string(k)?, as_bytes(v)?)))
                .collect::<Result<Vec<_>, StreamError>>()?,
        ),
        Some(other) => return Err(protocol("expected entry fields", &other)),
    };
    Ok(RawEntry { id, fields })
}

/// Parses an array of entries (`XRANGE`, `XREVRANGE`, the middle of `XAUTOCLAIM`).
pub(crate) fn parse_entries(v: Value) -> Result<Vec<RawEntry>, StreamError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(parse_entry).collect(),
        other => Err(protocol("expected a list of entries", &other)),
    }
}

/// Parses an `XREAD`/`XREADGROUP` reply for a single stream (nil on timeout).
pub(crate) fn parse_read_reply(v: Value) -> Result<Vec<RawEntry>, StreamError> {
    let per_stream: Vec<Value> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => {
                    Ok(kv.into_iter().nth(1).unwrap_or(Value::Nil))
                }
                other => Err(protocol("expected [key, entries]", &other)),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(protocol("expected a read reply", &other)),
    };
    let mut out = Vec::new();
    for entries in per_stream {
        out.extend(parse_entries(entries)?);
    }
    Ok(out)
}

/// Parses an `XAUTOCLAIM` reply: next cursor, claimed entries, ids no longer in the
/// stream (Redis has already removed those from the pending list).
pub(crate) fn parse_autoclaim_reply(
    v: Value,
) -> Result<(String, Vec<RawEntry>, Vec<String>), StreamError> {
    let Value::Array(parts) = v else {
        return Err(protocol("expected an XAUTOCLAIM reply", &v));
    };
    let mut parts = parts.into_iter();
    let cursor = as_string(
        parts
            .next()
            .ok_or_else(|| StreamError::Protocol("XAUTOCLAIM reply without cursor".into()))?,
    )?;
    let claimed = parse_entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.into_iter().map(as_string).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok((cursor, claimed, deleted))
}

/// Parses the reply of the window's take script (`crate::window::TAKE_HELD_SCRIPT`):
/// per entry its hold count, delivery count and the entry (nil body: trimmed away).
pub(crate) fn parse_held_reply(v: Value) -> Result<Vec<(u32, u64, RawEntry)>, StreamError> {
    let items = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(protocol("expected a list of held entries", &other)),
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(parts) = item else {
                return Err(protocol("expected a held entry", &item));
            };
            let [holds, count, id, fields]: [Value; 4] = parts
                .try_into()
                .map_err(|p: Vec<Value>| protocol("expected four parts", &Value::Array(p)))?;
            let number = |v: Value| match v {
                Value::Int(n) => u64::try_from(n).map_err(|_| protocol("expected a count", &v)),
                other => Err(protocol("expected a count", &other)),
            };
            let holds = u32::try_from(number(holds)?)
                .map_err(|_| StreamError::Protocol("hold count out of range".into()))?;
            let entry = parse_entry(Value::Array(vec![id, fields]))?;
            Ok((holds, number(count)?, entry))
        })
        .collect()
}

/// The millisecond timestamp part of an entry id.
pub(crate) fn id_millis(id: &str) -> Option<i64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_entries_including_trimmed_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("p:events.raw"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("e"), bulk("{}")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].field(BODY_FIELD), Some(&b"{}"[..]));
        assert!(
            entries[1].fields.is_none(),
            "trimmed entry keeps a nil body"
        );
        assert!(parse_read_reply(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn reads_autoclaim_and_rejects_garbage() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![bulk("x"), bulk("y")]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let (cursor, claimed, deleted) = parse_autoclaim_reply(reply).unwrap();
        assert_eq!(cursor, "0-0");
        assert_eq!(claimed[0].id, "5-1");
        assert_eq!(claimed[0].field(BODY_FIELD), None);
        assert_eq!(claimed[0].fields_json(), r#"{"x":"y"}"#);
        assert_eq!(deleted, vec!["4-0".to_owned()]);
        assert!(parse_read_reply(Value::Int(3)).is_err());
        assert_eq!(id_millis("1700000000000-3"), Some(1_700_000_000_000));
    }

    #[test]
    fn reads_held_entries_including_trimmed_ones() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(2),
                Value::Int(1),
                bulk("7-0"),
                Value::Array(vec![bulk("e"), bulk("{}")]),
            ]),
            Value::Array(vec![Value::Int(1), Value::Int(3), bulk("8-0"), Value::Nil]),
        ]);
        let held = parse_held_reply(reply).unwrap();
        assert_eq!((held[0].0, held[0].1, held[0].2.id.as_str()), (2, 1, "7-0"));
        assert_eq!(held[0].2.field(BODY_FIELD), Some(&b"{}"[..]));
        assert_eq!((held[1].0, held[1].1), (1, 3));
        assert!(held[1].2.fields.is_none(), "trimmed entry keeps a nil body");
        assert!(parse_held_reply(Value::Nil).unwrap().is_empty());
        assert!(parse_held_reply(Value::Array(vec![Value::Array(vec![Value::Int(1)])])).is_err());
    }
}
