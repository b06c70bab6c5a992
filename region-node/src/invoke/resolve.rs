//! Layer 2, resolve: which function and version an invocation of a known caller runs.
//! The payload's size is checked first (the HTTP edge enforces the same limit while
//! streaming; this also covers what POPs forward). An alias draws between its versions by
//! the request's affinity key, else its id, which a POP keeps when it forwards, so both
//! tiers pick the same version for one request.
//!
//! Reads the registry; never admits or runs.

use super::InvokeError;
use crate::registry::Registry;
use common::model::{InvokeRequest, ResolvedFunction, TenantId};

/// The function `req` names, resolved for `tenant`.
///
/// # Errors
/// [`InvokeError::PayloadTooLarge`] over `max_payload_bytes`; [`InvokeError::Resolve`] for
/// an unknown function or qualifier (404) or a failing store.
pub fn function(
    registry: &Registry,
    max_payload_bytes: usize,
    tenant: &TenantId,
    req: &InvokeRequest,
) -> Result<ResolvedFunction, InvokeError> {
    if req.payload.len() > max_payload_bytes {
        return Err(InvokeError::PayloadTooLarge {
            size: req.payload.len(),
            limit: max_payload_bytes,
        });
    }
    let draw = common::policy::alias::draw(req.request_id.0, req.affinity.as_deref());
    Ok(registry.resolve(tenant, &req.function, &req.qualifier, draw)?)
}
