//! `onedrive-operator check USER…`: what the tenant says about each user, one line each, named
//! with the reason the controller would write (both read the same observation); for a user who
//! has a OneDrive, its site collection administrators and storage quota too.

use crate::cli::manifests::{Manifests, check_manifest, client_for};
use crate::m365::{EndpointPolicy, Geo, M365Error, SettingsError, TenantClient};
use crate::plan::{Lookup, Observation, ProfileMeaning, reason, user_key};

/// `check`: each user's observed state, one line per user, named with the reason the
/// controller would write (both read the same observation: one classification).
pub async fn check_users(
    m: &Manifests,
    users: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    policy: &EndpointPolicy,
) -> Result<Vec<String>, M365Error> {
    check_manifest(m, policy)?;
    for u in users {
        crate::api::validate::user(u).map_err(M365Error::InvalidRequest)?;
    }
    let client = client_for(m, env, policy)?;
    // Profiles are read at each user's geo's admin host: learn the geos first.
    let geos = client.geos().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the tenant's geos are unknown; profiles are read at the central admin host");
        Vec::new()
    });
    let lookups: Vec<Lookup> = users.iter().map(|u| Lookup::exact(u)).collect();
    let seen = client.observe_lookups(&lookups).await?;
    let mut lines = Vec::with_capacity(users.len());
    for u in users {
        let o = seen.get(&user_key(u));
        let mut line = format!("{u}: {}", describe(o));
        if let Some(Observation::HasSite { url }) = o {
            line.push_str(&format!("; {}", settings_of(&client, &geos, url).await));
        }
        lines.push(line);
    }
    Ok(lines)
}

/// The site's administrators and quota in words, asked of the admin host that finds it (its
/// geo's: the central one first, then the others).
async fn settings_of(client: &TenantClient, geos: &[Geo], url: &str) -> String {
    let central = client.config().admin_url.clone();
    let mut hosts = vec![central.clone()];
    hosts.extend(geos.iter().map(|g| g.admin_url.clone()).filter(|h| *h != central));
    for host in &hosts {
        match client.site_settings(host, url).await {
            Ok(s) => {
                let quota = s.quota_mb.map_or("unknown".to_string(), |mb| format!("{mb} MB"));
                return format!(
                    "site administrators: {} (the owner among them); storage quota: {quota}",
                    s.names().join(", ")
                );
            }
            Err(SettingsError::SiteNotFound { .. }) => continue,
            Err(e) => return format!("site administrators and quota unknown: {e}"),
        }
    }
    "site administrators and quota unknown: no admin host of the tenant finds the site".into()
}

/// One observation in words, led by the reason a `OneDriveSite` would show.
pub fn describe(o: Option<&Observation>) -> String {
    let Some(o) = o else { return "unknown: not looked up".into() };
    if let Some(reason) = o.refusal() {
        let detail = match o {
            Observation::Profile(p) => format!("the user profile shows {} ({})", p.name, p.code),
            Observation::UserNotFound => "no such user in the directory".into(),
            Observation::UserNotLicensed => "no enabled SharePoint plan in the directory".into(),
            _ => {
                "the account may not sign in (accountEnabled is false), so SharePoint never creates its site"
                    .into()
            }
        };
        return format!("{reason}: {detail}");
    }
    match o {
        Observation::HasSite { url } => format!("{}: has a OneDrive at {url}", reason::PROVISIONED),
        Observation::NoSite => format!(
            "{}: no OneDrive yet; licensed and allowed to sign in, so it can be enqueued",
            reason::PENDING
        ),
        Observation::Profile(p) if p.meaning == ProfileMeaning::Working => format!(
            "{}: no OneDrive yet; the user profile shows {} ({}): SharePoint is creating it",
            reason::SPSSITEERROR,
            p.name,
            p.code
        ),
        Observation::Profile(p) => {
            format!("{}: no OneDrive; the user profile shows {} ({})", reason::PENDING, p.name, p.code)
        }
        Observation::LookupFailed { status, code } => format!(
            "unknown: the tenant answered HTTP {status} ({code}), which says nothing about the OneDrive ({} when it repeats)",
            reason::LOOKUP_FAILING
        ),
        _ => "unknown: the lookup got no answer (throttled or unavailable)".into(),
    }
}
