//! The pages the binary serves beside the API: the web page at `/` (plain HTML, JavaScript and
//! CSS from `services/api/web/`, built into the binary: no build step, nothing fetched from
//! elsewhere), Swagger UI at `/docs` and the OpenAPI document.

use poem::http::header;
use poem::{Endpoint, Request, Response};

pub(crate) const HTML: &str = "text/html; charset=utf-8";
pub(crate) const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub(crate) const CSS: &str = "text/css; charset=utf-8";

pub(crate) const INDEX: &str = include_str!("../web/index.html");
pub(crate) const SCRIPT: &str = include_str!("../web/app.js");
pub(crate) const STYLE: &str = include_str!("../web/style.css");

/// The web page runs only its own script and style and talks only to this server: a transcript
/// or a file name that holds markup cannot run. `blob:` plays the chosen file and saves
/// downloads.
const WEB_PAGE_POLICY: &str = "default-src 'self'; media-src 'self' blob:; style-src 'self'; \
     script-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// One of the web page's files, with the page's headers: its policy, no sniffing, and
/// revalidation (a new binary may serve a new page).
pub(crate) fn page(content_type: &'static str, body: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, WEB_PAGE_POLICY)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
}

/// A body made once, served as is (the document, Swagger UI).
#[derive(Clone)]
pub(crate) struct Page {
    content_type: &'static str,
    body: bytes::Bytes,
}

impl Page {
    pub(crate) fn new(content_type: &'static str, body: String) -> Self {
        Self {
            content_type,
            body: body.into(),
        }
    }
}

impl Endpoint for Page {
    type Output = Response;

    async fn call(&self, _request: Request) -> poem::Result<Response> {
        Ok(Response::builder()
            .content_type(self.content_type)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .body(self.body.clone()))
    }
}
