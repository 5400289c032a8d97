//! A OneDrive's site collection administrators and storage quota, through the admin host of the
//! site's geo (protocol notes §14):
//! - read: CSOM `Tenant.GetSitePropertiesByUrl(url, false)` (the site's id and
//!   `StorageMaximumLevel`, in MB), then REST `SPO.Tenant/GetSiteAdministrators?siteId=` (the
//!   administrators, the owner among them);
//! - one administrator added or removed: CSOM `Tenant.SetSiteAdmin(url, loginName, bool)` — one
//!   user per call, never the whole list (people add administrators too);
//! - quota: CSOM `SiteProperties.StorageMaximumLevel` set, then `Update()`.
//!
//! CSOM answers HTTP 200 to a failed call; its `ErrorInfo` says which failure it was.

use serde_json::Value;

use super::sharepoint::{odata_message, post_query, send_admin};
use super::{M365Error, TenantClient, escape};

const TENANT_TYPE: &str = "{268004ae-ef6b-4e9b-8425-127220d84719}";
/// SharePoint's error code for "The user does not exist or is not unique."
const USER_NOT_FOUND_CODE: i64 = -2130575276;

/// What a settings call can come to, besides success: the kinds a site's condition tells apart.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// The directory has no such user (SharePoint: "The user does not exist or is not unique.").
    #[error("{call}: SharePoint does not know the user {user}: {detail}")]
    UserNotFound { call: &'static str, user: String, detail: String },
    /// SharePoint does not find the site (yet): "Cannot get site …".
    #[error("{call}: SharePoint cannot get the site yet: {detail}")]
    SiteNotFound { call: &'static str, detail: String },
    /// Anything the tenant client reports (throttled, refused, unreachable, a protocol error).
    #[error("{call}: {error}")]
    Tenant { call: &'static str, error: M365Error },
}

impl SettingsError {
    /// Whether a person must act (the declaration or the credentials), not the clock.
    pub fn needs_person(&self) -> bool {
        match self {
            SettingsError::UserNotFound { .. } => true,
            SettingsError::SiteNotFound { .. } => false,
            SettingsError::Tenant { error, .. } => error.needs_person(),
        }
    }
}

/// A site as the admin host describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSettings {
    /// The site collection administrators (the owner included), each by every name SharePoint
    /// gives (principal name, email, login name), lower-case.
    pub admins: Vec<Vec<String>>,
    pub quota_mb: Option<i64>,
}

impl SiteSettings {
    /// Whether `user` (lower-case) is an administrator by any of their names: an administrator
    /// declared by an email that differs from the principal name is found, not added again (and
    /// never taken for one the operator added).
    pub fn has(&self, user: &str) -> bool {
        self.admins.iter().any(|names| names.iter().any(|n| n == user))
    }

    /// One name per administrator (the principal name where there is one).
    pub fn names(&self) -> Vec<&str> {
        self.admins.iter().filter_map(|n| n.first().map(String::as_str)).collect()
    }
}

fn csom_head() -> String {
    format!(
        "<Request xmlns=\"http://schemas.microsoft.com/sharepoint/clientquery/2009\" SchemaVersion=\"15.0.0.0\" LibraryVersion=\"16.0.0.0\" ApplicationName=\"onedrive-operator/{}\">",
        env!("CARGO_PKG_VERSION")
    )
}

pub(crate) fn properties_request(site_url: &str) -> String {
    format!(
        "{}<Actions><ObjectPath Id=\"2\" ObjectPathId=\"1\" /><ObjectPath Id=\"4\" ObjectPathId=\"3\" /><Query Id=\"5\" ObjectPathId=\"3\"><Query SelectAllProperties=\"false\"><Properties><Property Name=\"SiteId\" ScalarProperty=\"true\" /><Property Name=\"StorageMaximumLevel\" ScalarProperty=\"true\" /></Properties></Query></Query></Actions><ObjectPaths><Constructor Id=\"1\" TypeId=\"{TENANT_TYPE}\" /><Method Id=\"3\" ParentId=\"1\" Name=\"GetSitePropertiesByUrl\"><Parameters><Parameter Type=\"String\">{}</Parameter><Parameter Type=\"Boolean\">false</Parameter></Parameters></Method></ObjectPaths></Request>",
        csom_head(),
        escape::xml(site_url)
    )
}

pub(crate) fn set_admin_request(site_url: &str, user: &str, admin: bool) -> String {
    format!(
        "{}<Actions><ObjectPath Id=\"2\" ObjectPathId=\"1\" /><ObjectPath Id=\"4\" ObjectPathId=\"3\" /></Actions><ObjectPaths><Constructor Id=\"1\" TypeId=\"{TENANT_TYPE}\" /><Method Id=\"3\" ParentId=\"1\" Name=\"SetSiteAdmin\"><Parameters><Parameter Type=\"String\">{}</Parameter><Parameter Type=\"String\">{}</Parameter><Parameter Type=\"Boolean\">{admin}</Parameter></Parameters></Method></ObjectPaths></Request>",
        csom_head(),
        escape::xml(site_url),
        escape::xml(user)
    )
}

pub(crate) fn set_quota_request(site_url: &str, mb: i64) -> String {
    format!(
        "{}<Actions><ObjectPath Id=\"2\" ObjectPathId=\"1\" /><ObjectPath Id=\"4\" ObjectPathId=\"3\" /><SetProperty Id=\"5\" ObjectPathId=\"3\" Name=\"StorageMaximumLevel\"><Parameter Type=\"Int64\">{mb}</Parameter></SetProperty><ObjectPath Id=\"7\" ObjectPathId=\"6\" /><Query Id=\"8\" ObjectPathId=\"6\"><Query SelectAllProperties=\"false\"><Properties><Property Name=\"IsComplete\" ScalarProperty=\"true\" /></Properties></Query></Query></Actions><ObjectPaths><Constructor Id=\"1\" TypeId=\"{TENANT_TYPE}\" /><Method Id=\"3\" ParentId=\"1\" Name=\"GetSitePropertiesByUrl\"><Parameters><Parameter Type=\"String\">{}</Parameter><Parameter Type=\"Boolean\">false</Parameter></Parameters></Method><Method Id=\"6\" ParentId=\"3\" Name=\"Update\" /></ObjectPaths></Request>",
        csom_head(),
        escape::xml(site_url)
    )
}

/// Posts a CSOM request: its result array (`ErrorInfo` included), or why there is none.
async fn query(client: &TenantClient, admin_url: &str, xml: String) -> Result<Vec<Value>, M365Error> {
    match post_query(client, admin_url, xml).await? {
        (_, Value::Array(items)) if !items.is_empty() => Ok(items),
        (403, _) => Err(M365Error::PermissionMissing(
            "SharePoint refused the admin call (403): the app needs Sites.FullControl.All, or the delegated user must be a SharePoint administrator".into(),
        )),
        (status, _) => Err(M365Error::Unreachable(format!("CSOM ProcessQuery answered {status} without a result array"))),
    }
}

/// A CSOM call's failure, classified: `ErrorInfo` read, the rest as the enqueue reads it.
fn classify(
    call: &'static str,
    user: Option<&str>,
    answer: Result<Vec<Value>, M365Error>,
) -> Result<Vec<Value>, SettingsError> {
    let items = answer.map_err(|error| SettingsError::Tenant { call, error })?;
    let info = &items[0]["ErrorInfo"];
    if info.is_null() {
        return Ok(items);
    }
    let kind = info["ErrorTypeName"].as_str().unwrap_or("");
    let message = info["ErrorMessage"].as_str().unwrap_or("");
    let code = info["ErrorCode"].as_i64().unwrap_or(0);
    // Bounded: the text comes from the network and lands in a status message.
    let detail: String = format!("{kind} ({code}): {message}").chars().take(200).collect();
    Err(if code == USER_NOT_FOUND_CODE || message.contains("does not exist or is not unique") {
        SettingsError::UserNotFound { call, user: user.unwrap_or("").to_string(), detail }
    } else if kind.ends_with("SpoNoSiteException") || message.starts_with("Cannot get site") {
        SettingsError::SiteNotFound { call, detail }
    } else if kind.contains("UnauthorizedAccess") || code == -2147024891 || message.contains("Access denied")
    {
        SettingsError::Tenant {
            call,
            error: M365Error::PermissionMissing(format!(
                "SharePoint refused {call} ({detail}). Fix: the app needs SharePoint Sites.FullControl.All (certificate), or the delegated user must be a SharePoint administrator"
            )),
        }
    } else {
        SettingsError::Tenant { call, error: M365Error::Protocol(format!("{call}: {detail}")) }
    })
}

impl TenantClient {
    /// The administrators and quota of the site at `site_url`, asked of `admin_url`.
    pub async fn site_settings(
        &self,
        admin_url: &str,
        site_url: &str,
    ) -> Result<SiteSettings, SettingsError> {
        let call = "GetSitePropertiesByUrl";
        let items = classify(call, None, query(self, admin_url, properties_request(site_url)).await)?;
        let props = items
            .iter()
            .find(|v| v["_ObjectType_"].as_str().is_some_and(|t| t.ends_with("SiteProperties")))
            .ok_or_else(|| SettingsError::Tenant {
                call,
                error: M365Error::Protocol("GetSitePropertiesByUrl answered without SiteProperties".into()),
            })?;
        let quota_mb = props["StorageMaximumLevel"].as_i64();
        // `/Guid(…)/` in CSOM's JSON.
        let id = props["SiteId"].as_str().unwrap_or("").trim_start_matches("/Guid(").trim_end_matches(")/");
        // Only a GUID goes into the next request's query.
        let guid = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !guid {
            return Err(SettingsError::Tenant {
                call,
                error: M365Error::Protocol("GetSitePropertiesByUrl answered without a site id".into()),
            });
        }
        let admins = self.site_admins(admin_url, id).await?;
        Ok(SiteSettings { admins, quota_mb })
    }

    async fn site_admins(&self, admin_url: &str, site_id: &str) -> Result<Vec<Vec<String>>, SettingsError> {
        let call = "GetSiteAdministrators";
        let url = format!("{admin_url}/_api/SPO.Tenant/GetSiteAdministrators");
        let query = format!("'{site_id}'");
        let response = send_admin(self, admin_url, |http, token| {
            http.post(&url)
                .query(&[("siteId", query.as_str())])
                .bearer_auth(token)
                .header("accept", "application/json;odata=nometadata")
                .header("content-length", "0")
        })
        .await
        .map_err(|error| SettingsError::Tenant { call, error })?;
        let body = response.json_or_null();
        if response.status != 200 {
            let detail = odata_message(&body);
            if response.status == 403 || detail.contains("UnauthorizedAccess") {
                return Err(SettingsError::Tenant {
                    call,
                    error: M365Error::PermissionMissing(format!(
                        "SharePoint refused {call} ({}: {detail})",
                        response.status
                    )),
                });
            }
            if response.status == 404 {
                return Err(SettingsError::SiteNotFound { call, detail });
            }
            return Err(SettingsError::Tenant {
                call,
                error: M365Error::Unreachable(format!("{call} answered {}: {detail}", response.status)),
            });
        }
        let Some(list) = body["value"].as_array() else {
            return Err(SettingsError::Tenant {
                call,
                error: M365Error::Protocol(format!("{call} answered without a value array")),
            });
        };
        Ok(list
            .iter()
            .map(|a| {
                // `i:0#.f|membership|alice@contoso.com`: the name after the claim's prefix.
                let login = a["loginName"].as_str().and_then(|l| l.rsplit('|').next());
                let mut names: Vec<String> = [a["userPrincipalName"].as_str(), a["email"].as_str(), login]
                    .into_iter()
                    .flatten()
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| s.contains('@'))
                    .collect();
                names.dedup();
                names
            })
            .filter(|names| !names.is_empty())
            .collect())
    }

    /// Makes `user` a site collection administrator of `site_url` (`admin`), or no longer one.
    pub async fn set_site_admin(
        &self,
        admin_url: &str,
        site_url: &str,
        user: &str,
        admin: bool,
    ) -> Result<(), SettingsError> {
        let xml = set_admin_request(site_url, user, admin);
        classify("SetSiteAdmin", Some(user), query(self, admin_url, xml).await).map(|_| ())
    }

    /// Sets the site's storage quota to `mb` megabytes.
    pub async fn set_storage_quota(
        &self,
        admin_url: &str,
        site_url: &str,
        mb: i64,
    ) -> Result<(), SettingsError> {
        let xml = set_quota_request(site_url, mb);
        classify("SetStorageQuota", None, query(self, admin_url, xml).await).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_escape_what_they_carry() {
        let xml = set_admin_request("https://x/personal/a/", "o'neil&co@contoso.com", true);
        assert!(xml.contains("<Parameter Type=\"String\">o&apos;neil&amp;co@contoso.com</Parameter>"));
        assert!(xml.contains("<Parameter Type=\"Boolean\">true</Parameter>"));
        assert!(
            set_quota_request("https://x/p/", 1024).contains("<Parameter Type=\"Int64\">1024</Parameter>")
        );
        assert!(properties_request("https://x/<p>/").contains("https://x/&lt;p&gt;/"));
    }
}
