//! The one mapping from API errors to HTTP: Glance's (WebOb's) error bodies, negotiated on
//! the request's `Accept` header. Handlers return `ApiError`; the request middleware, which
//! sees the request, writes the body with `ErrorFormat`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::domain::DomainError;
use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// A PATCH with a media type other than the two JSON-patch dialects.
    #[error("Image PATCH expects Content-Type one of: {ACCEPT_PATCH}")]
    PatchMediaType,
    /// Too busy now, or a service glint needs is; the client may try again (after
    /// `retry_after` seconds, when known).
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<u64>,
    },
    /// No valid token: keystonemiddleware's 401, naming where to get one.
    #[error("The request you have made requires authentication.")]
    TokenRequired { uri: String },
    /// The service failed, not the request; the detail is logged, not shown.
    #[error("{0}")]
    Internal(String),
}

/// The media types `PATCH /v2/images/{id}` accepts.
pub const ACCEPT_PATCH: &str =
    "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch";

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::PatchMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TokenRequired { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Seconds a client is told to wait after the database failed its request.
const DATABASE_RETRY_AFTER: u64 = 2;
/// An object store failing or unreachable has already been retried for seconds.
const STORE_RETRY_AFTER: u64 = 5;

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Domain(e) => e.into(),
            ServiceError::Db(e) => ApiError::Internal(e.to_string()),
            unavailable @ ServiceError::StoreUnavailable { .. } => ApiError::Unavailable {
                message: unavailable.to_string(),
                retry_after: Some(STORE_RETRY_AFTER),
            },
            ServiceError::Store(e) => ApiError::Internal(e.to_string()),
            unavailable @ ServiceError::DatabaseUnavailable => ApiError::Unavailable {
                message: unavailable.to_string(),
                retry_after: Some(DATABASE_RETRY_AFTER),
            },
            ServiceError::Unavailable(message) => ApiError::Unavailable {
                message,
                retry_after: None,
            },
            busy @ ServiceError::Busy { retry_after } => ApiError::Unavailable {
                message: busy.to_string(),
                retry_after: Some(retry_after.as_secs().max(1)),
            },
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid(m) => ApiError::BadRequest(m),
            DomainError::Forbidden(m) => ApiError::Forbidden(m),
            DomainError::NotFound(m) => ApiError::NotFound(m),
            DomainError::Conflict(m) => ApiError::Conflict(m),
            DomainError::OverLimit(m) => ApiError::TooLarge(m),
            DomainError::Gone(m) => ApiError::Gone(m),
            DomainError::UnacceptableData(m) => ApiError::UnsupportedMediaType(m),
        }
    }
}

/// Status and detail of an error response whose body is not written yet.
#[derive(Debug, Clone)]
struct PendingError {
    detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                String::new()
            }
            other => other.to_string(),
        };
        let mut response = status.into_response();
        match &self {
            ApiError::PatchMediaType => {
                response
                    .headers_mut()
                    .insert("accept-patch", HeaderValue::from_static(ACCEPT_PATCH));
            }
            ApiError::Unavailable {
                retry_after: Some(seconds),
                ..
            } => {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            ApiError::TokenRequired { uri } => {
                if let Ok(challenge) = HeaderValue::from_str(&format!("Keystone uri=\"{uri}\"")) {
                    response
                        .headers_mut()
                        .insert(http::header::WWW_AUTHENTICATE, challenge);
                }
            }
            _ => {}
        }
        response.extensions_mut().insert(PendingError { detail });
        response
    }
}

/// The error body format a request accepts, taken before the request is handed on; it
/// writes the body of any `ApiError` response to that request.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFormat(Format);

impl ErrorFormat {
    pub fn of(headers: &HeaderMap) -> Self {
        ErrorFormat(Format::negotiate(headers.get(ACCEPT)))
    }

