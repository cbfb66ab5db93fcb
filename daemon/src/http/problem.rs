//! RFC 9457 problem details: every API error is `application/problem+json`
//! with a status, a title, and a detail a person can act on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An API error as RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (relative to the API).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The query or path parameter at fault, for 400s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// Seconds after which the same request may succeed, sent as the
    /// `Retry-After` header (not in the body).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("/problems/{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            parameter: None,
            retry_after: None,
        }
    }

    /// 421: the request's `Host` is not one of the gateway's (a rebound
    /// DNS name, see [`crate::http::host`]).
    pub fn misdirected(host: &str) -> Self {
        let shown: String = host.chars().take(80).filter(|c| !c.is_control()).collect();
        Self::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            "Misdirected request",
            format!(
                "this gateway does not answer to the name {shown:?}: open it by its IP \
                 address, or ask its admin to add the name with --server-name"
            ),
        )
    }

    /// 400: a parameter is missing or malformed; names the parameter.
    pub fn bad_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "bad-parameter",
            "Bad parameter",
            detail,
        );
        p.parameter = Some(parameter.into());
        p
    }

    /// 414: the path and query string are longer than any request jatah
    /// answers needs.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            format!("the path and query string are limited to {limit} bytes"),
        )
    }

    /// 400 about the request as a whole.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 404: unknown OPD, or one this token may not see (ids do not leak).
    pub fn no_such_opd(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no-such-opd",
            "No such OPD",
            format!("there is no OPD {id:?}"),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 401: a token is needed, or the one given is not valid.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// 401 where no token was sent.
    pub fn token_required() -> Self {
        Self::unauthorized("this needs a token (admin or opd:<id>)")
    }

    /// 401 on the status page: no token, and the visitor's address is in
    /// no OPD's subnets, so there is no OPD to show (and never another's).
    pub fn unknown_visitor(addr: Option<std::net::IpAddr>) -> Self {
        let from = addr
            .map(|a| format!("your address {} is in no OPD's network", a.to_canonical()))
            .unwrap_or_else(|| "your address is unknown".into());
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unknown-visitor",
            "Not an OPD's address",
            format!(
                "{from}: open the status page from your office's network, or use the token link \
                 Diskominfo gave your OPD (/status#token=...)"
            ),
        )
    }

    /// 403: authenticated, but this needs the admin role.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 422: understood, but refused (a reload of an invalid policy).
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            "Refused",
            detail,
        )
    }

    /// 503: a part jatah depends on is not available right now.
    pub fn unavailable(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kind,
            "Temporarily unavailable",
            detail,
        )
    }

    /// 503 with `Retry-After`: jatah is busy with requests of this kind;
    /// the same request is answered once they are done.
    pub fn busy(detail: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Busy", detail);
        p.retry_after = Some(retry_after.as_secs().max(1));
        p
    }

    /// 500: jatah failed; the detail says where.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jatah\""),
            );
        }
        res
    }
}
