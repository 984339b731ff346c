//! `/v2/images` handlers: create, list, show, patch, delete, tags and the
//! deactivate/reactivate actions. Thin: parse, call the catalogue, shape the reply.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use super::forwarded::ClientView;
use std::sync::Arc;

use super::{ApiContext, ApiError, wire};
use crate::domain::caller::Caller;
use crate::domain::patch::Dialect;
use crate::domain::query::ListQuery;
use crate::service::handover::{Resumed, TransferPause};
use crate::service::{Download, Listed, ServiceError};

/// Parses a JSON request body the way Glance's deserializer does.
pub fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("Body expected in request.".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::BadRequest("Malformed JSON in request body.".into()))?;
    if !value.is_object() && !value.is_array() {
        return Err(ApiError::BadRequest(
            "Unexpected body type. Expected list/dict.".into(),
        ));
    }
    Ok(value)
}

pub async fn create(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Extension(view): Extension<ClientView>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Value::Object(attributes) = json_body(&body)? else {
        return Err(ApiError::BadRequest(
            "Provided object does not match schema 'image': the body must be a JSON object".into(),
        ));
    };
    let image = ctx.catalog.create(&caller, attributes).await?;
    let mut response = (StatusCode::CREATED, Json(wire::image(&image, ctx.show))).into_response();
    let headers = response.headers_mut();
    if let Ok(location) =
        HeaderValue::from_str(&format!("{}/v2/images/{}", view.base_url, image.id))
    {
        headers.insert(LOCATION, location);
    }
    // What openstacksdk reads to decide whether it may import into this image.
    if let Ok(methods) = HeaderValue::from_str(&ctx.catalog.import_methods().join(",")) {
        headers.insert("openstack-image-import-methods", methods);
    }
    let stores: Vec<String> = ctx
        .catalog
        .store_infos()
        .into_iter()
        .map(|s| s.id)
        .collect();
    if let Ok(stores) = HeaderValue::from_str(&stores.join(",")) {
        headers.insert("openstack-image-store-ids", stores);
    }
    Ok(response)
}

pub async fn list(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let list_query = ListQuery::parse(&params)?;
    let raw = query.as_deref().unwrap_or_default();
    let written = match ctx.catalog.list_written(&caller, &list_query, raw).await? {
        Listed::Written(written) => written,
        Listed::Read { page, keep } => {
            let list = wire::image_list(&page.images, &params, page.full, ctx.show);
            let written = Bytes::from(
                serde_json::to_vec(&list).map_err(|e| ApiError::Internal(e.to_string()))?,
            );
            keep.keep(written.clone());
            written
        }
    };
    Ok(([(CONTENT_TYPE, "application/json")], written).into_response())
}

pub async fn show(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let image = ctx.catalog.get(&caller, &id).await?;
    Ok(Json(wire::image(&image, ctx.show)).into_response())
}

pub async fn update(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let dialect = match media.as_deref() {
        Some("application/openstack-images-v2.1-json-patch") => Dialect::V21,
        Some("application/openstack-images-v2.0-json-patch") => Dialect::V20,
        _ => return Err(ApiError::PatchMediaType),
    };
    let patch = json_body(&body)?;
    let image = ctx.catalog.update(&caller, &id, &patch, dialect).await?;
    Ok(Json(wire::image(&image, ctx.show)).into_response())
}

pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.add_tag(&caller, &id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.remove_tag(&caller, &id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn deactivate(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.set_active(&caller, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reactivate(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.set_active(&caller, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v2/images/{id}/file`: the body streams into the store (chunked or not). The
/// connection may let the upload pause at a stop (`TransferPause`); the request that
/// carries a paused upload on in the next process is `Resumed`.
pub async fn upload(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    pause: Option<Extension<Arc<TransferPause>>>,
    resumed: Option<Extension<Resumed>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let pause = pause.map(|Extension(pause)| pause);
    if let Some(Extension(Resumed(paused))) = resumed {
        return take_data(body, async |stream| {
            ctx.catalog
                .resume_upload(&caller, &paused, stream, pause.as_deref())
                .await
        })
        .await;
    }
    require_octet_stream(&headers)?;
    let declared = declared_size(&headers)?;
    let store = header_store(&headers)?;
    take_data(body, async |stream| {
        ctx.catalog
            .upload(&caller, &id, store, declared, stream, pause.as_deref())
            .await
    })
    .await
}

/// `PUT /v2/images/{id}/stage`: the body streams into the staging area (chunked or not).
pub async fn stage(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    require_octet_stream(&headers)?;
    let declared = declared_size(&headers)?;
    take_data(body, async |stream| {
        ctx.catalog.stage(&caller, &id, declared, stream).await
    })
    .await
}

/// A request body as the catalogue reads image data.
type DataStream = futures_util::stream::Map<
    axum::body::BodyDataStream,
    fn(Result<Bytes, axum::Error>) -> Result<Bytes, std::io::Error>,
>;

/// Hands the body of a data transfer (upload or staging) to `write`; if `write` refuses it,
/// what the client is still sending is drained before the error is answered.
async fn take_data(
    body: Body,
    write: impl AsyncFnOnce(&mut DataStream) -> Result<(), ServiceError>,
) -> Result<StatusCode, ApiError> {
    let to_io: fn(Result<Bytes, axum::Error>) -> Result<Bytes, std::io::Error> =
        |chunk| chunk.map_err(std::io::Error::other);
    let mut stream: DataStream = body.into_data_stream().map(to_io);
    match write(&mut stream).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => {
            drain(&mut stream).await;
            Err(e.into())
        }
    }
}

/// `X-Image-Meta-Store`: the store an upload or import names.
pub fn header_store(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("x-image-meta-store") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| ApiError::BadRequest("Invalid X-Image-Meta-Store header.".into())),
    }
}

fn require_octet_stream(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if media.split(';').next().map(str::trim) != Some("application/octet-stream") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Invalid content type {media}"
        )));
    }
    Ok(())
}

/// How much of a refused upload is still read before answering, and for how long.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads (and drops) what the client is still sending, within bounds: closing a socket with
/// unread data resets it, and the client would lose the error response it is owed.
async fn drain<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    let read = async {
        let mut total = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            total += chunk.len() as u64;
            if total > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// `x-openstack-image-size`, else `Content-Length`; 0 or absent means unknown.
fn declared_size(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let invalid =
        || ApiError::BadRequest("Invalid or missing image size in request headers.".into());
    let value = headers
        .get("x-openstack-image-size")
        .or_else(|| headers.get(CONTENT_LENGTH));
    match value {
        None => Ok(None),
        Some(v) => {
            let n: u64 = v
                .to_str()
                .map_err(|_| invalid())?
                .trim()
                .parse()
                .map_err(|_| invalid())?;
            Ok((n > 0).then_some(n))
        }
    }
}

/// `GET /v2/images/{id}/file`: 200 streamed, 206 for one range, 204 without data.
pub async fn download(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (copies, size, checksum) = match ctx.catalog.download(&caller, &id).await? {
        Download::NoData => return Ok(StatusCode::NO_CONTENT.into_response()),
        Download::Data {
            copies,
            size,
            checksum,
        } => (copies, size, checksum),
    };
    let range = match headers.get(RANGE) {
        Some(value) => Some(parse_range(value.to_str().unwrap_or(""), size)?),
        None => None,
    };
    let length = range.map_or(size, |(a, b)| b - a + 1);
    let body = Body::from_stream(copies.open(range).await?);
    let mut response = Response::new(body);
    let response_headers = response.headers_mut();
    response_headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(md5) = checksum.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response_headers.insert("content-md5", md5);
    }
    if let Some((a, b)) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")) {
            response.headers_mut().insert(CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// One `bytes=` range as inclusive offsets, clamped as Glance clamps them.
fn parse_range(header: &str, size: u64) -> Result<(u64, u64), ApiError> {
    let unsatisfiable = || ApiError::RangeNotSatisfiable("Invalid Range header.".into());
    let spec = header
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(unsatisfiable)?;
    if spec.contains(',') {
        return Err(ApiError::BadRequest(
            "Multiple ranges are not supported.".into(),
        ));
    }
    let (first, last) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| unsatisfiable());
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (false, true) => (number(first)?, size.saturating_sub(1)),
        (false, false) => (number(first)?, number(last)?.min(size.saturating_sub(1))),
        (true, true) => return Err(unsatisfiable()),
    };
    if start >= size {
        return Err(ApiError::RangeNotSatisfiable(format!(
            "Invalid start position in Range header. Start position MUST be in the inclusive range [0, {}].",
            size.saturating_sub(1)
        )));
    }
    if end < start {
        return Err(unsatisfiable());
    }
    Ok((start, end))
}

/// `GET /v2/images/{id}/locations`.
pub async fn locations(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let image = ctx.catalog.locations(&caller, &id).await?;
    Ok(Json(wire::locations(&image)).into_response())
}

/// `POST /v2/images/{id}/locations`: `{"url": …, "validation_data": {"os_hash_algo": …,
/// "os_hash_value": …}}`.
pub async fn add_location(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let url = body.get("url").and_then(Value::as_str).ok_or_else(|| {
        ApiError::BadRequest(
            "Provided object does not match schema: 'url' is a required property".into(),
        )
    })?;
    let validation = match body.get("validation_data") {
        None | Some(Value::Null) => None,
        Some(data) => {
            let field = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
            match (field("os_hash_algo"), field("os_hash_value")) {
                (Some(algo), Some(value)) => Some((algo, value)),
                _ => {
                    return Err(ApiError::BadRequest(
                        "validation_data needs os_hash_algo and os_hash_value".into(),
                    ));
                }
            }
        }
    };
    ctx.catalog
        .add_location(&caller, &id, url, validation)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod range_tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_glance() {
        assert_eq!(parse_range("bytes=0-9", 100).ok(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-200", 100).ok(), Some((90, 99)));
        assert_eq!(parse_range("bytes=10-", 100).ok(), Some((10, 99)));
        assert_eq!(parse_range("bytes=-10", 100).ok(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-1000", 100).ok(), Some((0, 99)));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=0-1,5-6", 100).is_err());
        assert!(parse_range("bytes=x-1", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
        assert!(parse_range("bytes=5-2", 100).is_err());
    }
}
