//! Multi-Geo in the simulator: the tenant's geos, which admin host a request reached, where each
//! user's OneDrive belongs, each geo's root site, and the host overrides that point an operator's
//! discovery at this simulator.

use super::{Sim, SimHandle, UserSpec};

impl Sim {
    /// The admin host of a geo (`None`: the central one), which is also its token audience.
    pub(crate) fn sharepoint_resource_at(&self, geo: Option<&str>) -> String {
        match geo {
            Some(g) => format!("{}/geos/{g}/sharepoint", self.base),
            None => self.sharepoint_resource(),
        }
    }

    /// Every admin host's resource (token audience).
    pub(crate) fn sharepoint_resources(&self) -> Vec<String> {
        let mut out = vec![self.sharepoint_resource()];
        out.extend(self.config.geos.iter().skip(1).map(|g| self.sharepoint_resource_at(Some(g))));
        out
    }

    /// The central geo's location ("" for a single-geo tenant).
    pub(crate) fn central_location(&self) -> &str {
        self.config.geos.first().map_or("", String::as_str)
    }

    /// The geo a user's OneDrive belongs to: their preferred data location when the tenant has
    /// that geo, else the central geo (Microsoft's rule).
    pub(crate) fn location_of(&self, user: &UserSpec) -> &str {
        user.preferred_data_location
            .as_deref()
            .and_then(|p| self.config.geos.iter().find(|g| g.eq_ignore_ascii_case(p)))
            .map_or(self.central_location(), String::as_str)
    }

    /// The satellite geo an admin-host path is for: `/geos/EUR/sharepoint/...` → `Some("EUR")`;
    /// `/sharepoint/...` → `None`. `Err` for a geo the tenant does not have.
    pub(crate) fn host_geo<'p>(&self, path: &'p str) -> Result<Option<&'p str>, ()> {
        let Some(rest) = path.strip_prefix("/geos/") else { return Ok(None) };
        let geo = rest.split('/').next().unwrap_or_default();
        if self.config.geos.iter().skip(1).any(|g| g == geo) { Ok(Some(geo)) } else { Err(()) }
    }

    /// The tenant's name, as its SharePoint hosts start (`contoso` of `contoso.onmicrosoft.com`).
    fn tenant_name(&self) -> &str {
        self.config.domain.split('.').next().unwrap_or("contoso")
    }

    /// Each geo's root site as Graph lists it: (location, webUrl), the central geo first.
    pub(crate) fn root_sites(&self) -> Vec<(String, String)> {
        let name = self.tenant_name();
        if self.config.geos.is_empty() {
            return vec![(String::new(), format!("https://{name}.sharepoint.com"))];
        }
        self.config
            .geos
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let host = if i == 0 { name.to_string() } else { format!("{name}{}", g.to_lowercase()) };
                (g.clone(), format!("https://{host}.sharepoint.com"))
            })
            .collect()
    }
}

impl SimHandle {
    /// A geo's admin host here (`None`: the central geo's).
    pub fn admin_url_at(&self, geo: Option<&str>) -> String {
        self.sim.sharepoint_resource_at(geo)
    }

    /// `FROM=TO` host overrides (`ONEDRIVE_OPERATOR_TEST_HOST_OVERRIDES`, tests and the demo
    /// only) that point each geo's public admin host, as discovery derives it from the geo's root
    /// site, at this simulator. Empty for a single-geo tenant.
    pub fn host_overrides(&self) -> Vec<String> {
        if self.sim.config.geos.is_empty() {
            return Vec::new();
        }
        self.sim
            .root_sites()
            .iter()
            .enumerate()
            .filter_map(|(i, (geo, web_url))| {
                let admin = crate::m365::admin_url_of(web_url)?;
                let here = self.sim.sharepoint_resource_at((i > 0).then_some(geo.as_str()));
                Some(format!("{admin}={here}"))
            })
            .collect()
    }
}
