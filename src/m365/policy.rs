//! The endpoint policy: where the operator may send a tenant's credentials and requests.
//!
//! A tenant writer chooses *which* tenant and credentials, never *where* they go: every endpoint
//! of a tenant (`authorityHost`, `graphUrl`, `adminUrl`, `geos[].adminUrl`, and admin hosts
//! discovered from Graph) must be one of the hosts of its `spec.cloud`
//! (`reference/m365-protocol.md` §9). Other hosts, plain `http://` and loopback are refused with
//! `InvalidSpec` naming the field, unless the operator *process* was started with
//! `--allow-endpoint-overrides` (`ALLOW_ENDPOINT_OVERRIDES=1`): the simulator, tests, the demo and
//! the development cluster. Nothing a tenant writer controls can turn that on.
//!
//! The same rule guards every request the client sends ([`EndpointPolicy::admits`]), so a host
//! that did not come from a checked field (a discovered geo, a `nextLink`) is refused too.

use reqwest::Url;

use super::{HostOverrides, M365Error};
use crate::api::{Cloud, OneDriveTenantSpec};

/// The flag that opts the operator process in to endpoints outside the tenant's cloud.
pub const ALLOW_FLAG: &str = "--allow-endpoint-overrides";
/// The same opt-in as an environment variable (`1` or `true`).
pub const ALLOW_ENV: &str = "ALLOW_ENDPOINT_OVERRIDES";
/// Tests and the demo point public hosts at a simulator with this variable: `FROM=TO` pairs,
/// comma-separated, loopback targets only. Honoured only with the opt-in.
pub const HOST_OVERRIDES_ENV: &str = "ONEDRIVE_OPERATOR_TEST_HOST_OVERRIDES";

/// Which Microsoft service a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Entra,
    Graph,
    SharePoint,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Entra => "Entra ID",
            Service::Graph => "Microsoft Graph",
            Service::SharePoint => "SharePoint",
        }
    }
}

/// Where a tenant's requests may go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EndpointPolicy {
    /// Only the hosts of the tenant's cloud, over https (the default).
    #[default]
    Pinned,
    /// The operator process opted in: any `https://` URL, `http://` on loopback, and the test
    /// host overrides (public hosts pointed at a simulator).
    Overridable(HostOverrides),
}

impl EndpointPolicy {
    /// The policy of a process started with (`allow`) or without the opt-in; the test host
    /// overrides in `env` need the opt-in.
    pub fn from_opt_in(allow: bool, env: &dyn Fn(&str) -> Option<String>) -> Result<EndpointPolicy, String> {
        let pairs: Vec<String> = env(HOST_OVERRIDES_ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        match (allow, pairs.is_empty()) {
            (false, true) => Ok(EndpointPolicy::Pinned),
            (false, false) => Err(format!(
                "{HOST_OVERRIDES_ENV} is set, but endpoint overrides are off: start with {ALLOW_FLAG} (or {ALLOW_ENV}=1) to use them (tests, the simulator and demos only)"
            )),
            (true, _) => HostOverrides::parse(&pairs)
                .map(EndpointPolicy::Overridable)
                .map_err(|e| format!("{HOST_OVERRIDES_ENV}: {e}")),
        }
    }

    /// The opt-in without host overrides (tests and tools that point tenants at a simulator).
    pub fn overridable() -> EndpointPolicy {
        EndpointPolicy::Overridable(HostOverrides::default())
    }

    pub fn allows_overrides(&self) -> bool {
        matches!(self, EndpointPolicy::Overridable(_))
    }

    /// `url` with a test host override applied (unchanged without the opt-in).
    pub fn apply(&self, url: &str) -> String {
        match self {
            EndpointPolicy::Pinned => url.trim_end_matches('/').to_string(),
            EndpointPolicy::Overridable(o) => o.apply(url),
        }
    }

    /// Every endpoint field of `spec` is allowed; the error names the first that is not.
    pub fn check_spec(&self, spec: &OneDriveTenantSpec) -> Result<(), M365Error> {
        let cloud = spec.cloud;
        let mut fields: Vec<(String, &str, Service)> = vec![
            ("spec.authorityHost".into(), spec.authority_host(), Service::Entra),
            ("spec.graphUrl".into(), spec.graph_url(), Service::Graph),
            ("spec.adminUrl".into(), spec.admin_url.as_str(), Service::SharePoint),
        ];
        for (i, g) in spec.geos.iter().enumerate() {
            fields.push((format!("spec.geos[{i}].adminUrl"), g.admin_url.as_str(), Service::SharePoint));
        }
        for (field, url, service) in fields {
            if let Err(why) = self.root(cloud, service, url) {
                return Err(M365Error::InvalidSpec(format!(
                    "{field} {url:?} is refused: {why}. Fix: {}",
                    fix(cloud, service)
                )));
            }
        }
        Ok(())
    }

    /// Whether `url`, a configured root (no query, no fragment, and under the cloud: no path
    /// either), is allowed for `service`.
    fn root(&self, cloud: Cloud, service: Service, url: &str) -> Result<(), String> {
        let parsed = Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err("a service root has no query or fragment".into());
        }
        self.check(cloud, service, &parsed)?;
        if matches!(self, EndpointPolicy::Pinned) && !matches!(parsed.path(), "" | "/") {
            return Err(format!("{}'s hosts are used without a path", service.name()));
        }
        Ok(())
    }

