//! Shared set-up for the gateway tests: a real nats-server with the bus applied, an
//! orchestrator and a `test` worker in this process, and the gateway's router driven with
//! `oneshot` (no socket).
#![allow(dead_code)]

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode},
};
use futures::StreamExt as _;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_gateway::{AppState, Authenticator, Claims, Role, auth};
use switchyard_proto::stream;
use switchyard_runtime::{
    Config,
    config::{AuthSettings, GatewaySettings, Secret},
};
use switchyard_test_harness::{Bus, Components, NatsServer, orchestrator_options, worker_config};
use switchyard_test_worker::TestWorker;
use tower::ServiceExt as _;

pub const TENANT: &str = "acme";
pub const OTHER_TENANT: &str = "globex";
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const BODY_LIMIT: usize = 4096;
pub const T: Duration = Duration::from_secs(15);

/// A provisioned bus with an orchestrator and a `test` worker, and the gateway in front.
pub struct Env {
    pub bus: Bus,
    pub components: Components,
    pub app: Router,
    pub config: Config,
}

impl std::ops::Deref for Env {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
}

pub fn config(url: String) -> Config {
    Config {
        gateway: GatewaySettings {
            auth: AuthSettings {
                secret: Some(Secret::new(SECRET)),
                ..AuthSettings::default()
            },
            body_limit: BODY_LIMIT,
            max_wait: Duration::from_secs(10),
            ..GatewaySettings::default()
        },
        ..worker_config(url, "w1")
    }
}

/// The gateway's router over `server`, with its own metrics registry.
pub async fn gateway(server: &NatsServer, config: &Config) -> Router {
    let auth = Authenticator::from_settings(&config.gateway.auth).expect("auth");
    let state = AppState::new(
        config,
        server
            .connect_as(&switchyard_test_harness::BusRole::Gateway)
            .await,
        auth,
        Registry::new(),
    )
    .await
    .expect("state");
    switchyard_gateway::router(state)
}

/// A bus with an orchestrator and a `test` worker running, and the gateway in front.
pub async fn env() -> Env {
    env_with(|_| {}).await
}

/// [`env`] with the configuration changed by `adjust` first.
pub async fn env_with(adjust: impl FnOnce(&mut Config)) -> Env {
    let bus = switchyard_test_harness::bus().await;
    let mut config = config(bus.url());
    adjust(&mut config);
    let mut components = Components::default();
    components
        .worker(&bus, &config, TestWorker, &Registry::new())
        .await;
    components
        .orchestrator(&bus, orchestrator_options("o1"))
        .await;
    let app = gateway(&bus.server, &config).await;
    let env = Env {
        bus,
        components,
        app,
        config,
    };
    // Wait until the orchestrator answers queries.
    let admin = env.token(TENANT, Role::Admin);
    for _ in 0..200 {
        if env
            .call(
                Method::GET,
                "/api/v1/workflows/definitions",
                Some(&admin),
                None,
            )
            .await
            .status
            == StatusCode::OK
        {
            return env;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the orchestrator never answered");
}

/// What a request got back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts an `application/problem+json` body with `status`; returns the body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{self:#?}");
        assert_eq!(
            self.header("content-type"),
            "application/problem+json",
            "{self:#?}"
        );
        assert_eq!(self.body["status"], status, "{self:#?}");
        assert!(self.body["type"].is_string() && self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
        let corr = self.header("x-correlation-id");
        assert!(!corr.is_empty());
        assert_eq!(self.body["correlation_id"], corr, "{self:#?}");
        &self.body
    }
}

pub fn claims(tenant: &str, roles: &[Role]) -> Claims {
    let now = jsonwebtoken_now();
    Claims {
        sub: "tester".into(),
        tenant: tenant.into(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        iss: "switchyard".into(),
        aud: "switchyard-api".into(),
        exp: now + 600,
        nbf: None,
        iat: Some(now),
    }
}

pub fn jsonwebtoken_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: &Claims) -> String {
    auth::sign(claims, SECRET.as_bytes()).expect("sign")
}

impl Env {
    pub fn token(&self, tenant: &str, role: Role) -> String {
        auth::issue_token(
            &self.config.gateway.auth,
            tenant,
            &[role],
            "tester",
            Duration::from_secs(600),
        )
        .expect("token")
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        json_body: Option<Value>,
    ) -> Reply {
        let body = json_body.map(|v| v.to_string());
        self.send(
            method,
            uri,
            token,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        send(&self.app, method, uri, token, headers, body).await
    }

    /// Polls `GET uri` as `role` of [`TENANT`] until it answers 200: a worker a test started
    /// is ready once the route it serves answers.
    pub async fn wait_ok(&self, uri: &str, role: Role, what: &str) {
        let token = self.token(TENANT, role);
        for _ in 0..200 {
            if self.call(Method::GET, uri, Some(&token), None).await.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what} never answered {uri}");
    }

    /// Registers a definition through the gateway.
    pub async fn register(&self, yaml: &str) {
        let name = yaml
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .expect("a name line")
            .trim();
        let admin = self.token(TENANT, Role::Admin);
        let reply = self
            .send(
                Method::PUT,
                &format!("/api/v1/workflows/definitions/{name}"),
                Some(&admin),
                &[("content-type", "application/yaml")],
                Some(yaml.to_owned()),
            )
            .await;
        assert!(
            reply.status.is_success(),
            "registration refused: {reply:#?}"
        );
    }

    pub async fn trigger(&self, workflow: &str, input: Value) -> String {
        let token = self.token(TENANT, Role::Operator);
        let reply = self
            .call(
                Method::POST,
                "/api/v1/workflows/trigger",
                Some(&token),
                Some(json!({ "workflow_name": workflow, "input": input })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
        reply.body["instance_id"]
            .as_str()
            .expect("an id")
            .to_owned()
    }

    pub async fn status(&self, instance: &str) -> Reply {
        let token = self.token(TENANT, Role::Viewer);
        self.call(
            Method::GET,
            &format!("/api/v1/workflows/instances/{instance}"),
            Some(&token),
            None,
        )
        .await
    }

    /// Polls the status until `done` says so.
    pub async fn wait_for(
        &self,
        instance: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let reply = self.status(instance).await;
            if reply.status == StatusCode::OK && done(&reply.body) {
                return reply.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {instance} never {what}: {reply:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn finished(&self, instance: &str) -> Value {
        self.wait_for(instance, "finished", |s| {
            s["status"]
                .as_str()
                .is_some_and(|s| ["completed", "failed", "cancelled"].contains(&s))
        })
        .await
    }

    pub async fn state_keys(&self) -> usize {
        let kv = self
            .js
            .get_key_value(stream::WF_STATE_BUCKET)
            .await
            .expect("bucket");
        kv.keys().await.expect("keys").count().await
    }
}

pub async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    send_request(app, req).await
}

/// `GET uri` as a client at `address` (the peer address the server would see), with `token`.
pub async fn get_from(app: &Router, address: &str, uri: &str, token: &str) -> Reply {
    let peer: std::net::SocketAddr = format!("{address}:40000").parse().expect("an address");
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    send_request(app, req).await
}

/// Sends `req` to the app and reads the whole answer.
pub async fn send_request(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}
