//! The card store on a real Postgres, one fresh database per test: CRUD, version history,
//! optimistic concurrency, partial retrieve, soft delete, custom-type schemas and tenant
//! isolation.

use serde_json::{Value, json};
use sqlx::PgPool;
use switchyard_cards::{
    Error,
    store::{self, Card, Change, NewCard},
};
use switchyard_test_support::TestDatabase;

const A: &str = "acme";
const B: &str = "globex";

async fn db() -> TestDatabase {
    let db = switchyard_test_support::database().await;
    store::migrate(&db.pool).await.expect("migrate");
    db
}

fn company(name: &str) -> NewCard {
    NewCard {
        card_type: "company".into(),
        title: name.into(),
        content: json!({"name": name, "industry": "freight"}),
    }
}

async fn create(pool: &PgPool, tenant: &str, new: NewCard) -> Result<Card, Error> {
    let mut tx = pool.begin().await.expect("tx");
    let mut cards = store::create(&mut tx, tenant, "ann", &[new], |_| String::new()).await?;
    tx.commit().await.expect("commit");
    Ok(cards.remove(0))
}

async fn update(pool: &PgPool, tenant: &str, id: &str, change: Change) -> Result<Card, Error> {
    let mut tx = pool.begin().await.expect("tx");
    let card = store::update(&mut tx, tenant, "bob", id, &change).await?;
    tx.commit().await.expect("commit");
    Ok(card)
}

async fn delete(pool: &PgPool, tenant: &str, id: &str) -> Result<bool, Error> {
    let mut tx = pool.begin().await.expect("tx");
    let deleted = store::delete(&mut tx, tenant, id).await?;
    tx.commit().await.expect("commit");
    Ok(deleted)
}

fn content(v: Value) -> Change {
    Change {
        content: Some(v),
        ..Change::default()
    }
}

#[tokio::test]
async fn cards_are_created_read_updated_and_keep_every_version() {
    let db = db().await;
    let card = create(&db.pool, A, company("Acme Freight")).await.unwrap();
    assert_eq!(card.version, 1);
    assert_eq!(card.card_type, "company");
    assert_eq!(card.created_by, "ann");
    let id = uuid::Uuid::parse_str(&card.id).expect("a uuid");
    assert_eq!(id.get_version_num(), 7, "ids are uuid v7");
    assert!(card.created_at.ends_with('Z') && card.created_at.contains('T'));

    let read = store::get(&db.pool, A, &card.id, None).await.unwrap();
    assert_eq!(read.as_ref(), Some(&card));

    let v2 = update(
        &db.pool,
        A,
        &card.id,
        Change {
            expected_version: Some(1),
            title: Some("Acme Freight Ltd".into()),
            content: Some(json!({"name": "Acme Freight Ltd", "website": "https://acme.example"})),
        },
    )
    .await
    .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.content["website"], "https://acme.example");
    // Only the title changes; the content stays.
    let v3 = update(
        &db.pool,
        A,
        &card.id,
        Change {
            title: Some("Acme".into()),
            ..Change::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((v3.version, &v3.content), (3, &v2.content));

    let latest = store::get(&db.pool, A, &card.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, 3);
    let first = store::get(&db.pool, A, &card.id, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.version, first.title.as_str(), &first.content),
        (1, "Acme Freight", &card.content)
    );
    assert!(
        store::get(&db.pool, A, &card.id, Some(4))
            .await
            .unwrap()
            .is_none()
    );

    let versions = store::versions(&db.pool, A, &card.id).await.unwrap();
    let numbers: Vec<i32> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(versions[1].title, "Acme Freight Ltd");
}

#[tokio::test]
async fn a_stale_update_is_a_conflict_and_changes_nothing() {
    let db = db().await;
    let card = create(&db.pool, A, company("Acme")).await.unwrap();
    update(
        &db.pool,
        A,
        &card.id,
        Change {
            expected_version: Some(1),
            ..content(json!({"name": "Acme 2"}))
        },
    )
    .await
    .unwrap();
    let stale = update(
        &db.pool,
        A,
        &card.id,
        Change {
            expected_version: Some(1),
            ..content(json!({"name": "Acme 3"}))
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            stale,
            Error::Conflict {
                current: 2,
                expected: 1,
                ..
            }
        ),
        "{stale:?}"
    );
    let now = store::get(&db.pool, A, &card.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.version, &now.content["name"]), (2, &json!("Acme 2")));
}

