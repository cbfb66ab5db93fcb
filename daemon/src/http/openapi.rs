//! The OpenAPI document at `/openapi.json`, generated from the handlers
//! and body types of the API and the status page, so it cannot drift from
//! them.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::http::api;
use crate::http::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jatah",
        description = "Per-OPD bandwidth allocation, usage and diagnosis on a government Internet gateway. Rates are bits per second (*_bps), volumes bytes. Send `Authorization: Bearer <token>`; an `opd:<id>` token sees only that OPD (others are 404).",
    ),
    paths(api::list_groups, api::get_group, api::list_opds, api::get_opd, api::get_usage, api::get_usage_csv, api::get_diagnosis, api::hosts::get_hosts, api::get_events, api::get_gateway, crate::http::delivered::get_delivered, crate::http::reports::get_monthly, api::post_reload, api::post_plan,
        crate::http::status_page::get_status, crate::http::status_page::get_overview, crate::http::status_page::get_reference),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags((name = "opds", description = "OPD allocations, rates and usage"), (name = "gateway", description = "The gateway as a whole"),
        (name = "status", description = "The status page for OPD operators and its admin overview"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    let mut res = ApiDoc::openapi()
        .to_json()
        .unwrap_or_default()
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
