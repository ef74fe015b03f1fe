//! The `audiences` rows and their membership.
//!
//! - Saving an audience validates its rule, checks that every audience it refers to
//!   exists and that no reference cycle forms (under one transaction-scoped advisory
//!   lock, so two concurrent saves cannot close a cycle between them).
//! - [`recompute`] brings one audience's membership in line with its compiled rule in
//!   one statement (members query, exits, entries, change log), holding the audience's
//!   row lock so live updates of it wait. [`recompute_all`] does every audience in
//!   dependency order (an audience after those its rule refers to).
//! - [`evaluate_profile`] re-judges one profile against every audience with the
//!   in-memory evaluator (live updates), in dependency order, so a change that moves
//!   the profile into audience A also counts for an audience defined as "in A".
//!
//! Membership changes are written once: `audience_membership.current` flips only when
//! the judgement differs, and each flip is one `audience_membership_change` row. Live
//! evaluations of one profile are serialised by an advisory lock on the profile.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use domain::api::{AudienceMemberView, AudienceRequest, AudienceView};
use domain::audience::{Rule, RuleError};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use crate::facts::{self, EventScope};
use crate::sql;

/// Namespace of the two-key advisory locks this module takes (audience graph, profile).
const LOCK_NAMESPACE: i32 = 0x4155_4449; // "AUDI"
/// Second key of the lock that serialises changes to the audience graph.
const GRAPH_LOCK: i32 = 0;
/// Longest audience name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 2000;

/// Why an audience operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    /// The rule is invalid (where and why).
    #[error("invalid rule: {0}")]
    Rule(#[from] RuleError),
    /// A name or description is out of bounds, or a referenced audience does not exist.
    #[error("{0}")]
    Invalid(String),
    /// The rule would make audiences refer to each other in a circle.
    #[error("audience references form a cycle through {0}")]
    Cycle(String),
    /// No audience has this id.
    #[error("no audience {0}")]
    NotFound(Uuid),
    /// Another audience already has this name.
    #[error("an audience named {0:?} already exists")]
    NameTaken(String),
    /// Other audiences refer to this one; it cannot be deleted.
    #[error("audience is used by {0}")]
    InUse(String),
    /// Postgres failed. (Its source is the `sqlx::Error` itself, so consumers can tell
    /// an outage from bad data: see `storage::fault`.)
    #[error("{0}")]
    Database(#[from] sqlx::Error),
}

/// Entered or exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Became a member.
    Entered,
    /// Stopped being a member.
    Exited,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Entered => "entered",
            Change::Exited => "exited",
        }
    }
}

/// One profile entering or leaving one audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    /// The audience.
    pub audience_id: Uuid,
    /// The profile.
    pub profile_id: Uuid,
    /// Entered or exited.
    pub change: Change,
}

/// A rule's size and a sample of its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// Number of live profiles matching.
    pub size: i64,
    /// Up to the requested number of their ids, smallest first.
    pub sample: Vec<Uuid>,
}

/// What a full recompute changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recomputed {
    /// Profiles that entered.
    pub entered: i64,
    /// Profiles that exited.
    pub exited: i64,
    /// Members afterwards.
    pub members: i64,
}

type AudienceRow = (
    Uuid,
    String,
    String,
    Json<Rule>,
    i64,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    i64,
);

const COLUMNS: &str = "id, name, description, rule, version, created_by, created_at, \
                       updated_at, recomputed_at, member_count";

fn audience(row: AudienceRow) -> AudienceView {
    let (
        id,
        name,
        description,
        rule,
        version,
        created_by,
        created_at,
        updated_at,
        recomputed_at,
        member_count,
    ) = row;
    AudienceView {
        id,
        name,
        description,
        rule: rule.0,
        version,
        created_by,
        created_at,
        updated_at,
        recomputed_at,
        member_count,
    }
}

/// Every audience, by name.
pub async fn list(db: &PgPool) -> Result<Vec<AudienceView>, AudienceError> {
    let rows: Vec<AudienceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audiences ORDER BY name, id"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(audience).collect())
}

/// A page of audiences by id (creation order), after `after`.
pub async fn page(
    db: &PgPool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AudienceView>, AudienceError> {
    let rows: Vec<AudienceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audiences WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(audience).collect())
}