    /// Whether a request to `url` may go out for a tenant in `cloud`.
    pub fn admits(&self, cloud: Cloud, service: Service, url: &Url) -> Result<(), M365Error> {
        self.check(cloud, service, url).map_err(|why| {
            M365Error::InvalidSpec(format!(
                "a request to {} ({}) was stopped before it was sent: {why}",
                url.host_str().unwrap_or("no host"),
                service.name()
            ))
        })
    }

    fn check(&self, cloud: Cloud, service: Service, url: &Url) -> Result<(), String> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a URL with credentials in it".into());
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if host.is_empty() {
            return Err("a URL without a host".into());
        }
        if let EndpointPolicy::Overridable(_) = self {
            return match url.scheme() {
                "https" => Ok(()),
                "http" if is_loopback(url) => Ok(()),
                _ => Err("only https://, or http:// on loopback, even with endpoint overrides".into()),
            };
        }
        if url.scheme() != "https" {
            return Err(format!(
                "{}:// is not allowed: Microsoft's hosts are https:// (plain http:// and loopback need the operator's {ALLOW_FLAG})",
                url.scheme()
            ));
        }
        if url.port().is_some() {
            return Err("Microsoft's hosts are reached on the https port only".into());
        }
        let allowed = match service {
            Service::Entra => host == host_of(cloud.authority_host()),
            Service::Graph => host == host_of(cloud.graph_url()),
            Service::SharePoint => is_sharepoint_host(cloud, &host),
        };
        if allowed {
            Ok(())
        } else {
            Err(format!("{host} is not a {} host of the {cloud} cloud", service.name()))
        }
    }

    /// A discovered geo's admin host may be routed to: refused hosts are left out of routing.
    pub fn admits_admin_host(&self, cloud: Cloud, url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| self.check(cloud, Service::SharePoint, &u).is_ok())
    }
}

/// `contoso-admin.sharepoint.com`: one DNS label (letters, digits, hyphens) before the cloud's
/// SharePoint suffix.
fn is_sharepoint_host(cloud: Cloud, host: &str) -> bool {
    host.strip_suffix(cloud.sharepoint_suffix()).is_some_and(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
    })
}

