//! The route table, assembled from one module per area of the API, and the router built
//! from it with the layers every route shares (body limit, timeouts, observation).

pub(crate) mod cards;
pub(crate) mod definitions;
pub(crate) mod events;
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
    all.extend(events::routes());
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
    router
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
