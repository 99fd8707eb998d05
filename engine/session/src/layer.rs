//! The middleware: [`SessionLayer`] (a tower `Layer`) and its
//! [`SessionService`], and the axum extractor for [`Session`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response as AxumResponse};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::session::Session;
use crate::sessions::Sessions;

/// A tower layer that gives every request a lazy [`Session`] (in its
/// extensions, and as an axum extractor) and, once the inner service has
/// answered, saves what needs saving and adds the `Set-Cookie` header.
///
/// A request that never touches its session costs no storage access and
/// gets no cookie. When the end-of-request save fails, the response is
/// replaced by the error's ([`SessionError`](crate::SessionError)'s table: 507 for a cookie
/// session too large for a cookie, 503 for a session lock not granted in
/// time, 500 for a storage failure), logged, and nothing panics.
#[derive(Clone, Debug)]
pub struct SessionLayer {
    sessions: Sessions,
}

impl SessionLayer {
    /// The layer of `sessions`.
    pub fn new(sessions: Sessions) -> SessionLayer {
        SessionLayer { sessions }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService {
            inner,
            sessions: self.sessions.clone(),
        }
    }
}

/// The service of a [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    sessions: Sessions,
}

/// The values of the request's cookies named `name`, in header order.
fn cookie_values<B>(req: &Request<B>, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    for header in req.headers().get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for c in cookie::Cookie::split_parse(text).flatten() {
            if c.name() == name {
                values.push(c.value().to_string());
            }
        }
    }
    values
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let cookies = cookie_values(&req, &self.sessions.config().key);
        let session = Session::new(self.sessions.clone(), cookies);
        req.extensions_mut().insert(session.clone());
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            match session.finish().await {
                Ok(None) => {}
                Ok(Some(set_cookie)) => match HeaderValue::from_str(&set_cookie) {
                    Ok(v) => {
                        response.headers_mut().append(SET_COOKIE, v);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the session cookie is not a valid header value");
                        response = error_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "session error: the session cookie is not a valid header value\n"
                                .to_string(),
                        );
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "saving the session failed; the response is replaced by the error");
                    response = error_response(e.status(), format!("session error: {e}\n"));
                    if e.status() == StatusCode::SERVICE_UNAVAILABLE {
                        response
                            .headers_mut()
                            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                }
            }
            Ok(response)
        })
    }
}

fn error_response<B: From<String>>(status: StatusCode, body: String) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The rejection of the [`Session`] extractor: the route is not wrapped
/// by a [`SessionLayer`] (a server misconfiguration, answered with 500).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no session layer wraps this route (add SessionLayer to the router)")]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> AxumResponse {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{self}\n")).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}
