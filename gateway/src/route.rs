//! One route: method, path, rate-limit group, deadline and handler. The route table is
//! assembled from these in [`crate::api`].

use axum::{
    http::Method,
    routing::{MethodFilter, MethodRouter, on},
};

use crate::{limits::Group, state::AppState};

/// How long a route may take to produce its response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// `gateway.request_timeout`.
    Request,
    /// `gateway.request_timeout` plus `gateway.max_wait`: execute waits for the result.
    RequestAndWait,
    /// None: an event stream is open as long as the client wants it.
    Stream,
}

/// One route: the single list the router is built from and the OpenAPI document is checked
/// against.
pub(crate) struct RouteDef {
    pub method: Method,
    pub path: &'static str,
    pub group: Group,
    pub deadline: Deadline,
    pub handler: MethodRouter<AppState>,
}

pub(crate) fn route<H, T>(
    method: Method,
    path: &'static str,
    group: Group,
    deadline: Deadline,
    handler: H,
) -> RouteDef
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .unwrap_or_else(|_| panic!("{method} is not a routable method"));
    RouteDef {
        method,
        path,
        group,
        deadline,
        handler: on(filter, handler),
    }
}
