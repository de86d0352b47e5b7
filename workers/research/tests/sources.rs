//! The URL source and the SearXNG client against a real HTTP server on loopback: readable
//! text from HTML, the size cap, the content-type check, the timeout, and the address guard
//! on the first request and on redirects.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use switchyard_research::{
    metrics::Metrics,
    sources::{Failure, Fetcher, Searxng},
};
use switchyard_runtime::config::ResearchSettings;

const ARTICLE: &str = r#"<!doctype html><html><head><title>Token buckets</title>
<script>window.analytics = true;</script></head><body>
<nav>Home | Blog | About</nav><header>The Example Blog</header>
<article><h1>Token buckets</h1>
<p>A token bucket refills at a steady rate and lets bursts through up to its size.</p>
<p>Requests that find the bucket empty are rejected with 429.</p></article>
<aside>Subscribe to the newsletter</aside><footer>© Example</footer></body></html>"#;

type Params = Vec<(String, String)>;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Params>>>);

async fn server() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let port = addr.port();
    let redirect = |to: String| {
        move || {
            let to = to.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, to)]) }
        }
    };
    let app = Router::new()
        .route(
            "/article",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    ARTICLE,
                )
            }),
        )
        .route(
            "/notes.md",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/markdown")],
                    "# Notes\n\nGCRA is a token bucket stored as one timestamp.\n",
                )
            }),
        )
        .route(
            "/pdf",
            get(|| async { ([(header::CONTENT_TYPE, "application/pdf")], "%PDF-1.7") }),
        )
        .route(
            "/big",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    "word ".repeat(10_000),
                )
            }),
        )
        .route(
            "/big-stream",
            get(|| async {
                // No Content-Length: the cap has to stop the read itself.
                let chunks = futures::stream::iter(
                    (0..100).map(|_| Ok::<_, std::io::Error>("word ".repeat(1000))),
                );
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(Body::from_stream(chunks))
                    .unwrap()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                ([(header::CONTENT_TYPE, "text/plain")], "too late")
            }),
        )
        .route("/to-article", get(redirect("/article".into())))
        .route(
            "/to-metadata",
            get(redirect("http://169.254.169.254/latest/meta-data/".into())),
        )
        .route(
            "/to-other-loopback",
            get(redirect(format!("http://127.0.0.2:{port}/article"))),
        )
        .route("/loop", get(redirect("/loop".into())))
        .route(
            "/search",
            get(
                move |State(seen): State<Seen>,
                      Query(q): Query<Vec<(String, String)>>,
                      _headers: HeaderMap| async move {
                    seen.0.lock().unwrap().push(q);
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        json!({
                            "query": "token bucket",
                            "number_of_results": 2,
                            "results": [
                                {
                                    "url": format!("http://127.0.0.1:{port}/article"),
                                    "title": "Token buckets explained",
                                    "content": "A token bucket refills at a steady rate.",
                                    "engine": "duckduckgo",
                                    "score": 2.5
                                },
                                {
                                    "url": "http://169.254.169.254/latest",
                                    "title": "Metadata",
                                    "content": "not a page",
                                    "engine": "bing",
                                    "score": 1.0
                                },
                                { "url": "ftp://example.org/x", "title": "FTP", "content": "" }
                            ]
                        })
                        .to_string(),
                    )
                        .into_response()
                },
            ),
        )
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn settings(allowed: &[&str]) -> ResearchSettings {
    ResearchSettings {
        fetch_timeout: Duration::from_millis(700),
        max_bytes: 20_000,
        allowed_addresses: allowed.iter().map(|s| (*s).to_owned()).collect(),
        ..ResearchSettings::default()
    }
}

fn fetcher(allowed: &[&str]) -> Fetcher {
    Fetcher::new(&settings(allowed), Metrics::unregistered().unwrap()).unwrap()
}

