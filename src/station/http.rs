//! The station's routes: pages (one embedded shell that the script fills in), the JSON API, the live
//! feed, and the writes (login, acknowledge, shelve, recalculate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, COOKIE, LoginError, Session};
use super::users::Role;
use super::{Shared, assets, payloads, sse};
use crate::config::StationView;

/// Largest request body (a login or an acknowledgement is a few hundred bytes).
pub const MAX_BODY: usize = 16 * 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/ch/:name", get(page))
        .route("/alarms", get(page))
        .route("/devices", get(page))
        .route("/login", get(page))
        .route("/assets/:file", get(asset))
        .route("/api/session", get(session_info))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/overview", get(overview))
        .route("/api/ch/:name", get(characteristic))
        .route("/api/alarms", get(alarms))
        .route("/api/devices", get(devices))
        .route("/api/stream", get(sse::stream))
        .route("/api/ack", post(ack))
        .route("/api/shelve", post(shelve))
        .route("/api/recalculate", post(recalculate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn current_session(shared: &Shared, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers, COOKIE)?;
    let s = shared.auth.session(&id)?;
    Some((id, s))
}

/// Security headers on everything; with `view = "login"`, looking needs a session too.
async fn guard(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let public = path == "/login"
        || path.starts_with("/assets/")
        || path == "/api/session"
        || path == "/api/login";
    if shared.cfg.view == StationView::Login
        && !public
        && current_session(&shared, req.headers()).is_none()
    {
        return if path.starts_with("/api/") {
            error(StatusCode::UNAUTHORIZED, "log in first")
        } else {
            Redirect::to("/login").into_response()
        };
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// zh-CN or en: the `lang` cookie (the page's switch), else the browser's Accept-Language.
pub fn language(headers: &HeaderMap) -> &'static str {
    if let Some(l) = cookie(headers, "lang") {
        return if l.starts_with("zh") { "zh-CN" } else { "en" };
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut best: Option<(f32, &'static str)> = None;
    for item in accept.split(',') {
        let mut parts = item.trim().split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
            .unwrap_or(1.0);
        let lang = if tag.starts_with("zh") {
            "zh-CN"
        } else if tag.starts_with("en") {
            "en"
        } else {
            continue;
        };
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or("en", |(_, l)| l)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn page(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path();
    let (page, ch) = match path {
        "/" => ("overview", String::new()),
        "/alarms" => ("alarms", String::new()),
        "/devices" => ("devices", String::new()),
        "/login" => ("login", String::new()),
        p => match p.strip_prefix("/ch/") {
            Some(raw) => {
                let name = percent_decode(raw);
                if !shared.hub.knows(&name) {
                    return error(StatusCode::NOT_FOUND, "no such characteristic");
                }
                ("characteristic", name)
            }
            None => return error(StatusCode::NOT_FOUND, "not found"),
        },
    };
    let body = assets::INDEX
        .replace("{{LANG}}", language(req.headers()))
        .replace("{{PAGE}}", page)
        .replace("{{CH}}", &html_escape(&ch))
        .replace("{{AGENT}}", &html_escape(&shared.agent_id));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn asset(Path(file): Path<String>) -> Response {
    match assets::get(&file) {
        Some((ctype, body)) => (
            [
                (header::CONTENT_TYPE, ctype),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such asset"),
    }
}

async fn session_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let s = current_session(&shared, &headers).map(|(_, s)| s);
    Json(json!({
        "user": s.as_ref().map(|s| s.user.clone()),
        "role": s.as_ref().map(|s| s.role.as_str()),
        "csrf": s.as_ref().map(|s| s.csrf.clone()),
        "view": match shared.cfg.view { StationView::Open => "open", StationView::Login => "login" },
        "causes": shared.cfg.causes,
        "actions": shared.cfg.actions,
        "agent": shared.agent_id,
        "lang": language(&headers),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<LoginBody>,
) -> Response {
    if body.user.len() > 64 || body.password.len() > 1024 {
        return error(StatusCode::BAD_REQUEST, "too long");
    }
    // argon2 takes tens of milliseconds of CPU: off the async threads, and only a couple at once.
    let Ok(_permit) = shared.login_slots.clone().acquire_owned().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "stopping");
    };
    let auth = shared.clone();
    let user = body.user.clone();
    let result =
        tokio::task::spawn_blocking(move || auth.auth.login(peer.ip(), &body.user, &body.password))
            .await;
    match result {
        Ok(Ok(id)) => {
            let s = shared.auth.session(&id);
            tracing::info!(user = %user, client = %peer, "station login");
            let secure = if shared.tls { "; Secure" } else { "" };
            let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}");
            (
                [(header::SET_COOKIE, cookie)],
                Json(json!({
                    "user": user,
                    "role": s.as_ref().map(|s| s.role.as_str()),
                    "csrf": s.map(|s| s.csrf),
                })),
            )
                .into_response()
        }
        Ok(Err(LoginError::Limited)) => {
            tracing::warn!(user = %user, client = %peer, "station login refused: too many failures");
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins; wait a minute",
            )
        }
        Ok(Err(LoginError::Invalid)) => {
            tracing::warn!(user = %user, client = %peer, "station login failed");
            error(StatusCode::UNAUTHORIZED, "wrong user name or password")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "login failed"),
    }
}

/// The session of a write, with its CSRF token checked; the error is the response.
/// Why a write is refused (status and message), turned into a response by [`refused`].
type Refusal = (StatusCode, String);

fn refused((status, message): Refusal) -> Response {
    error(status, &message)
}

fn writer(shared: &Shared, headers: &HeaderMap) -> Result<(String, Session), Refusal> {
    let Some((id, s)) = current_session(shared, headers) else {
        return Err((StatusCode::UNAUTHORIZED, "log in first".into()));
    };
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth::same_token(token, &s.csrf) {
        return Err((StatusCode::FORBIDDEN, "bad or missing CSRF token".into()));
    }
    Ok((id, s))
}

async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match writer(&shared, &headers) {
        Ok((id, s)) => {
            shared.auth.logout(&id);
            tracing::info!(user = %s.user, "station logout");
            (
                [(
                    header::SET_COOKIE,
                    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
                )],
                Json(json!({"ok": true})),
            )
                .into_response()
        }
        Err(r) => refused(r),
    }
}

async fn overview(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.hub.overview()).into_response()
}

async fn characteristic(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.hub.snapshot(&name) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such characteristic"),
    }
}

async fn alarms(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.hub.alarms()).into_response()
}

async fn devices(State(shared): State<Arc<Shared>>) -> Response {
    Json(super::devices_doc(&shared)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    characteristic: String,
    /// An alarm's seq, a list of them, or "all".
    alarm_seq: Value,
    cause: Option<String>,
    action: Option<String>,
}

/// A choice from a pick list (any text when the list is empty), at most 200 bytes.
fn pick(list: &[String], value: Option<String>, what: &str) -> Result<Option<String>, Refusal> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) if v.len() > 200 => Err((StatusCode::BAD_REQUEST, format!("{what} is too long"))),
        Some(v) if !list.is_empty() && !list.contains(&v) => Err((
            StatusCode::BAD_REQUEST,
            format!("{what} is not one of the configured choices"),
        )),
        Some(v) => Ok(Some(v)),
    }
}

fn valid_selection(v: &Value) -> bool {
    match v {
        Value::String(s) => s == "all",
        Value::Number(n) => n.as_u64().is_some(),
        Value::Array(a) => {
            !a.is_empty() && a.len() <= 1000 && a.iter().all(|x| x.as_u64().is_some())
        }
        _ => false,
    }
}

async fn ack(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<AckBody>,
) -> Response {
    let (_, s) = match writer(&shared, &headers) {
        Ok(x) => x,
        Err(r) => return refused(r),
    };
    if !shared.hub.knows(&body.characteristic) {
        return error(StatusCode::NOT_FOUND, "no such characteristic");
    }
    if !valid_selection(&body.alarm_seq) {
        return error(
            StatusCode::BAD_REQUEST,
            "alarm_seq must be an alarm's seq, a list of them, or \"all\"",
        );
    }
    let cause = match pick(&shared.cfg.causes, body.cause, "cause") {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let action = match pick(&shared.cfg.actions, body.action, "action") {
        Ok(a) => a,
        Err(r) => return refused(r),
    };
    let cmd = payloads::ack_command(
        &body.characteristic,
        &body.alarm_seq,
        &s.user,
        cause.as_deref(),
        action.as_deref(),
    );
    submit(&shared, &s, peer, cmd)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    characteristic: String,
    /// Lift a shelve instead.
    #[serde(default)]
    unshelve: bool,
    /// How long, e.g. "30m".
    #[serde(rename = "for")]
    duration: Option<String>,
    note: Option<String>,
}

/// Shelving suppresses a characteristic's new alarms for a while (SPC-SCHEMA.md, `spc.suppression`).
async fn shelve(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<ShelveBody>,
) -> Response {
    let (_, s) = match writer(&shared, &headers) {
        Ok(x) => x,
        Err(r) => return refused(r),
    };
    if !shared.hub.knows(&body.characteristic) {
        return error(StatusCode::NOT_FOUND, "no such characteristic");
    }
    if body.note.as_ref().is_some_and(|r| r.len() > 1000)
        || body.duration.as_ref().is_some_and(|d| d.len() > 20)
    {
        return error(StatusCode::BAD_REQUEST, "too long");
    }
    let cmd = payloads::shelve_command(
        &body.characteristic,
        &s.user,
        body.unshelve,
        body.duration.as_deref(),
        body.note.as_deref(),
    );
    submit(&shared, &s, peer, cmd)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecalcBody {
    characteristic: String,
}

async fn recalculate(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<RecalcBody>,
) -> Response {
    let (_, s) = match writer(&shared, &headers) {
        Ok(x) => x,
        Err(r) => return refused(r),
    };
    if s.role != Role::Engineer {
        return error(
            StatusCode::FORBIDDEN,
            "recalculating limits needs the engineer role",
        );
    }
    if !shared.hub.knows(&body.characteristic) {
        return error(StatusCode::NOT_FOUND, "no such characteristic");
    }
    let cmd = payloads::recalculate_command(&body.characteristic, &s.user);
    submit(&shared, &s, peer, cmd)
}

/// Hands a command to SPC through the same channel the MQTT command topic feeds; SPC stores the
/// resulting event (with the user in `by`) and forwards it like any other.
fn submit(shared: &Shared, s: &Session, peer: SocketAddr, cmd: Value) -> Response {
    let id = format!(
        "station-{}",
        shared.next_command.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = cmd;
    cmd["id"] = id.clone().into();
    tracing::info!(user = %s.user, role = s.role.as_str(), client = %peer, command = %cmd, "station command");
    match super::submit_command(&shared.commands, &s.user, cmd) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"ok": true, "id": id}))).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// Live streams open now (for the limit and the bench).
pub type StreamCount = Arc<AtomicUsize>;

#[derive(Deserialize)]
pub struct StreamQuery {
    pub ch: Option<String>,
}

pub type StreamParams = Query<StreamQuery>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(v).unwrap());
            language(&m)
        };
        assert_eq!(h("zh-CN,zh;q=0.9,en;q=0.8"), "zh-CN");
        assert_eq!(h("en-US,en;q=0.9,zh-CN;q=0.8"), "en");
        assert_eq!(h("de-DE,zh;q=0.5"), "zh-CN");
        assert_eq!(h("fr"), "en");
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        m.insert(header::COOKIE, HeaderValue::from_static("a=b; lang=zh-CN"));
        assert_eq!(language(&m), "zh-CN", "the switch wins");
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("bore%2Ddiameter"), "bore-diameter");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(html_escape("<a\"&>"), "&lt;a&quot;&amp;&gt;");
    }
}