    pub fn render(self, response: &mut Response) {
        let pending = response
            .extensions_mut()
            .remove::<PendingError>()
            .or_else(|| {
                // The router's own answers get Glance's body too: 405 (keeping its Allow
                // header) and 413 from the JSON body limit.
                matches!(
                    response.status(),
                    StatusCode::METHOD_NOT_ALLOWED | StatusCode::PAYLOAD_TOO_LARGE
                )
                .then(|| PendingError {
                    detail: String::new(),
                })
            });
        if let Some(pending) = pending {
            let (content_type, body) = self.0.render(response.status(), &pending.detail);
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            *response.body_mut() = Body::from(body);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Json,
    Plain,
}

impl Format {
    /// WebOb's `best_match(["text/html", "application/json"])`: the offer with the
    /// highest quality wins, ties go to HTML; no or an empty `Accept` means plain text.
    fn negotiate(accept: Option<&HeaderValue>) -> Format {
        let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
            return Format::Plain;
        };
        if accept.trim().is_empty() {
            return Format::Plain;
        }
        let html = quality(accept, "text", "html");
        let json = quality(accept, "application", "json");
        if html <= 0.0 && json <= 0.0 {
            Format::Plain
        } else if json > html {
            Format::Json
        } else {
            Format::Html
        }
    }

    fn render(self, status: StatusCode, detail: &str) -> (&'static str, String) {
        let code = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let title = status.canonical_reason().unwrap_or("");
        let explanation = default_explanation(status);
        match self {
            Format::Json => {
                let message = format!("{explanation}<br /><br />\n{detail}\n\n");
                let body = serde_json::json!({"message": message, "code": code, "title": title});
                ("application/json", body.to_string())
            }
            Format::Html => (
                "text/html; charset=UTF-8",
                format!(
                    "<html>\n <head>\n  <title>{code}</title>\n </head>\n <body>\n  <h1>{code}</h1>\n  {}<br /><br />\n{}\n\n\n </body>\n</html>",
                    escape_html(explanation),
                    escape_html(detail)
                ),
            ),
            Format::Plain => (
                "text/plain; charset=UTF-8",
                format!("{code}\n\n{explanation}\n\n{detail}\n"),
            ),
        }
    }
}

/// The quality the `Accept` header gives `kind/sub`, from its most specific matching range.
fn quality(accept: &str, kind: &str, sub: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let (rk, rs) = media.split_once('/').unwrap_or((media.as_str(), ""));
        let specificity = match (rk, rs) {
            (k, s) if k == kind && s == sub => 3,
            (k, "*") if k == kind => 2,
            ("*", "*") => 1,
            _ => continue,
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

fn default_explanation(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => {
            "The server could not comply with the request since\r\nit is either malformed or otherwise incorrect.\r\n"
        }
        401 => {
            "This server could not verify that you are authorized to\r\naccess the document you requested."
        }
        403 => "Access was denied to this resource.",
        404 => "The resource could not be found.",
        409 => "There was a conflict when trying to complete your request.",
        410 => "This resource is no longer available.  No forwarding address is given.",
        413 => "The body of your request was too large for this server.",
        405 => "The method is not allowed for this resource.",
        415 => "The request media type is not supported by this server.",
        416 => "The Range requested is not available.",
        _ => {
            "The server has either erred or is incapable of performing\r\nthe requested operation.\r\n"
        }
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &str) -> Format {
        Format::negotiate(Some(&HeaderValue::from_str(accept).unwrap()))
    }

    #[test]
    fn negotiation_follows_webob() {
        assert_eq!(Format::negotiate(None), Format::Plain);
        assert_eq!(negotiate(""), Format::Plain);
        assert_eq!(negotiate("*/*"), Format::Html);
        assert_eq!(negotiate("application/json"), Format::Json);
        assert_eq!(negotiate("application/xml"), Format::Plain);
        assert_eq!(negotiate("text/html;q=0.5, application/json"), Format::Json);
        assert_eq!(negotiate("application/json;q=0.9, */*;q=0.1"), Format::Json);
        assert_eq!(negotiate("text/*"), Format::Html);
    }

    #[test]
    fn every_domain_error_is_a_client_error() {
        // The domain's property tests check which kinds a parser raises; this is what
        // makes each kind a 4xx.
        let kinds = [
            DomainError::Invalid(String::new()),
            DomainError::Forbidden(String::new()),
            DomainError::NotFound(String::new()),
            DomainError::Conflict(String::new()),
            DomainError::OverLimit(String::new()),
            DomainError::Gone(String::new()),
            DomainError::UnacceptableData(String::new()),
        ];
        for kind in kinds {
            // Exhaustive, so that a new kind does not compile until it is listed above.
            match &kind {
                DomainError::Invalid(_)
                | DomainError::Forbidden(_)
                | DomainError::NotFound(_)
                | DomainError::Conflict(_)
                | DomainError::OverLimit(_)
                | DomainError::Gone(_)
                | DomainError::UnacceptableData(_) => {}
            }
            let status = ApiError::from(kind.clone()).status();
            assert!(status.is_client_error(), "{kind:?} is answered {status}");
        }
    }

    #[test]
    fn json_errors_nest_the_message_as_glanceclient_expects() {
        let (ct, body) = Format::Json.render(StatusCode::NOT_FOUND, "No image found with ID x");
        assert_eq!(ct, "application/json");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["code"], "404 Not Found");
        assert_eq!(value["title"], "Not Found");
        assert!(
            value["message"]
                .as_str()
                .unwrap()
                .contains("No image found with ID x")
        );
    }

    #[test]
    fn html_errors_escape_the_detail() {
        let (ct, body) = Format::Html.render(StatusCode::NOT_FOUND, "<script>");
        assert!(ct.starts_with("text/html"));
        assert!(body.contains("<h1>404 Not Found</h1>"));
        assert!(body.contains("&lt;script&gt;") && !body.contains("<script>"));
    }
}