#[tokio::test]
async fn html_is_reduced_to_its_readable_text() {
    let (addr, _) = server().await;
    let page = fetcher(&["127.0.0.1"])
        .fetch(&format!("http://{addr}/article"), "url")
        .await
        .expect("fetched");
    assert_eq!(page.doc.title, "Token buckets");
    let text: Vec<&str> = page.doc.blocks.iter().map(|b| b.text.as_str()).collect();
    assert_eq!(
        text,
        [
            "A token bucket refills at a steady rate and lets bursts through up to its size.",
            "Requests that find the bucket empty are rejected with 429."
        ]
    );
    assert_eq!(page.bytes, ARTICLE.len() as u64);

    let md = fetcher(&["127.0.0.1"])
        .fetch(&format!("http://{addr}/notes.md"), "url")
        .await
        .expect("markdown");
    assert_eq!(md.doc.title, "Notes");
    // Redirects within the allowed addresses are followed.
    let followed = fetcher(&["127.0.0.1"])
        .fetch(&format!("http://{addr}/to-article"), "url")
        .await
        .expect("redirect followed");
    assert_eq!(followed.url, format!("http://{addr}/article"));
}

#[tokio::test]
async fn oversize_bodies_wrong_types_and_slow_servers_fail_cleanly() {
    let (addr, _) = server().await;
    let f = fetcher(&["127.0.0.1"]);
    for path in ["big", "big-stream"] {
        let err = f
            .fetch(&format!("http://{addr}/{path}"), "url")
            .await
            .unwrap_err();
        assert_eq!(err.failure, Failure::TooLarge { limit: 20_000 }, "{path}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("research.max_bytes"), "{err}");
    }
    let err = f
        .fetch(&format!("http://{addr}/pdf"), "url")
        .await
        .unwrap_err();
    assert_eq!(
        err.failure,
        Failure::UnsupportedType("application/pdf".into())
    );
    let started = std::time::Instant::now();
    let err = f
        .fetch(&format!("http://{addr}/slow"), "url")
        .await
        .unwrap_err();
    assert_eq!(err.failure, Failure::Timeout(Duration::from_millis(700)));
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.location, format!("http://{addr}/slow"));
}

#[tokio::test]
async fn private_addresses_are_refused_first_and_on_every_redirect() {
    let (addr, _) = server().await;
    // Without the allow-list the test server itself is out of reach.
    let err = fetcher(&[])
        .fetch(&format!("http://{addr}/article"), "url")
        .await
        .unwrap_err();
    assert!(
        matches!(&err.failure, Failure::Refused(m) if m.contains("127.0.0.1")),
        "{err}"
    );
    // Allowing 127.0.0.1 opens that address only: redirects elsewhere are refused before any
    // connection is tried (127.0.0.2 has no server, so a connection would fail differently).
    let f = fetcher(&["127.0.0.1"]);
    for (path, ip) in [
        ("to-metadata", "169.254.169.254"),
        ("to-other-loopback", "127.0.0.2"),
    ] {
        let err = f
            .fetch(&format!("http://{addr}/{path}"), "url")
            .await
            .unwrap_err();
        match &err.failure {
            Failure::Refused(m) => assert!(
                m.contains(ip) && m.contains("research.allowed_addresses"),
                "{path}: {m}"
            ),
            other => panic!("{path}: not refused: {other:?}"),
        }
        assert!(!err.is_transient());
    }
    let err = f
        .fetch(&format!("http://{addr}/loop"), "url")
        .await
        .unwrap_err();
    assert!(
        matches!(&err.failure, Failure::Refused(m) if m.contains("more than 5 redirects")),
        "{err}"
    );
    let err = f.fetch("file:///etc/passwd", "url").await.unwrap_err();
    assert!(
        matches!(&err.failure, Failure::Refused(m) if m.contains("scheme `file`")),
        "{err}"
    );
}

#[tokio::test]
async fn searxng_is_asked_for_json_and_its_results_are_read() {
    let (addr, seen) = server().await;
    let searxng = Searxng::new(
        &format!("http://{addr}/"),
        Duration::from_secs(2),
        Metrics::unregistered().unwrap(),
    )
    .unwrap();
    let hits = searxng
        .search("token bucket rate limiting", 5)
        .await
        .unwrap();
    let queries = seen.0.lock().unwrap().clone();
    assert_eq!(
        queries,
        [vec![
            ("q".to_owned(), "token bucket rate limiting".to_owned()),
            ("format".to_owned(), "json".to_owned()),
        ]]
    );
    // Non-http results are dropped; the rest keep SearXNG's order and fields.
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0].url, format!("http://{addr}/article"));
    assert_eq!(hits[0].title, "Token buckets explained");
    assert_eq!(hits[0].engine, "duckduckgo");
    assert_eq!(hits[0].score, 2.5);
    assert_eq!(searxng.search("x", 1).await.unwrap().len(), 1);
}
