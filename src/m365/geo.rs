//! Multi-Geo: a tenant's geos (declared in the spec, discovered from Graph) and which admin host
//! serves which user (`reference/m365-protocol.md` §8).
//!
//! Each geo has its own admin host and user-profile service; Microsoft's own enqueue cmdlets are
//! not Multi-Geo aware, so the operator sends each user only to their geo's admin host.

use std::time::{Duration, Instant};

use super::paging::{PageError, each_page};
use super::{EndpointPolicy, M365Error, TenantClient};
use crate::api::{Cloud, GeoSpec};

/// How long a discovery stands before it is made again (geos are added rarely, by Microsoft).
const REDISCOVER_AFTER: Duration = Duration::from_secs(3600);
/// How soon a failed rediscovery is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// One geo as the tenant client routes to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geo {
    /// `dataLocationCode` (NAM, EUR, ...); empty for a single-geo tenant's geo, or for a central
    /// geo that discovery could not place.
    pub location: String,
    /// The admin host its users are enqueued through (and their profiles read at).
    pub admin_url: String,
    pub central: bool,
}

/// One geo's root site as Graph lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSite {
    pub location: String,
    pub web_url: String,
}

/// Rewrites of public service origins to loopback URLs, for tests and the demo only: a preset or
/// discovered host (`https://contosoeur-admin.sharepoint.com`) is pointed at the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostOverrides(Vec<(String, String)>);