#[tokio::test]
async fn retrieve_returns_what_exists_in_order_and_names_the_missing_ids() {
    let db = db().await;
    let a = create(&db.pool, A, company("One")).await.unwrap();
    let b = create(&db.pool, A, company("Two")).await.unwrap();
    let gone = create(&db.pool, A, company("Gone")).await.unwrap();
    assert!(delete(&db.pool, A, &gone.id).await.unwrap());
    let unknown = uuid::Uuid::now_v7().to_string();
    let ids = vec![
        b.id.clone(),
        unknown.clone(),
        a.id.clone(),
        "not-a-uuid".to_owned(),
        gone.id.clone(),
        b.id.clone(),
    ];
    let (cards, missing) = store::retrieve(&db.pool, A, &ids).await.unwrap();
    let got: Vec<&str> = cards.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(got, [b.id.as_str(), a.id.as_str()]);
    assert_eq!(missing, [unknown, "not-a-uuid".to_owned(), gone.id]);
}

#[tokio::test]
async fn a_deleted_card_is_gone_from_reads_lists_and_updates() {
    let db = db().await;
    let keep = create(&db.pool, A, company("Keep")).await.unwrap();
    let card = create(&db.pool, A, company("Drop")).await.unwrap();
    assert!(delete(&db.pool, A, &card.id).await.unwrap());
    assert!(
        !delete(&db.pool, A, &card.id).await.unwrap(),
        "deleting twice succeeds and says it was already deleted"
    );
    assert!(
        store::get(&db.pool, A, &card.id, None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store::get(&db.pool, A, &card.id, Some(1))
            .await
            .unwrap()
            .is_none()
    );
    let (listed, _) = store::list(&db.pool, A, None, None, 50).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [keep.id.as_str()]);
    assert!(matches!(
        store::versions(&db.pool, A, &card.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        update(&db.pool, A, &card.id, content(json!({"name": "x"}))).await,
        Err(Error::NotFound { .. })
    ));
    // The history is kept in the database.
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cards.card_versions WHERE card_id = $1::uuid")
            .bind(&card.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn lists_are_newest_first_filtered_by_type_and_paged_with_a_cursor() {
    let db = db().await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            create(&db.pool, A, company(&format!("C{i}")))
                .await
                .unwrap(),
        );
    }
    let voice = create(
        &db.pool,
        A,
        NewCard {
            card_type: "voice".into(),
            title: "Calm".into(),
            content: json!({"tone": "calm"}),
        },
    )
    .await
    .unwrap();
    let (page1, next) = store::list(&db.pool, A, Some("company"), None, 2)
        .await
        .unwrap();
    let titles: Vec<&str> = page1.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["C4", "C3"]);
    let (page2, next) = store::list(&db.pool, A, Some("company"), next.as_deref(), 2)
        .await
        .unwrap();
    let titles: Vec<&str> = page2.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["C2", "C1"]);
    let (page3, next) = store::list(&db.pool, A, Some("company"), next.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(page3.len(), 1);
    assert_eq!(next, None, "the last page has no cursor");
    let (voices, _) = store::list(&db.pool, A, Some("voice"), None, 50)
        .await
        .unwrap();
    assert_eq!(voices, vec![voice]);
    assert!(matches!(
        store::list(&db.pool, A, None, Some("garbage"), 2).await,
        Err(Error::InvalidInput { field, .. }) if field == "cursor"
    ));
}

