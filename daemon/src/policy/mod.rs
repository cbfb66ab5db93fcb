//! Policy files: the admin's description of the gateway and of every OPD's
//! allocation (the README's "Writing a policy").
//!
//! [`parse`] reads TOML, validates everything it can and reports every
//! problem at once as `FILE:LINE:COLUMN: message`, so an admin fixes a policy
//! in one pass instead of one error per run. A policy that fails validation
//! is never returned, so nothing downstream can act on half of it.

mod diagnosis;
mod model;
pub mod plan;
mod rate;
pub mod schedule;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

#[cfg(any(test, feature = "testkit"))]
pub use diagnosis::{DiagnosisSettings, UpstreamTarget, parse_duration};
pub use model::*;
#[cfg(any(test, feature = "testkit"))]
pub use rate::RateError;
pub use rate::{Rate, parse_rate};

/// Parses and validates a policy. `file_name` only labels diagnostics.
pub fn parse(source: &str, file_name: &str) -> Result<Policy, PolicyError> {
    validate::parse(source, file_name)
}

/// Reads, parses and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let file_name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => parse(&source, &file_name),
        Err(error) => Err(PolicyError {
            diagnostics: vec![Diagnostic {
                file: file_name,
                line: 0,
                column: 0,
                message: format!("cannot read: {error}"),
            }],
        }),
    }
}