/// One audience.
pub async fn get(db: &PgPool, id: Uuid) -> Result<AudienceView, AudienceError> {
    let row: Option<AudienceRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM audiences WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?;
    row.map(audience).ok_or(AudienceError::NotFound(id))
}

/// Creates an audience (its members come with the first recompute).
pub async fn create(
    db: &PgPool,
    draft: &AudienceRequest,
    actor: &str,
) -> Result<AudienceView, AudienceError> {
    let draft = checked(draft)?;
    let id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    check_graph(&mut tx, id, &draft.rule).await?;
    let row: AudienceRow = sqlx::query_as(&format!(
        "INSERT INTO audiences (id, name, description, rule, created_by) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&draft.name)
    .bind(&draft.description)
    .bind(Json(&draft.rule))
    .bind(actor)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| name_taken(e, &draft.name))?;
    tx.commit().await?;
    Ok(audience(row))
}

/// Changes an audience's name, description and rule.
pub async fn update(
    db: &PgPool,
    id: Uuid,
    draft: &AudienceRequest,
) -> Result<AudienceView, AudienceError> {
    let draft = checked(draft)?;
    let mut tx = db.begin().await?;
    check_graph(&mut tx, id, &draft.rule).await?;
    let row: Option<AudienceRow> = sqlx::query_as(&format!(
        "UPDATE audiences SET name = $2, description = $3, rule = $4, version = version + 1, \
         updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&draft.name)
    .bind(&draft.description)
    .bind(Json(&draft.rule))
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| name_taken(e, &draft.name))?;
    let row = row.ok_or(AudienceError::NotFound(id))?;
    tx.commit().await?;
    Ok(audience(row))
}

/// Deletes an audience with its membership and history; refused while another
/// audience's rule refers to it.
pub async fn delete(db: &PgPool, id: Uuid) -> Result<(), AudienceError> {
    let mut tx = db.begin().await?;
    lock_graph(&mut tx).await?;
    let graph = load_graph(&mut tx).await?;
    let users: Vec<String> = graph
        .iter()
        .filter(|(other, (_, refs))| **other != id && refs.contains(&id))
        .map(|(_, (name, _))| format!("{name:?}"))
        .collect();
    if !users.is_empty() {
        return Err(AudienceError::InUse(users.join(", ")));
    }
    let deleted = sqlx::query("DELETE FROM audiences WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(AudienceError::NotFound(id));
    }
    tx.commit().await?;
    Ok(())
}

fn checked(draft: &AudienceRequest) -> Result<AudienceRequest, AudienceError> {
    let name = draft.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.contains('\0') {
        return Err(AudienceError::Invalid(format!(
            "name must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if draft.description.chars().count() > MAX_DESCRIPTION_LEN || draft.description.contains('\0') {
        return Err(AudienceError::Invalid(format!(
            "description must be at most {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    draft.rule.validate()?;
    Ok(AudienceRequest {
        name,
        description: draft.description.clone(),
        rule: draft.rule.clone(),
    })
}

fn name_taken(e: sqlx::Error, name: &str) -> AudienceError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            AudienceError::NameTaken(name.to_owned())
        }
        _ => AudienceError::Database(e),
    }
}

async fn lock_graph(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_NAMESPACE)
        .bind(GRAPH_LOCK)
        .execute(tx)
        .await?;
    Ok(())
}

/// Every audience's name and the audiences its rule refers to.
type Graph = BTreeMap<Uuid, (String, BTreeSet<Uuid>)>;

async fn load_graph(tx: &mut PgConnection) -> Result<Graph, sqlx::Error> {
    let rows: Vec<(Uuid, String, Json<Rule>)> =
        sqlx::query_as("SELECT id, name, rule FROM audiences")
            .fetch_all(tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, rule)| (id, (name, rule.0.referenced_audiences())))
        .collect())
}

/// Refuses a rule for audience `id` that refers to a missing audience or closes a cycle.
async fn check_graph(tx: &mut PgConnection, id: Uuid, rule: &Rule) -> Result<(), AudienceError> {
    lock_graph(tx).await?;
    let mut graph = load_graph(tx).await?;
    let refs = rule.referenced_audiences();
    if let Some(missing) = refs.iter().find(|r| !graph.contains_key(r) && **r != id) {
        return Err(AudienceError::Invalid(format!(
            "the rule refers to audience {missing}, which does not exist"
        )));
    }
    let name = graph
        .get(&id)
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| "this audience".into());
    graph.insert(id, (name, refs));
    ordered(&graph).map(|_| ())
}

/// [`dependency_order`], a cycle refused with the names of the audiences on it.
fn ordered(graph: &Graph) -> Result<Vec<Uuid>, AudienceError> {
    dependency_order(graph).map_err(|cycle| {
        AudienceError::Cycle(
            cycle
                .iter()
                .map(|c| format!("{:?}", graph[c].0))
                .collect::<Vec<_>>()
                .join(" → "),
        )
    })
}

/// The audiences in an order where each comes after those it refers to; a cycle is
/// returned as the audiences on it.
fn dependency_order(graph: &Graph) -> Result<Vec<Uuid>, Vec<Uuid>> {
    // Depth-first, marking the path: a node met again on the path closes a cycle.
    fn visit(
        id: Uuid,
        graph: &Graph,
        done: &mut BTreeSet<Uuid>,
        path: &mut Vec<Uuid>,
        out: &mut Vec<Uuid>,
    ) -> Result<(), Vec<Uuid>> {
        if done.contains(&id) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|p| *p == id) {
            let mut cycle = path[at..].to_vec();
            cycle.push(id);
            return Err(cycle);
        }
        path.push(id);
        if let Some((_, refs)) = graph.get(&id) {
            for r in refs {
                visit(*r, graph, done, path, out)?;
            }
        }
        path.pop();
        done.insert(id);
        out.push(id);
        Ok(())
    }
    let mut done = BTreeSet::new();
    let mut out = Vec::with_capacity(graph.len());
    for id in graph.keys() {
        visit(*id, graph, &mut done, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// The size of a (validated) rule's audience as of `as_of` and up to `sample` member ids.
pub async fn preview(
    db: &PgPool,
    rule: &Rule,
    as_of: DateTime<Utc>,
    sample: i64,
) -> Result<Preview, AudienceError> {
    rule.validate()?;
    let mut qb = QueryBuilder::new("WITH m AS (");
    sql::push_members(&mut qb, rule, as_of);
    qb.push(") SELECT (SELECT count(*) FROM m), ARRAY(SELECT id FROM m ORDER BY id LIMIT ")
        .push_bind(sample)
        .push(")");
    let (size, sample): (i64, Vec<Uuid>) = qb.build_query_as().fetch_one(db).await?;
    Ok(Preview { size, sample })
}

/// Brings audience `id`'s membership in line with its rule as of `as_of`, in one
/// statement; entries and exits are logged with cause `recompute`.
pub async fn recompute(
    db: &PgPool,
    id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Recomputed, AudienceError> {
    let mut tx = db.begin().await?;
    let rule: Option<Json<Rule>> =
        sqlx::query_scalar("SELECT rule FROM audiences WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let rule = rule.ok_or(AudienceError::NotFound(id))?.0;
    let at = domain::audience::as_of_instant(as_of);

    let mut qb = QueryBuilder::new("WITH m AS (");
    sql::push_members(&mut qb, &rule, at);
    qb.push(
        "), exited AS (UPDATE audience_membership am SET current = FALSE, exited_at = ",
    )
    .push_bind(at)
    .push(" WHERE am.audience_id = ")
    .push_bind(id)
    .push(
        " AND am.current AND NOT EXISTS (SELECT 1 FROM m WHERE m.id = am.profile_id) \
         RETURNING am.profile_id), \
         entered AS (INSERT INTO audience_membership (audience_id, profile_id, current, entered_at) \
         SELECT ",
    )
    .push_bind(id)
    .push(", m.id, TRUE, ")
    .push_bind(at)
    .push(
        " FROM m ON CONFLICT (audience_id, profile_id) DO UPDATE \
         SET current = TRUE, entered_at = EXCLUDED.entered_at, exited_at = NULL \
         WHERE NOT audience_membership.current RETURNING profile_id), \
         logged AS (INSERT INTO audience_membership_change (audience_id, profile_id, change, at, cause) \
         SELECT ",
    )
    .push_bind(id)
    .push(", profile_id, 'exited', ")
    .push_bind(at)
    .push(", 'recompute' FROM exited UNION ALL SELECT ")
    .push_bind(id)
    .push(", profile_id, 'entered', ")
    .push_bind(at)
    .push(
        ", 'recompute' FROM entered) \
         SELECT (SELECT count(*) FROM entered), (SELECT count(*) FROM exited), (SELECT count(*) FROM m)",
    );
    let (entered, exited, members): (i64, i64, i64) =
        qb.build_query_as().fetch_one(&mut *tx).await?;
    sqlx::query("UPDATE audiences SET recomputed_at = $2, member_count = $3 WHERE id = $1")
        .bind(id)
        .bind(at)
        .bind(members)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Recomputed {
        entered,
        exited,
        members,
    })
}

/// Recomputes every audience, each after those its rule refers to.
pub async fn recompute_all(
    db: &PgPool,
    as_of: DateTime<Utc>,
) -> Result<Vec<(Uuid, Recomputed)>, AudienceError> {
    let graph = load_graph(&mut *db.acquire().await?).await?;
    let order = ordered(&graph)?;
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        match recompute(db, id, as_of).await {
            Ok(r) => out.push((id, r)),
            // Deleted since the graph was read.
            Err(AudienceError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Re-judges profile `profile_id` against every audience as of `as_of` with the
/// in-memory evaluator and records what changed (cause `live`). A profile that no
/// longer exists or was merged away leaves every audience.
pub async fn evaluate_profile(
    db: &PgPool,
    profile_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Vec<MembershipChange>, AudienceError> {
    let at = domain::audience::as_of_instant(as_of);
    let mut tx = db.begin().await?;
    // Shared: live updates run side by side; a recompute (FOR UPDATE) waits for them
    // and they for it.
    let rows: Vec<(Uuid, Json<Rule>)> =
        sqlx::query_as("SELECT id, rule FROM audiences ORDER BY id FOR SHARE")
            .fetch_all(&mut *tx)
            .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(LOCK_NAMESPACE)
        .bind(profile_id)
        .execute(&mut *tx)
        .await?;
    let rules: BTreeMap<Uuid, Rule> = rows.into_iter().map(|(id, r)| (id, r.0)).collect();
    let graph: Graph = rules
        .iter()
        .map(|(id, r)| (*id, (id.to_string(), r.referenced_audiences())))
        .collect();
    let order = ordered(&graph)?;
    let scope = EventScope {
        types: rules.values().flat_map(Rule::event_types).collect(),
        lookback_days: rules.values().map(Rule::lookback_days).max().unwrap_or(0),
    };
    let mut facts = facts::load(&mut tx, profile_id, &scope, at).await?;
    let current: BTreeSet<Uuid> = match &facts {
        Some(f) => f.audiences.clone(),
        None => sqlx::query_scalar(
            "SELECT audience_id FROM audience_membership WHERE profile_id = $1 AND current",
        )
        .bind(profile_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect(),
    };
    let mut changes = Vec::new();
    for id in order {
        let member = match facts.as_mut() {
            Some(f) => {
                let member = rules[&id].evaluate(f, at);
                // Audiences defined on this one see the new judgement.
                if member {
                    f.audiences.insert(id);
                } else {
                    f.audiences.remove(&id);
                }
                member
            }
            None => false,
        };
        let change = match (current.contains(&id), member) {
            (false, true) => Change::Entered,
            (true, false) => Change::Exited,
            _ => continue,
        };
        changes.push(MembershipChange {
            audience_id: id,
            profile_id,
            change,
        });
    }
    record(&mut tx, &changes, at, "live").await?;
    tx.commit().await?;
    Ok(changes)
}

/// Writes membership flips and their log rows.
async fn record(
    tx: &mut PgConnection,
    changes: &[MembershipChange],
    at: DateTime<Utc>,
    cause: &str,
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let audiences: Vec<Uuid> = changes.iter().map(|c| c.audience_id).collect();
    let profiles: Vec<Uuid> = changes.iter().map(|c| c.profile_id).collect();
    let kinds: Vec<&str> = changes.iter().map(|c| c.change.as_str()).collect();
    sqlx::query(
        "INSERT INTO audience_membership (audience_id, profile_id, current, entered_at, exited_at) \
         SELECT a, p, c = 'entered', $4, CASE WHEN c = 'exited' THEN $4 END \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS t (a, p, c) \
         ON CONFLICT (audience_id, profile_id) DO UPDATE SET current = EXCLUDED.current, \
         entered_at = CASE WHEN EXCLUDED.current THEN EXCLUDED.entered_at ELSE audience_membership.entered_at END, \
         exited_at = EXCLUDED.exited_at",
    )
    .bind(&audiences)
    .bind(&profiles)
    .bind(&kinds)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audience_membership_change (audience_id, profile_id, change, at, cause) \
         SELECT a, p, c, $4, $5 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS t (a, p, c)",
    )
    .bind(&audiences)
    .bind(&profiles)
    .bind(&kinds)
    .bind(at)
    .bind(cause)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A page of audience `id`'s current members, by profile id, after `after`.
pub async fn members(
    db: &PgPool,
    id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AudienceMemberView>, AudienceError> {
    let rows: Vec<(Uuid, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT am.profile_id, p.display_name, am.entered_at FROM audience_membership am \
         LEFT JOIN customer_profile p ON p.id = am.profile_id \
         WHERE am.audience_id = $1 AND am.current AND ($2::uuid IS NULL OR am.profile_id > $2) \
         ORDER BY am.profile_id LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(profile_id, display_name, entered_at)| AudienceMemberView {
                profile_id,
                display_name,
                entered_at,
            },
        )
        .collect())
}

/// The display names of `ids`, in the order given (missing profiles are left out).
pub async fn names(
    db: &PgPool,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Option<String>)>, AudienceError> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.display_name FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n) \
         JOIN customer_profile p ON p.id = u.id ORDER BY u.n",
    )
    .bind(ids)
    .fetch_all(db)
    .await?)
}

/// One line of an audience export.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ExportRow {
    /// The profile.
    pub profile_id: Uuid,
    /// Its display name.
    pub display_name: Option<String>,
    /// Its first e-mail address.
    pub email: Option<String>,
    /// Its first phone number.
    pub phone: Option<String>,
    /// When it (last) entered.
    pub entered_at: DateTime<Utc>,
}

/// A chunk of audience `id`'s current members with their contact identifiers, by
/// profile id, after `after`.
pub async fn export_page(
    db: &PgPool,
    id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ExportRow>, AudienceError> {
    Ok(sqlx::query_as(
        "SELECT am.profile_id, p.display_name, \
           (SELECT x->>'value' FROM jsonb_array_elements(p.identifiers) x \
            WHERE x->>'kind' = 'email' LIMIT 1) AS email, \
           (SELECT x->>'value' FROM jsonb_array_elements(p.identifiers) x \
            WHERE x->>'kind' = 'phone' LIMIT 1) AS phone, \
           am.entered_at \
         FROM audience_membership am JOIN customer_profile p ON p.id = am.profile_id \
         WHERE am.audience_id = $1 AND am.current AND ($2::uuid IS NULL OR am.profile_id > $2) \
         ORDER BY am.profile_id LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(u128, &[u128])]) -> Graph {
        edges
            .iter()
            .map(|(id, refs)| {
                (
                    Uuid::from_u128(*id),
                    (
                        id.to_string(),
                        refs.iter().map(|r| Uuid::from_u128(*r)).collect(),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn dependencies_come_first_and_cycles_are_named() {
        let order = dependency_order(&graph(&[(1, &[3]), (2, &[]), (3, &[2])])).unwrap();
        let pos = |n| {
            order
                .iter()
                .position(|id| *id == Uuid::from_u128(n))
                .unwrap()
        };
        assert!(pos(2) < pos(3) && pos(3) < pos(1));
        let cycle = dependency_order(&graph(&[(1, &[2]), (2, &[3]), (3, &[1])])).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        assert!(dependency_order(&graph(&[(1, &[1])])).is_err());
    }
}
