//! The card store: the worker's own Postgres schema `cards`. Every statement filters by
//! tenant, so a card of another tenant reads exactly like a missing one. Writes take a
//! connection so that the caller can put them in one transaction with the job's recorded
//! result (see [`recorded`] and [`record`]).

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row as _, postgres::PgRow};
use switchyard_runtime::database;
use uuid::Uuid;

use crate::{Error, types};

/// Runs the crate's migrations, keeping their bookkeeping table inside the `cards` schema so
/// other workers' migrations in the same database do not collide with ours.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    database::migrate(pool, sqlx::migrate!("./migrations"), "cards").await?;
    Ok(())
}

/// A card at one version, as every operation returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Card {
    pub id: String,
    #[serde(rename = "type")]
    pub card_type: String,
    pub title: String,
    /// A JSON object in the shape of the card's type.
    pub content: Value,
    pub version: i32,
    pub created_by: String,
    /// When the card was created (RFC 3339, UTC).
    pub created_at: String,
    /// When this version was written (RFC 3339, UTC).
    pub updated_at: String,
}

/// A card to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCard {
    pub card_type: String,
    pub title: String,
    pub content: Value,
}

/// A change to a card; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub expected_version: Option<i32>,
    pub title: Option<String>,
    pub content: Option<Value>,
}

/// The columns of a card, in the shape [`card`] reads; `c` is the row's table.
macro_rules! card_columns {
    () => {
        "c.id::text AS id, c.type, c.title, c.content::text AS content, c.version, c.created_by, \
         to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at, \
         to_char(c.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS updated_at"
    };
}

fn card(row: &PgRow) -> Result<Card, Error> {
    let content: String = row.try_get("content")?;
    Ok(Card {
        id: row.try_get("id")?,
        card_type: row.try_get("type")?,
        title: row.try_get("title")?,
        content: serde_json::from_str(&content)
            .map_err(|e| Error::Store(sqlx::Error::Decode(Box::new(e))))?,
        version: row.try_get("version")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A card id as stored, or `None` when it cannot be one (and so names no card).
pub fn parse_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok()
}

/// The tenant's registered schema for `card_type`, if any.
pub async fn type_schema(
    conn: &mut PgConnection,
    tenant: &str,
    card_type: &str,
) -> Result<Option<Value>, Error> {
    let row = sqlx::query(
        "SELECT schema::text AS schema FROM cards.card_types WHERE tenant = $1 AND type = $2",
    )
    .bind(tenant)
    .bind(card_type)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let text: String = r.try_get("schema")?;
        serde_json::from_str(&text).map_err(|e| Error::Store(sqlx::Error::Decode(Box::new(e))))
    })
    .transpose()
}

/// Checks a card's content against its type (built-in, or registered by the tenant).
async fn check(
    conn: &mut PgConnection,
    tenant: &str,
    field: &str,
    card_type: &str,
    content: &Value,
) -> Result<(), Error> {
    let custom = if types::builtin_schema(card_type).is_some() {
        None
    } else {
        type_schema(conn, tenant, card_type).await?
    };
    types::check_content(field, card_type, content, custom.as_ref())
}

/// Creates cards at version 1, in order; `field` prefixes the paths of content errors
/// (`cards[2]`). Use one transaction for all-or-nothing.
pub async fn create(
    conn: &mut PgConnection,
    tenant: &str,
    actor: &str,
    cards: &[NewCard],
    field: impl Fn(usize) -> String,
) -> Result<Vec<Card>, Error> {
    let mut out = Vec::with_capacity(cards.len());
    for (i, new) in cards.iter().enumerate() {
        let prefix = field(i);
        let at = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            }
        };
        types::check_type_name(&at("type"), &new.card_type)?;
        check_text(&at("title"), &new.title)?;
        check(conn, tenant, &at("content"), &new.card_type, &new.content)
            .await
            .map_err(|e| match e {
                // `type` errors from the content check name the card's own field.
                Error::InvalidInput { field, message } if field == "type" => {
                    Error::invalid(at("type"), message)
                }
                other => other,
            })?;
        let id = Uuid::now_v7().to_string();
        let content = new.content.to_string();
        let row = sqlx::query(concat!(
            "WITH c AS (INSERT INTO cards.cards (id, tenant, type, title, content, version, created_by, updated_by)
              VALUES ($1::uuid, $2, $3, $4, $5::jsonb, 1, $6, $6) RETURNING *)
             SELECT ",
            card_columns!(),
            " FROM c"
        ))
        .bind(&id)
        .bind(tenant)
        .bind(&new.card_type)
        .bind(&new.title)
        .bind(&content)
        .bind(actor)
        .fetch_one(&mut *conn)
        .await?;
        let card = card(&row)?;
        sqlx::query(
            "INSERT INTO cards.card_versions (card_id, version, tenant, type, title, content, created_by, created_at)
             SELECT id, version, tenant, type, title, content, updated_by, updated_at
             FROM cards.cards WHERE id = $1::uuid",
        )
        .bind(&id)
        .execute(&mut *conn)
        .await?;
        out.push(card);
    }
    Ok(out)
}

