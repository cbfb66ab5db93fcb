//! Who is asking, and what they may see: the bearer token of a request,
//! checked against the tokens in force.

use axum::http::{HeaderMap, header};

use crate::http::auth::Access;
use crate::http::problem::Problem;
use crate::policy::Opd;
use crate::runtime::state::AppState;

/// Who is asking, from the Authorization header.
pub fn access(state: &AppState, headers: &HeaderMap) -> Result<Access, Problem> {
    let value =
        match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                Problem::unauthorized("the Authorization header is not readable text")
            })?),
        };
    state
        .tokens
        .authenticate(value)
        .map(|(a, _)| a)
        .map_err(|e| Problem::unauthorized(e.to_string()))
}

/// Access to the summary (OPD list, gateway): any valid token, or none
/// where the admin allowed anonymous reads.
pub(crate) fn summary_access(state: &AppState, headers: &HeaderMap) -> Result<Access, Problem> {
    let access = access(state, headers)?;
    if access == Access::Anonymous && !state.tokens.anonymous_summary() {
        return Err(Problem::token_required());
    }
    Ok(access)
}

/// Access to one OPD: unknown and not-yours look the same (404), so ids do
/// not leak; no token at all is 401.
pub(crate) fn require_opd(state: &AppState, headers: &HeaderMap, id: &str) -> Result<(Access, Opd), Problem> {
    let access = access(state, headers)?;
    if access == Access::Anonymous {
        return Err(Problem::token_required());
    }
    let view = state.view();
    match view.policy.opd(id) {
        Some(opd) if access.can_see(id) => Ok((access, opd.clone())),
        _ => Err(Problem::no_such_opd(id)),
    }
}
