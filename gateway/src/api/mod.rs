//! The route table, assembled from one module per area of the API, and the router built
//! from it with the layers every route shares (body limit, timeouts, observation).

pub(crate) mod bulk;
pub(crate) mod cards;
pub(crate) mod definitions;
pub(crate) mod dlq;
pub(crate) mod events;
pub(crate) mod hooks;
pub(crate) mod ledger;
pub(crate) mod meetings;
pub(crate) mod operations;
pub(crate) mod research;
pub(crate) mod workflows;

use axum::{
    Extension, Router,
    extract::DefaultBodyLimit,
    http::{Method, StatusCode},
    middleware,
};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use crate::{
    limits::Group,
    observe,
    route::{Deadline, RouteDef, route},
    state::AppState,
};

/// Every route the gateway serves: the one list the router is built from and the OpenAPI
/// document is checked against.
pub(crate) fn routes() -> Vec<RouteDef> {
    let mut all = Vec::new();
    all.extend(workflows::routes());
    all.extend(bulk::routes());
    all.extend(dlq::routes());
    all.extend(events::routes());
    all.extend(hooks::routes());
    all.extend(definitions::routes());
    all.extend(meetings::routes());
    all.extend(research::routes());
    all.extend(cards::routes());
    all.extend(ledger::routes());
    all.extend(operations::routes());
    all.push(route(
        Method::GET,
        "/openapi.json",
        Group::Open,
        Deadline::Request,
        crate::openapi::serve,
    ));
    all
}

pub(crate) fn router(state: AppState) -> Router {
    let settings = state.settings().clone();
    let mut router = Router::new();
    for r in routes() {
        let timeout = match r.deadline {
            Deadline::Request => Some(settings.request_timeout),
            Deadline::RequestAndWait => Some(settings.request_timeout + settings.max_wait),
            Deadline::Stream => None,
        };
        let mut handler = r.handler.layer(Extension(r.group));
        if let Some(t) = timeout {
            handler = handler.layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                t,
            ));
        }
        router = router.route(r.path, handler);
    }
    // MCP (Streamable HTTP) is one endpoint of JSON-RPC, not a route of the table: it is
    // authenticated and rate-limited by its own layer, and answers for as long as a call waits.
    let mcp = Router::new()
        .route_service(crate::mcp::PATH, crate::mcp::service(state.clone()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::mcp::authenticate,
        ));
    router
        .merge(mcp)
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::release_refused,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate-limit group of every route, as the gateway's README describes them: a route
    /// added without a line here, or moved to another group, fails this test.
    #[test]
    fn every_route_has_the_rate_limit_group_the_readme_gives_it() {
        use Group::*;
        let expected: &[(&str, &str, Group)] = &[
            ("POST", "/api/v1/workflows/trigger", Start),
            ("POST", "/api/v1/workflows/execute", Start),
            ("POST", "/api/v1/meetings/process", Start),
            ("POST", "/api/v1/onboarding", Start),
            ("POST", "/api/v1/workflows/instances/{id}/cancel", Control),
            ("POST", "/api/v1/workflows/bulk/cancel", Control),
            ("POST", "/api/v1/workflows/bulk/rerun", Control),
            ("POST", "/api/v1/workflows/instances/{id}/rerun", Control),
            ("POST", "/api/v1/dlq/{seq}/replay", Control),
            ("POST", "/api/v1/dlq/replay", Control),
            ("POST", "/api/v1/dlq/purge", Control),
            ("GET", "/api/v1/dlq", Read),
            ("GET", "/api/v1/dlq/{seq}", Read),
            (
                "POST",
                "/api/v1/workflows/instances/{id}/signal/{name}",
                Control,
            ),
            ("POST", "/api/v1/cards", Control),
            ("POST", "/api/v1/cards/batch", Control),
            ("PATCH", "/api/v1/cards/{id}", Control),
            ("DELETE", "/api/v1/cards/{id}", Control),
            ("POST", "/api/v1/tasks", Control),
            ("PUT", "/api/v1/tasks/{id}/status", Control),
            ("GET", "/api/v1/workflows/status/{id}", Read),
            ("GET", "/api/v1/workflows/instances/{id}", Read),
            ("GET", "/api/v1/workflows/instances/{id}/events", Read),
            ("GET", "/api/v1/workflows/instances", Read),
            ("GET", "/api/v1/workflows/stats", Read),
            ("GET", "/api/v1/workflows/definitions", Read),
            ("GET", "/api/v1/workflows/definitions/{name}", Read),
            ("GET", "/api/v1/registry", Read),
            ("GET", "/api/v1/usage", Read),
            ("GET", "/api/v1/audit", Read),
            ("GET", "/api/v1/cards", Read),
            ("GET", "/api/v1/cards/{id}", Read),
            ("GET", "/api/v1/cards/{id}/versions", Read),
            ("POST", "/api/v1/cards/retrieve", Read),
            ("GET", "/api/v1/meetings/{id}/context", Read),
            ("GET", "/api/v1/integrations/status", Read),
            ("PUT", "/api/v1/workflows/definitions/{name}", Definitions),
            (
                "DELETE",
                "/api/v1/workflows/definitions/{name}",
                Definitions,
            ),
            (
                "POST",
                "/api/v1/workflows/definitions/validate",
                Definitions,
            ),
            ("PUT", "/api/v1/cards/types/{type}", Definitions),
            ("POST", "/api/v1/research", Research),
            ("POST", "/api/v1/hooks/{tenant}/{source}", Start),
            ("GET", "/health", Open),
            ("GET", "/ready", Open),
            ("GET", "/metrics", Open),
            ("GET", "/openapi.json", Open),
        ];
        let mut actual: Vec<(String, &str, Group)> = routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path, r.group))
            .collect();
        let mut wanted: Vec<(String, &str, Group)> = expected
            .iter()
            .map(|(m, p, g)| ((*m).to_owned(), *p, *g))
            .collect();
        let key = |r: &(String, &str, Group)| (r.1.to_owned(), r.0.clone());
        actual.sort_by_key(key);
        wanted.sort_by_key(key);
        assert_eq!(actual, wanted);
    }
}
