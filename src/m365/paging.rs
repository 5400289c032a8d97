//! The one way to follow Graph's `@odata.nextLink`: every listing (personal sites, the
//! directory, the geos' root sites) reads its pages here. A link must stay on the tenant's Graph
//! host and under its root (the bearer token goes nowhere else), a listing reads at most
//! `max_pages` pages (a link that points at itself ends), and each page is read under a size cap.

use reqwest::Url;
use serde_json::Value;

use super::graph::with_token;
use super::http::{Answer, MAX_PAGE_BODY, Service};
use super::{M365Error, TenantClient};

/// Why a listing ended early.
#[derive(Debug, thiserror::Error)]
pub(super) enum PageError {
    /// The request failed as any other would (throttled, unreachable, too large, redirected).
    #[error(transparent)]
    Tenant(M365Error),
    /// Graph answered a page with this status (and error code).
    #[error("HTTP {status} {code}")]
    Status { status: u16, code: String },
    /// A page that is not a page, a link that leaves Graph, too many pages.
    #[error("{0}")]
    Broken(String),
}

/// Reads every page from `first` on (at most `max_pages`), counting `units` of Graph's
/// throttling cost per page and calling `each` for every item; returns the pages read.
pub(super) async fn each_page(
    client: &TenantClient,
    first: String,
    max_pages: u64,
    units: u64,
    each: impl FnMut(Value),
) -> Result<u64, PageError> {
    Ok(each_page_of(client, Query::Standard, first, max_pages, units, each).await?.read)
}

/// What a listing read: its pages, and the total the first page announced (`@odata.count`, an
/// advanced query's).
pub(super) struct Pages {
    pub(super) read: u64,
    pub(super) count: Option<u64>,
}

/// How Graph is asked for a listing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Query {
    Standard,
    /// An advanced query (a cast on a member collection, `$count`): every page carries
    /// `ConsistencyLevel: eventual`, and is served from an index that may lag.
    Advanced,
}

/// [`each_page`] for a query of the given kind. An advanced query's page must hold a `value`
/// list: a page without one is refused rather than read as empty (a member list read short
/// would look like people leaving).
pub(super) async fn each_page_of(
    client: &TenantClient,
    query: Query,
    first: String,
    max_pages: u64,
    units: u64,
    mut each: impl FnMut(Value),
) -> Result<Pages, PageError> {
    let root = &client.config.graph_url;
    let mut url = first;
    let mut read = 0;
    let mut count = None;
    loop {
        if read == max_pages {
            return Err(PageError::Broken(format!(
                "more than {max_pages} pages: the listing was not read to its end"
            )));
        }
        let answer = page(client, &url, query).await?;
        read += 1;
        client.http.count_units(Service::Graph, units);
        let mut body = answer.json().map_err(|e| PageError::Broken(format!("a page is not a page: {e}")))?;
        if query == Query::Advanced && !body["value"].is_array() {
            return Err(PageError::Broken("a page without a value list".into()));
        }
        if read == 1 {
            count = body["@odata.count"].as_u64();
        }
        for item in body["value"].as_array_mut().map(std::mem::take).into_iter().flatten() {
            each(item);
        }
        match body["@odata.nextLink"].as_str() {
            None => return Ok(Pages { read, count }),
            Some(next) if stays_on(next, root) => url = next.to_string(),
            Some(next) => {
                let host = Url::parse(next).ok().and_then(|u| u.host_str().map(str::to_string));
                return Err(PageError::Broken(format!(
                    "a nextLink pointing away from Microsoft Graph (to {}): not followed",
                    host.as_deref().unwrap_or("an unreadable URL")
                )));
            }
        }
    }
}

async fn page(client: &TenantClient, url: &str, query: Query) -> Result<Answer, PageError> {
    let answer = with_token(client, MAX_PAGE_BODY, |token| {
        let request = client.http.client().get(url).bearer_auth(token);
        match query {
            Query::Standard => request,
            Query::Advanced => request.header("ConsistencyLevel", "eventual"),
        }
    })
    .await
    .map_err(PageError::Tenant)?;
    match answer.status {
        200 => Ok(answer),
        status => {
            let code =
                answer.json_or_null()["error"]["code"].as_str().unwrap_or("").chars().take(60).collect();
            Err(PageError::Status { status, code })
        }
    }
}

/// Whether `link` has the scheme, host and port of the Graph root `root`, under its path.
pub(super) fn stays_on(link: &str, root: &str) -> bool {
    let (Ok(link), Ok(root)) = (Url::parse(link), Url::parse(root)) else { return false };
    let prefix = root.path().trim_end_matches('/');
    link.scheme() == root.scheme()
        && link.host_str() == root.host_str()
        && link.port_or_known_default() == root.port_or_known_default()
        && link.username().is_empty()
        && link.password().is_none()
        && (prefix.is_empty() || link.path() == prefix || link.path().starts_with(&format!("{prefix}/")))
}

#[cfg(test)]
mod tests {
    use super::stays_on;

    #[test]
    fn links_stay_on_the_graph_root() {
        let root = "https://graph.microsoft.com";
        assert!(stays_on("https://graph.microsoft.com/v1.0/users?$skiptoken=x", root));
        for away in [
            "https://graph.microsoft.com.evil.example/v1.0/users",
            "http://graph.microsoft.com/v1.0/users",
            "https://graph.microsoft.com:8443/v1.0/users",
            "https://user@graph.microsoft.com/v1.0/users",
            "https://evil.example/https://graph.microsoft.com/",
            "/v1.0/users",
        ] {
            assert!(!stays_on(away, root), "{away}");
        }
        let sim = "http://127.0.0.1:9/graph";
        assert!(stays_on("http://127.0.0.1:9/graph/v1.0/users?$skiptoken=x", sim));
        assert!(!stays_on("http://127.0.0.1:9/graphs/v1.0/users", sim));
        assert!(!stays_on("http://127.0.0.1:9/sharepoint/_api", sim));
        assert!(!stays_on("http://127.0.0.1:10/graph/v1.0/users", sim));
    }
}