fn host_of(root: &str) -> String {
    Url::parse(root).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn fix(cloud: Cloud, service: Service) -> String {
    match service {
        Service::Entra => format!(
            "remove spec.authorityHost to use the {cloud} cloud's {} (or set spec.cloud to the tenant's cloud)",
            cloud.authority_host()
        ),
        Service::Graph => format!(
            "remove spec.graphUrl to use the {cloud} cloud's {} (or set spec.cloud to the tenant's cloud)",
            cloud.graph_url()
        ),
        Service::SharePoint => format!(
            "use the tenant's SharePoint admin host, e.g. https://contoso-admin{} (or set spec.cloud to the tenant's cloud)",
            cloud.sharepoint_suffix()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GeoSpec, OneDriveTenantSpec};

    fn spec(admin: &str) -> OneDriveTenantSpec {
        OneDriveTenantSpec {
            tenant_id: "contoso.onmicrosoft.com".into(),
            admin_url: admin.into(),
            ..Default::default()
        }
    }

    fn refused(policy: &EndpointPolicy, s: &OneDriveTenantSpec) -> String {
        match policy.check_spec(s) {
            Err(M365Error::InvalidSpec(m)) => m,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn the_clouds_own_hosts_pass_and_everything_else_is_refused_naming_the_field() {
        let pinned = EndpointPolicy::Pinned;
        assert!(pinned.check_spec(&spec("https://contoso-admin.sharepoint.com")).is_ok());
        assert!(pinned.check_spec(&spec("https://contoso-admin.sharepoint.com/")).is_ok());
        let mut s = spec("https://contoso-admin.sharepoint.com");
        s.authority_host = Some("https://login.evil.example".into());
        assert!(refused(&pinned, &s).starts_with("spec.authorityHost"));
        s.authority_host = None;
        s.graph_url = Some("http://127.0.0.1:9/graph".into());
        let m = refused(&pinned, &s);
        assert!(m.starts_with("spec.graphUrl") && m.contains(ALLOW_FLAG), "{m}");
        s.graph_url = None;
        for bad in [
            "https://contoso-admin.sharepoint.com.evil.example",
            "https://evil.example/contoso-admin.sharepoint.com",
            "https://user@contoso-admin.sharepoint.com",
            "https://contoso-admin.sharepoint.com:8443",
            "https://a.b.sharepoint.com",
            "https://contoso-admin.sharepoint.us",
            "https://contoso-admin.sharepoint.com/sites/x",
            "https://contoso-admin.sharepoint.com?x=1",
        ] {
            assert!(refused(&pinned, &spec(bad)).starts_with("spec.adminUrl"), "{bad}");
        }
        s.geos = vec![GeoSpec { location: "EUR".into(), admin_url: "https://eur.evil.example".into() }];
        assert!(refused(&pinned, &s).starts_with("spec.geos[0].adminUrl"));
    }

    #[test]
    fn each_cloud_accepts_its_own_presets() {
        for cloud in Cloud::ALL {
            let s = OneDriveTenantSpec {
                cloud,
                admin_url: format!("https://contoso-admin{}", cloud.sharepoint_suffix()),
                ..Default::default()
            };
            assert!(EndpointPolicy::Pinned.check_spec(&s).is_ok(), "{cloud}");
        }
        let mut us = spec("https://contoso-admin.sharepoint.us");
        us.cloud = Cloud::USGovGCCHigh;
        us.graph_url = Some("https://graph.microsoft.com".into());
        assert!(refused(&EndpointPolicy::Pinned, &us).starts_with("spec.graphUrl"));
    }

    #[test]
    fn the_opt_in_admits_loopback_and_https_but_no_other_scheme() {
        let open = EndpointPolicy::overridable();
        let mut s = spec("http://127.0.0.1:8080/sharepoint");
        s.graph_url = Some("http://localhost:8080/graph".into());
        s.authority_host = Some("https://login.example.test".into());
        assert!(open.check_spec(&s).is_ok());
        s.graph_url = Some("http://10.0.0.1/graph".into());
        assert!(refused(&open, &s).starts_with("spec.graphUrl"));
        s.graph_url = Some("ftp://127.0.0.1/graph".into());
        assert!(refused(&open, &s).starts_with("spec.graphUrl"));
    }

    #[test]
    fn host_overrides_need_the_opt_in() {
        let env = |k: &str| {
            (k == HOST_OVERRIDES_ENV).then(|| "https://graph.microsoft.us=http://127.0.0.1:9/g".into())
        };
        let e = EndpointPolicy::from_opt_in(false, &env).unwrap_err();
        assert!(e.contains(ALLOW_FLAG), "{e}");
        let p = EndpointPolicy::from_opt_in(true, &env).unwrap();
        assert_eq!(p.apply("https://graph.microsoft.us/v1.0"), "http://127.0.0.1:9/g/v1.0");
        assert_eq!(EndpointPolicy::from_opt_in(false, &|_| None).unwrap(), EndpointPolicy::Pinned);
    }

    #[test]
    fn requests_are_checked_against_the_service_they_go_to() {
        let pinned = EndpointPolicy::Pinned;
        let url = |u: &str| Url::parse(u).unwrap();
        let g = Cloud::Global;
        assert!(pinned.admits(g, Service::Graph, &url("https://graph.microsoft.com/v1.0/$batch")).is_ok());
        assert!(pinned.admits(g, Service::Graph, &url("https://graph.microsoft.us/v1.0/$batch")).is_err());
        assert!(pinned.admits(g, Service::Entra, &url("https://graph.microsoft.com/x")).is_err());
        assert!(
            pinned
                .admits(g, Service::SharePoint, &url("https://contosoeur-admin.sharepoint.com/_api/x"))
                .is_ok()
        );
        assert!(pinned.admits_admin_host(g, "https://contosoeur-admin.sharepoint.com"));
        assert!(!pinned.admits_admin_host(g, "https://eur.evil.example"));
    }
}
