//! Whose fault a failure is: the input's, the world's, or nobody knows. Every consumer
//! of the fleet decides with [`classify`] what to do with a failed delivery, so the
//! rule lives here once:
//!
//! - [`Fault::Transient`] — an outage, not the input: Postgres or Redis unreachable or
//!   restarting, the pool exhausted or closed, a serialization failure or deadlock, a
//!   lock or statement timeout, the server short of resources. The same input succeeds
//!   later, so the consumer keeps it, pauses and tries again without counting a delivery.
//! - [`Fault::Permanent`] — the input itself is refused: a data exception (SQLSTATE
//!   class 22, e.g. a numeric overflow), an integrity violation (class 23), a value past
//!   a program limit (class 54, e.g. an index key too long), a row or body
//!   that cannot be decoded. The same input fails the same way, so the consumer isolates
//!   it and dead-letters it with the reason, and only it.
//! - [`Fault::Unknown`] — anything else (a query bug, an unexpected reply): retried a
//!   bounded number of deliveries (`STREAM_MAX_DELIVERIES`), then dead-lettered.
//!
//! The error's source chain is searched outermost first for a `sqlx`, Postgres, Redis,
//! I/O or JSON error; wrappers that are `#[error(transparent)]` hide the error they wrap
//! from the chain but not its source (a Postgres error stays visible), which is why the
//! fleet's error types that carry a `sqlx::Error` keep it as their source.

use std::error::Error;

/// What kind of failure an error is; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An outage: retry the same input later, without counting it against the input.
    Transient,
    /// The input is refused and always will be: dead-letter it (and nothing else).
    Permanent,
    /// Neither is known: retry a bounded number of times.
    Unknown,
}

/// Classifies `err` by the first error in its source chain that says something.
pub fn classify(err: &(dyn Error + 'static)) -> Fault {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(fault) = classify_one(e) {
            return fault;
        }
        next = e.source();
    }
    Fault::Unknown
}

fn classify_one(e: &(dyn Error + 'static)) -> Option<Fault> {
    if let Some(e) = e.downcast_ref::<sqlx::Error>() {
        return classify_sqlx(e);
    }
    if let Some(e) = e.downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return Some(sqlstate(e.code()));
    }
    if let Some(e) = e.downcast_ref::<redis::RedisError>() {
        return Some(classify_redis(e));
    }
    if e.downcast_ref::<std::io::Error>().is_some() {
        return Some(Fault::Transient);
    }
    if e.downcast_ref::<serde_json::Error>().is_some() {
        return Some(Fault::Permanent);
    }
    None
}

fn classify_sqlx(e: &sqlx::Error) -> Option<Fault> {
    match e {
        sqlx::Error::Database(db) => Some(db.code().map_or(Fault::Unknown, |c| sqlstate(&c))),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(Fault::Transient),
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Encode(_) => {
            Some(Fault::Permanent)
        }
        // Whatever else sqlx reports (protocol, configuration, missing rows or
        // columns) is a bug or an unexpected answer, not the input's fault.
        _ => Some(Fault::Unknown),
    }
}

/// The fault of a Postgres SQLSTATE (Appendix A of the Postgres manual).
pub fn sqlstate(code: &str) -> Fault {
    match code {
        // serialization_failure, deadlock_detected, lock_not_available (lock_timeout),
        // query_canceled (statement_timeout, pg_cancel_backend).
        "40001" | "40P01" | "55P03" | "57014" => Fault::Transient,
        // connection exception, insufficient resources, operator intervention (admin
        // or crash shutdown, cannot connect now), system error (I/O).
        c if ["08", "53", "57", "58"]
            .iter()
            .any(|class| c.starts_with(class)) =>
        {
            Fault::Transient
        }
        // data exception, integrity constraint violation, program limit exceeded (a
        // key too long for its index).
        c if ["22", "23", "54"].iter().any(|class| c.starts_with(class)) => Fault::Permanent,
        _ => Fault::Unknown,
    }
}

fn classify_redis(e: &redis::RedisError) -> Fault {
    use redis::ErrorKind as K;
    let outage = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            K::BusyLoadingError | K::TryAgain | K::ClusterDown | K::MasterDown | K::ReadOnly
        );
    if outage {
        Fault::Transient
    } else {
        Fault::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Wrapper {
        #[error(transparent)]
        Db(#[from] sqlx::Error),
        #[error("context")]
        Context(#[source] Box<dyn Error + Send + Sync>),
    }

    #[test]
    fn sqlstates_are_sorted_into_outages_and_bad_data() {
        for code in [
            "40001", "40P01", "55P03", "57014", "57P01", "08006", "53300", "58030",
        ] {
            assert_eq!(sqlstate(code), Fault::Transient, "{code}");
        }
        for code in [
            "22003", "22P02", "22021", "23505", "23514", "23502", "54000",
        ] {
            assert_eq!(sqlstate(code), Fault::Permanent, "{code}");
        }
        for code in ["42703", "42P01", "XX000"] {
            assert_eq!(sqlstate(code), Fault::Unknown, "{code}");
        }
    }

    #[test]
    fn pool_and_io_failures_are_outages_through_wrappers() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Fault::Transient);
        assert_eq!(classify(&sqlx::Error::PoolClosed), Fault::Transient);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            classify(&Wrapper::Db(sqlx::Error::Io(io))),
            Fault::Transient
        );
        let wrapped = Wrapper::Context(Box::new(sqlx::Error::PoolClosed));
        assert_eq!(classify(&wrapped), Fault::Transient);
        let refused: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(classify(&refused), Fault::Transient);
    }

    #[test]
    fn undecodable_input_is_permanent_and_the_rest_unknown() {
        let json = serde_json::from_str::<u32>("nope").unwrap_err();
        assert_eq!(classify(&json), Fault::Permanent);
        assert_eq!(classify(&sqlx::Error::RowNotFound), Fault::Unknown);
        let plain = std::fmt::Error;
        assert_eq!(classify(&plain), Fault::Unknown);
    }
}
