//! Layer 1, auth: who an invocation runs as. A device's request bears a tenant token;
//! a request that came in through an HTTP route bears the route's grant instead (the
//! route's owner, checked against the route table as it is now).
//!
//! Reads the token store and the route table; never resolves the function or admits.

use super::InvokeError;
use crate::registry::Registry;
use crate::routes::Routes;
use common::model::{FunctionName, InvokeRequest, RouteGrant, TenantId};

/// What an invocation presents as its caller.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A bearer token (`None`: the request had none).
    Token(Option<&'a str>),
    /// An HTTP route's grant to invoke `function`.
    Route {
        /// The grant the route lookup made.
        grant: &'a RouteGrant,
        /// The function the request invokes.
        function: &'a FunctionName,
    },
}

impl<'a> Credential<'a> {
    /// The credential `req` presents.
    pub fn of(req: &'a InvokeRequest) -> Self {
        match &req.route {
            Some(grant) => Self::Route {
                grant,
                function: &req.function,
            },
            None => Self::Token(req.token.as_deref()),
        }
    }
}

/// The tenant `credential` names.
///
/// # Errors
/// [`InvokeError::Auth`] for a missing, unknown or expired token or a failing store;
/// [`InvokeError::RouteGone`] for a route that no longer exists (or no longer leads to
/// the function).
pub fn caller(
    registry: &Registry,
    routes: &Routes,
    credential: Credential<'_>,
) -> Result<TenantId, InvokeError> {
    match credential {
        Credential::Token(token) => Ok(registry.authenticate(token)?),
        Credential::Route { grant, function } => {
            routes
                .tenant_for(grant, function)
                .ok_or_else(|| InvokeError::RouteGone {
                    route: grant.route.clone(),
                })
        }
    }
}