#[tokio::test]
async fn content_is_checked_against_builtin_and_registered_schemas() {
    let db = db().await;
    let bad = create(
        &db.pool,
        A,
        NewCard {
            card_type: "audience".into(),
            title: "Managers".into(),
            content: json!({"roles": ["manager"]}),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&bad, Error::InvalidInput { field, message } if field == "content" && message.contains("description")),
        "{bad:?}"
    );
    let unknown = create(
        &db.pool,
        A,
        NewCard {
            card_type: "testimonial".into(),
            title: "Ann".into(),
            content: json!({"quote": "great"}),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(&unknown, Error::InvalidInput { field, .. } if field == "type"));

    let schema = json!({
        "type": "object",
        "required": ["quote", "author"],
        "properties": {"quote": {"type": "string", "minLength": 1}, "author": {"type": "string"}, "stars": {"type": "integer", "maximum": 5}}
    });
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(
        store::register_type(&mut tx, A, "testimonial", &schema)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store::register_type(&mut tx, A, "company", &schema).await,
        Err(Error::InvalidInput { field, .. }) if field == "type"
    ));
    assert!(matches!(
        store::register_type(&mut tx, A, "x", &json!({"type": "array"})).await,
        Err(Error::InvalidInput { .. })
    ));
    tx.commit().await.unwrap();

    let testimonial = |content: Value| NewCard {
        card_type: "testimonial".into(),
        title: "Ann".into(),
        content,
    };
    let ok = create(
        &db.pool,
        A,
        testimonial(json!({"quote": "great", "author": "Ann", "stars": 5})),
    )
    .await
    .unwrap();
    let bad = create(
        &db.pool,
        A,
        testimonial(json!({"quote": "great", "author": "Ann", "stars": 9})),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&bad, Error::InvalidInput { field, .. } if field == "content.stars"),
        "{bad:?}"
    );
    // Updates are checked too.
    let bad = update(&db.pool, A, &ok.id, content(json!({"quote": "x"})))
        .await
        .unwrap_err();
    assert!(matches!(&bad, Error::InvalidInput { .. }), "{bad:?}");
    // The schema is the tenant's own: another tenant has no such type.
    let other = create(
        &db.pool,
        B,
        testimonial(json!({"quote": "great", "author": "Ann"})),
    )
    .await
    .unwrap_err();
    assert!(matches!(&other, Error::InvalidInput { field, .. } if field == "type"));

    // A batch is all or nothing.
    let mut tx = db.pool.begin().await.unwrap();
    let err = store::create(
        &mut tx,
        A,
        "ann",
        &[company("Fine"), testimonial(json!({"quote": "no author"}))],
        |i| format!("cards[{i}]"),
    )
    .await
    .unwrap_err();
    drop(tx);
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "cards[1].content"),
        "{err:?}"
    );
    let (all, _) = store::list(&db.pool, A, None, None, 50).await.unwrap();
    assert_eq!(all.len(), 1, "the batch's first card was rolled back");
}

#[tokio::test]
async fn another_tenants_card_behaves_exactly_like_a_missing_one() {
    let db = db().await;
    let card = create(&db.pool, A, company("Acme")).await.unwrap();
    let missing = uuid::Uuid::now_v7().to_string();
    for id in [&card.id, &missing] {
        assert!(store::get(&db.pool, B, id, None).await.unwrap().is_none());
        assert!(
            store::get(&db.pool, B, id, Some(1))
                .await
                .unwrap()
                .is_none()
        );
        let (found, not_found) = store::retrieve(&db.pool, B, std::slice::from_ref(id))
            .await
            .unwrap();
        assert!(found.is_empty());
        assert_eq!(not_found.as_slice(), std::slice::from_ref(id));
        assert!(matches!(
            update(&db.pool, B, id, content(json!({"name": "Hijack"}))).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            update(
                &db.pool,
                B,
                id,
                Change {
                    expected_version: Some(1),
                    ..content(json!({"name": "Hijack"}))
                }
            )
            .await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            delete(&db.pool, B, id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            store::versions(&db.pool, B, id).await,
            Err(Error::NotFound { .. })
        ));
    }
    let (listed, _) = store::list(&db.pool, B, None, None, 50).await.unwrap();
    assert!(listed.is_empty());
    // Tenant A's card is untouched.
    let still = store::get(&db.pool, A, &card.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still, card);
}