impl HostOverrides {
    /// `FROM=TO` pairs; `TO` must be loopback (this is no way to reach another service).
    pub fn parse(pairs: &[String]) -> Result<HostOverrides, String> {
        let mut out = Vec::new();
        for p in pairs {
            let (from, to) = p
                .split_once('=')
                .ok_or_else(|| format!("host override {p:?} is not FROM=TO (e.g. https://graph.microsoft.us=http://127.0.0.1:8080/graph)"))?;
            let to = to.trim_end_matches('/');
            if !is_loopback(to) {
                return Err(format!(
                    "host override target {to:?} is not a loopback http:// URL: overrides exist for tests and the demo only"
                ));
            }
            out.push((origin(from).to_string(), to.to_string()));
        }
        Ok(HostOverrides(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `url` with an overridden origin replaced; other URLs unchanged.
    pub fn apply(&self, url: &str) -> String {
        let url = url.trim_end_matches('/');
        for (from, to) in &self.0 {
            if origin(url).eq_ignore_ascii_case(from) {
                return format!("{to}{}", &url[origin(url).len()..]);
            }
        }
        url.to_string()
    }
}

fn is_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    name == "localhost"
        || name == "[::1]"
        || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find(['/', '?', '#']).map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// A geo's admin host from its root site: the first host label plus `-admin`
/// (`https://contosoeur.sharepoint.com` → `https://contosoeur-admin.sharepoint.com`).
pub fn admin_url_of(root_web_url: &str) -> Option<String> {
    let o = origin(root_web_url);
    let (scheme, host) = o.split_once("://")?;
    let (first, rest) = host.split_once('.')?;
    if first.is_empty() || rest.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{first}-admin.{rest}"))
}

/// The tenant's geos: the central one (`spec.adminUrl`) first, then the satellites by location.
/// A discovered geo whose admin host is `spec.adminUrl` names the central geo; a declared geo
/// wins over a discovered one of the same location. A discovered admin host outside the
/// tenant's cloud is left out (Graph's answer does not choose where requests go).
pub fn resolve(
    central_admin_url: &str,
    declared: &[GeoSpec],
    discovered: &[RootSite],
    cloud: Cloud,
    policy: &EndpointPolicy,
) -> Vec<Geo> {
    let central_url = central_admin_url.trim_end_matches('/').to_string();
    let mut central = Geo { location: String::new(), admin_url: central_url.clone(), central: true };
    let mut satellites: Vec<Geo> = Vec::new();
    let mut place = |location: &str, admin_url: String, central: &mut Geo| {
        if admin_url.eq_ignore_ascii_case(&central.admin_url) {
            central.location = location.to_string();
            satellites.retain(|g| g.location != location);
        } else {
            satellites.retain(|g| g.location != location);
            satellites.push(Geo { location: location.to_string(), admin_url, central: false });
        }
    };
    for site in discovered.iter().filter(|s| !s.location.is_empty()) {
        match admin_url_of(&site.web_url) {
            Some(admin) if policy.admits_admin_host(cloud, &admin) => {
                place(&site.location, policy.apply(&admin), &mut central)
            }
            _ => tracing::warn!(
                location = %site.location,
                "a discovered geo's root site is not on the tenant's cloud: the geo is left out"
            ),
        }
    }
    for g in declared {
        place(&g.location, policy.apply(&g.admin_url), &mut central);
    }
    // A location both central and satellite (declared so) belongs to the central geo.
    let central_location = central.location.clone();
    satellites.retain(|g| g.location != central_location || central_location.is_empty());
    satellites.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = vec![central];
    out.extend(satellites);
    out
}

/// Pages of root sites read at most: one root site per geo, a handful of geos.
const MAX_ROOT_SITE_PAGES: u64 = 20;

/// Graph: every geo's root site (`siteCollection.dataLocationCode`, empty in a single-geo tenant).
pub(super) async fn root_sites(client: &TenantClient) -> Result<Vec<RootSite>, M365Error> {
    let url = format!(
        "{}/v1.0/sites?$filter=siteCollection/root%20ne%20null&$select=webUrl,siteCollection",
        client.config.graph_url
    );
    let mut out = Vec::new();
    let read = each_page(client, url, MAX_ROOT_SITE_PAGES, 1, |site| {
        let Some(web_url) = site["webUrl"].as_str() else { return };
        let location = site["siteCollection"]["dataLocationCode"].as_str().unwrap_or("").to_string();
        out.push(RootSite { location, web_url: web_url.to_string() });
    })
    .await;
    // A root-site list that cannot be read whole is not a list of geos: routing on part of it
    // would send a satellite's users to the central geo.
    match read {
        Ok(_) => Ok(out),
        Err(PageError::Tenant(e)) => Err(e),
        Err(PageError::Status { status: status @ (401 | 403), .. }) => {
            Err(M365Error::PermissionMissing(format!(
                "Microsoft Graph refused to list the geos' root sites (GET /sites, {status}): grant the app Sites.Read.All with admin consent"
            )))
        }
        Err(PageError::Status { status, code }) => Err(M365Error::Unreachable(format!(
            "Graph GET /sites (the geos' root sites) answered {status} {code}"
        ))),
        Err(PageError::Broken(why)) => {
            Err(M365Error::Protocol(format!("Graph GET /sites (the geos' root sites): {why}")))
        }
    }
}

/// What the client knows of the tenant's geos, and since when.
#[derive(Default)]
pub(super) struct Known {
    pub(super) geos: Option<(Instant, Vec<Geo>)>,
}

impl TenantClient {
    /// The tenant's geos, the central one first: discovered at most hourly, merged with the
    /// declared ones. A failed rediscovery keeps the geos known before (and is tried again in a
    /// few minutes); an error means no discovery ever succeeded: the caller decides what to do
    /// with the central and declared geos alone ([`TenantClient::known_geos`]).
    pub async fn geos(&self) -> Result<Vec<Geo>, M365Error> {
        if let Some((at, geos)) = &self.geos.lock().unwrap().geos
            && at.elapsed() < REDISCOVER_AFTER
        {
            return Ok(geos.clone());
        }
        match root_sites(self).await {
            Ok(found) => {
                let c = &self.config;
                let geos = resolve(&c.admin_url, &c.geos, &found, c.cloud, &c.policy);
                self.geos.lock().unwrap().geos = Some((Instant::now(), geos.clone()));
                Ok(geos)
            }
            Err(e) => match &mut self.geos.lock().unwrap().geos {
                Some((at, geos)) => {
                    tracing::warn!(error = %e, "geo discovery failed; the geos known before stand");
                    // Not asked again at every cycle: in a few minutes.
                    *at = Instant::now().checked_sub(REDISCOVER_AFTER - RETRY_AFTER).unwrap_or(*at);
                    Ok(geos.clone())
                }
                None => Err(e),
            },
        }
    }

    /// The geos as last discovered (no request): the central geo alone before any discovery.
    pub fn known_geos(&self) -> Vec<Geo> {
        match &self.geos.lock().unwrap().geos {
            Some((_, geos)) => geos.clone(),
            None => {
                let c = &self.config;
                resolve(&c.admin_url, &c.geos, &[], c.cloud, &c.policy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(location: &str, url: &str) -> RootSite {
        RootSite { location: location.into(), web_url: url.into() }
    }

    #[test]
    fn admin_hosts_are_the_first_label_plus_admin() {
        assert_eq!(
            admin_url_of("https://contosoeur.sharepoint.com").as_deref(),
            Some("https://contosoeur-admin.sharepoint.com")
        );
        assert_eq!(
            admin_url_of("https://contoso.sharepoint.us/").as_deref(),
            Some("https://contoso-admin.sharepoint.us")
        );
        assert_eq!(admin_url_of("https://localhost"), None);
    }

    #[test]
    fn discovery_names_the_central_geo_and_declared_geos_win() {
        let found = [
            root("NAM", "https://contoso.sharepoint.com"),
            root("EUR", "https://contosoeur.sharepoint.com"),
            root("APC", "https://contosoapc.sharepoint.com"),
        ];
        let declared =
            [GeoSpec { location: "EUR".into(), admin_url: "https://eur-admin.sharepoint.com".into() }];
        let geos = resolve(
            "https://contoso-admin.sharepoint.com/",
            &declared,
            &found,
            Cloud::Global,
            &EndpointPolicy::Pinned,
        );
        let view: Vec<(&str, &str, bool)> =
            geos.iter().map(|g| (g.location.as_str(), g.admin_url.as_str(), g.central)).collect();
        assert_eq!(
            view,
            vec![
                ("NAM", "https://contoso-admin.sharepoint.com", true),
                ("APC", "https://contosoapc-admin.sharepoint.com", false),
                ("EUR", "https://eur-admin.sharepoint.com", false),
            ]
        );
    }

    #[test]
    fn a_discovered_host_outside_the_cloud_is_left_out() {
        let found = [
            root("NAM", "https://contoso.sharepoint.com"),
            root("EUR", "https://contosoeur.evil.example"),
            root("APC", "http://127.0.0.1:9"),
        ];
        let geos = resolve(
            "https://contoso-admin.sharepoint.com",
            &[],
            &found,
            Cloud::Global,
            &EndpointPolicy::Pinned,
        );
        assert_eq!(geos.len(), 1, "{geos:?}");
        assert_eq!(geos[0].location, "NAM");
    }

    #[test]
    fn a_single_geo_tenant_is_its_central_geo_alone() {
        let geos = resolve(
            "https://contoso-admin.sharepoint.com",
            &[],
            &[root("", "https://contoso.sharepoint.com")],
            Cloud::Global,
            &EndpointPolicy::Pinned,
        );
        assert_eq!(
            geos,
            vec![Geo {
                location: String::new(),
                admin_url: "https://contoso-admin.sharepoint.com".into(),
                central: true
            }]
        );
    }

    #[test]
    fn overrides_point_public_hosts_at_loopback_only() {
        let o = HostOverrides::parse(&[
            "https://contosoeur-admin.sharepoint.com=http://127.0.0.1:9/geos/EUR/sharepoint".into(),
        ])
        .unwrap();
        assert_eq!(
            o.apply("https://contosoeur-admin.sharepoint.com/_api/contextinfo"),
            "http://127.0.0.1:9/geos/EUR/sharepoint/_api/contextinfo"
        );
        assert_eq!(o.apply("https://contoso-admin.sharepoint.com"), "https://contoso-admin.sharepoint.com");
        for bad in ["https://example.org", "http://127.evil.example", "http://127.0.0.1.example.org:80"] {
            let e = HostOverrides::parse(&[format!("https://graph.microsoft.us={bad}")]).unwrap_err();
            assert!(e.contains("not a loopback"), "{bad}: {e}");
        }
        assert!(
            HostOverrides::parse(&["https://graph.microsoft.us=http://127.0.0.2:80/graph".into()]).is_ok()
        );
        assert!(HostOverrides::parse(&["no-equals".into()]).unwrap_err().contains("FROM=TO"));
    }
}