/// A title: 1–200 characters, not only spaces.
pub fn check_text(field: &str, title: &str) -> Result<(), Error> {
    if title.trim().is_empty() || title.chars().count() > 200 {
        return Err(Error::invalid(field, "expected 1 to 200 characters"));
    }
    Ok(())
}

/// The card at its latest version, or at `version`; `None` when missing, deleted or another
/// tenant's.
pub async fn get(
    pool: &PgPool,
    tenant: &str,
    id: &str,
    version: Option<i32>,
) -> Result<Option<Card>, Error> {
    if parse_id(id).is_none() {
        return Ok(None);
    }
    let row = match version {
        None => {
            sqlx::query(concat!(
                "SELECT ",
                card_columns!(),
                " FROM cards.cards c WHERE c.tenant = $1 AND c.id = $2::uuid AND c.deleted_at IS NULL"
            ))
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?
        }
        Some(v) => {
            sqlx::query(concat!(
                "SELECT ",
                card_columns!(),
                " FROM cards.card_versions v
                  JOIN LATERAL (SELECT v.card_id AS id, v.type, v.title, v.content, v.version,
                                       k.created_by, k.created_at, v.created_at AS updated_at
                                FROM cards.cards k
                                WHERE k.id = v.card_id AND k.tenant = $1 AND k.deleted_at IS NULL) c ON true
                  WHERE v.tenant = $1 AND v.card_id = $2::uuid AND v.version = $3"
            ))
            .bind(tenant)
            .bind(id)
            .bind(v)
            .fetch_optional(pool)
            .await?
        }
    };
    row.as_ref().map(card).transpose()
}

/// The cards of `ids` that exist for the tenant, in the order given (repeats once), and the
/// ids that do not (missing, deleted, another tenant's, or not a card id at all).
pub async fn retrieve(
    pool: &PgPool,
    tenant: &str,
    ids: &[String],
) -> Result<(Vec<Card>, Vec<String>), Error> {
    let mut unique: Vec<&String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    let valid: Vec<String> = unique
        .iter()
        .filter_map(|id| parse_id(id).map(|u| u.to_string()))
        .collect();
    let rows = sqlx::query(concat!(
        "SELECT ",
        card_columns!(),
        " FROM cards.cards c
          WHERE c.tenant = $1 AND c.id = ANY($2::text[]::uuid[]) AND c.deleted_at IS NULL"
    ))
    .bind(tenant)
    .bind(&valid)
    .fetch_all(pool)
    .await?;
    let found: Vec<Card> = rows.iter().map(card).collect::<Result<_, _>>()?;
    let mut cards = Vec::with_capacity(found.len());
    let mut missing = Vec::new();
    for id in unique {
        let canonical = parse_id(id).map(|u| u.to_string());
        match found.iter().find(|c| Some(&c.id) == canonical.as_ref()) {
            Some(c) => cards.push(c.clone()),
            None => missing.push(id.clone()),
        }
    }
    Ok((cards, missing))
}

