//! The work behind `POST /api/v1/policy/plan`: parsing a policy of up to
//! the body limit and comparing it with the one in force takes a core for
//! a while, so it runs on a blocking thread, never on the async workers
//! that answer every other request, and at most
//! [`PLANS_AT_ONCE`](crate::runtime::state::PLANS_AT_ONCE) at a time
//! ([`PlanLimit`](crate::runtime::state::PlanLimit)). A request that gets
//! no turn within the limit's wait is answered 503 with `Retry-After`
//! rather than queued without end, so an admin token cannot pile up work.

use std::sync::Arc;

use crate::http::problem::Problem;
use crate::policy::plan::Plan;
use crate::runtime::state::{AppState, PLANS_AT_ONCE};

/// Problems listed in a 400 at most; `jatah check` lists them all.
const MAX_PROBLEMS_SHOWN: usize = 100;

/// What a reload of the policy `body` would change against the policy in
/// force (an invalid policy is a 400 listing its problems).
pub(crate) async fn plan(state: Arc<AppState>, body: String) -> Result<Plan, Problem> {
    let limit = &state.plans;
    let permit = match tokio::time::timeout(limit.wait, limit.permits.clone().acquire_owned()).await
    {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return Err(Problem::internal("the plan limit is closed")),
        Err(_) => {
            return Err(Problem::busy(
                format!(
                    "other policy plans are being computed (at most {PLANS_AT_ONCE} at a time) \
                     and none finished within {} s; send the request again later",
                    limit.wait.as_secs()
                ),
                limit.wait,
            ));
        }
    };
    let current = state.view();
    tokio::task::spawn_blocking(move || {
        // Held until the work is done, even when the client has gone.
        let _permit = permit;
        let new = crate::policy::parse(&body, "request").map_err(|e| {
            let total = e.diagnostics.len();
            let mut shown = e;
            shown.diagnostics.truncate(MAX_PROBLEMS_SHOWN);
            let mut detail = shown.to_string();
            if total > MAX_PROBLEMS_SHOWN {
                detail.push_str(&format!(
                    "\n... and {} more problems (`jatah check FILE` lists them all)",
                    total - MAX_PROBLEMS_SHOWN
                ));
            }
            Problem::bad_request(detail)
        })?;
        Ok(crate::policy::plan::diff(&current.policy, &new))
    })
    .await
    .map_err(|e| Problem::internal(format!("plan: {e}")))?
}