/// Writes a new version of a card. Fails with [`Error::Conflict`] when `expected_version` is
/// given and the card is at another version.
pub async fn update(
    conn: &mut PgConnection,
    tenant: &str,
    actor: &str,
    id: &str,
    change: &Change,
) -> Result<Card, Error> {
    let not_found = || Error::not_found(format!("card {id}"));
    if parse_id(id).is_none() {
        return Err(not_found());
    }
    let row = sqlx::query(concat!(
        "SELECT ",
        card_columns!(),
        " FROM cards.cards c WHERE c.tenant = $1 AND c.id = $2::uuid AND c.deleted_at IS NULL FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(not_found)?;
    let current = card(&row)?;
    if let Some(expected) = change.expected_version
        && expected != current.version
    {
        return Err(Error::Conflict {
            card_id: current.id,
            current: current.version,
            expected,
        });
    }
    if let Some(title) = &change.title {
        check_text("title", title)?;
    }
    if let Some(content) = &change.content {
        check(conn, tenant, "content", &current.card_type, content).await?;
    }
    let title = change.title.as_ref().unwrap_or(&current.title);
    let content = change.content.as_ref().unwrap_or(&current.content);
    let row = sqlx::query(concat!(
        "WITH c AS (UPDATE cards.cards SET title = $3, content = $4::jsonb, version = version + 1,
                        updated_by = $5, updated_at = clock_timestamp()
                    WHERE tenant = $1 AND id = $2::uuid RETURNING *)
         SELECT ",
        card_columns!(),
        " FROM c"
    ))
    .bind(tenant)
    .bind(id)
    .bind(title)
    .bind(content.to_string())
    .bind(actor)
    .fetch_one(&mut *conn)
    .await?;
    let updated = card(&row)?;
    sqlx::query(
        "INSERT INTO cards.card_versions (card_id, version, tenant, type, title, content, created_by, created_at)
         SELECT id, version, tenant, type, title, content, updated_by, updated_at
         FROM cards.cards WHERE tenant = $1 AND id = $2::uuid",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(updated)
}

/// Soft-deletes a card: `true` when this call deleted it, `false` when it already was.
pub async fn delete(conn: &mut PgConnection, tenant: &str, id: &str) -> Result<bool, Error> {
    let not_found = || Error::not_found(format!("card {id}"));
    if parse_id(id).is_none() {
        return Err(not_found());
    }
    let row = sqlx::query(
        "SELECT deleted_at IS NOT NULL AS deleted FROM cards.cards
         WHERE tenant = $1 AND id = $2::uuid FOR UPDATE",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(not_found)?;
    if row.try_get::<bool, _>("deleted")? {
        return Ok(false);
    }
    sqlx::query("UPDATE cards.cards SET deleted_at = now() WHERE tenant = $1 AND id = $2::uuid")
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// One page of the tenant's cards, newest first, and the cursor of the next page.
pub async fn list(
    pool: &PgPool,
    tenant: &str,
    card_type: Option<&str>,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<Card>, Option<String>), Error> {
    let after = match cursor {
        None => None,
        Some(c) => Some(
            parse_id(c)
                .ok_or_else(|| Error::invalid("cursor", "not a cursor this list returned"))?
                .to_string(),
        ),
    };
    let limit = limit.clamp(1, 200);
    let rows = sqlx::query(concat!(
        "SELECT ",
        card_columns!(),
        " FROM cards.cards c
          WHERE c.tenant = $1 AND c.deleted_at IS NULL
            AND ($2::text IS NULL OR c.type = $2)
            AND ($3::text IS NULL OR c.id < $3::uuid)
          ORDER BY c.id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(card_type)
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut cards: Vec<Card> = rows.iter().map(card).collect::<Result<_, _>>()?;
    let next = if cards.len() > limit as usize {
        cards.truncate(limit as usize);
        cards.last().map(|c| c.id.clone())
    } else {
        None
    };
    Ok((cards, next))
}

/// Every version of a card, oldest first; [`Error::NotFound`] when the card is missing or
/// deleted.
pub async fn versions(pool: &PgPool, tenant: &str, id: &str) -> Result<Vec<Card>, Error> {
    let not_found = || Error::not_found(format!("card {id}"));
    if parse_id(id).is_none() {
        return Err(not_found());
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        card_columns!(),
        " FROM cards.card_versions v
          JOIN LATERAL (SELECT v.card_id AS id, v.type, v.title, v.content, v.version,
                               k.created_by, k.created_at, v.created_at AS updated_at
                        FROM cards.cards k
                        WHERE k.id = v.card_id AND k.tenant = $1 AND k.deleted_at IS NULL) c ON true
          WHERE v.tenant = $1 AND v.card_id = $2::uuid
          ORDER BY v.version"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Err(not_found());
    }
    rows.iter().map(card).collect()
}

/// Registers (or replaces) the tenant's schema for its own card type; returns the schema's
/// version (1 for a new type). Cards written before keep their content.
pub async fn register_type(
    conn: &mut PgConnection,
    tenant: &str,
    card_type: &str,
    schema: &Value,
) -> Result<i32, Error> {
    types::check_type_name("type", card_type)?;
    if types::BUILTIN.contains(&card_type) {
        return Err(Error::invalid(
            "type",
            format!("{card_type:?} is a built-in type; its schema cannot be replaced"),
        ));
    }
    types::compile(schema)?;
    let row = sqlx::query(
        "INSERT INTO cards.card_types (tenant, type, schema) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (tenant, type) DO UPDATE
           SET schema = EXCLUDED.schema, updated_at = now(),
               version = cards.card_types.version
                         + CASE WHEN cards.card_types.schema = EXCLUDED.schema THEN 0 ELSE 1 END
         RETURNING version",
    )
    .bind(tenant)
    .bind(card_type)
    .bind(schema.to_string())
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("version")?)
}

/// The operation and result of an earlier delivery of the write job `job_id`, if it
/// committed.
pub async fn recorded(
    conn: &mut PgConnection,
    tenant: &str,
    job_id: &str,
) -> Result<Option<(String, Value)>, Error> {
    let row = sqlx::query(
        "SELECT operation, result::text AS result FROM cards.job_results
         WHERE tenant = $1 AND job_id = $2",
    )
    .bind(tenant)
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let operation: String = r.try_get("operation")?;
        let text: String = r.try_get("result")?;
        let result = serde_json::from_str(&text)
            .map_err(|e| Error::Store(sqlx::Error::Decode(Box::new(e))))?;
        Ok((operation, result))
    })
    .transpose()
}

/// Records what the write job `job_id` returned; `false` when another delivery recorded it
/// first (its transaction committed while this one ran), so this one must roll back.
pub async fn record(
    conn: &mut PgConnection,
    tenant: &str,
    job_id: &str,
    operation: &str,
    result: &Value,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "INSERT INTO cards.job_results (tenant, job_id, operation, result) VALUES ($1, $2, $3, $4::jsonb)
         ON CONFLICT (tenant, job_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(job_id)
    .bind(operation)
    .bind(result.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
