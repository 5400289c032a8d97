//! What the operator makes true on a OneDrive once it exists: its site collection
//! administrators and its storage quota — the tenant's policy for them, the quantity notation
//! of a quota, and what a site's status remembers of what was applied.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// SharePoint counts a quota in megabytes of 1,048,576 bytes.
pub const MEGABYTE: u128 = 1024 * 1024;
/// The largest quota an administrator may set (5 TB; more only through Microsoft support).
pub const MAX_STORAGE_QUOTA_MB: i64 = 5 * 1024 * 1024;
/// The least quota SharePoint documents (1 GB; smaller values are rounded up to it).
pub const MIN_STORAGE_QUOTA_MB: i64 = 1024;

/// A Kubernetes quantity from 1Gi to 5Ti: SharePoint's documented least (1 GB) and the most an
/// administrator may set (5 TB).
pub const STORAGE_QUOTA: &str = "isQuantity(self) && quantity(self).compareTo(quantity('1Gi')) >= 0 && quantity(self).compareTo(quantity('5Ti')) <= 0";
pub const STORAGE_QUOTA_MESSAGE: &str = "storageQuota must be a quantity from 1Gi to 5Ti, e.g. 1Ti or 500Gi: SharePoint documents 1 GB as the least and lets an administrator set up to 5 TB (more only through Microsoft support); it is rounded up to whole megabytes (MiB)";

/// Every entry a user principal name, as `spec.user` is.
pub const SITE_ADMINS: &str =
    concat!("self.all(a, a.matches('", "^[^@[:space:]]+@([^@[:space:].]+[.])+[^@[:space:].]+$", "'))");
pub const SITE_ADMINS_MESSAGE: &str = "siteAdmins must list user principal names such as migration@contoso.com (users only: SharePoint's Set-SPOUser documents users, not groups, as site collection administrators)";
/// No administrator twice.
pub const UNIQUE_ADMINS: &str = "self.all(a, self.exists_one(b, b.lowerAscii() == a.lowerAscii()))";
pub const UNIQUE_ADMINS_MESSAGE: &str = "siteAdmins lists a user twice";

/// What a tenant lets a site declare for itself (`spec.perSite`). Empty by default: a site writer
/// cannot make anyone — themselves included — administrator of a OneDrive, nor set its quota.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PerSiteSettings {
    /// The only users a `OneDriveSite`'s own `spec.siteAdmins` may name (user principal names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 3, max = 113)))]
    #[x_kube(
        validation = Rule::new(SITE_ADMINS).message(SITE_ADMINS_MESSAGE),
    )]
    pub allowed_site_admins: Vec<String>,

    /// The largest `spec.storageQuota` a `OneDriveSite` may declare. Unset: sites may not set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(STORAGE_QUOTA).message(STORAGE_QUOTA_MESSAGE))]
    pub max_storage_quota: Option<String>,
}

/// What the operator applied to a OneDrive, and when (`status.settings`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteSettingsStatus {
    /// The declared administrators (the tenant's and the site's allowed ones) as of the last
    /// apply, lower-case. Both lists are written even when empty, so that an emptied list
    /// replaces the one before it whatever merges the write.
    #[serde(default)]
    pub site_admins: Vec<String>,
    /// The administrators the operator added itself: the only ones it ever removes (when they are
    /// no longer declared). An administrator that was already there is never added here.
    #[serde(default)]
    pub added_admins: Vec<String>,
    /// The declared quota in megabytes (MiB) as of the last apply.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "storageQuotaMB")]
    pub storage_quota_mb: Option<i64>,
    /// When the operator last changed something on the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    /// When the operator last read the site and compared it with the declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
}

/// `text` (a Kubernetes quantity: `5Ti`, `500Gi`, `1.5T`, `1048576`) in megabytes of 1 MiB,
/// rounded up, within 1 GB..=5 TB; the error names `field`.
pub fn storage_quota_mb(field: &str, text: &str) -> Result<i64, String> {
    let bad = || format!("{field}: {text:?} is not a quantity such as 1Ti or 500Gi (from 1Gi to 5Ti)");
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || whole.len() > 20 || fraction.len() > 9 {
        return Err(bad());
    }
    let digits = |s: &str| if s.is_empty() { Ok(0) } else { s.parse::<u128>().map_err(|_| bad()) };
    let scale = 10u128.pow(fraction.len() as u32);
    // bytes × scale, exactly; then megabytes rounded up.
    let scaled = digits(whole)?
        .checked_mul(scale * multiplier)
        .and_then(|w| w.checked_add(digits(fraction).ok()? * multiplier))
        .ok_or_else(bad)?;
    let unit = MEGABYTE * scale;
    let mb = scaled.div_ceil(unit);
    if !(MIN_STORAGE_QUOTA_MB as u128..=MAX_STORAGE_QUOTA_MB as u128).contains(&mb) {
        return Err(format!(
            "{field}: {text} is {mb} MB, outside what SharePoint lets an administrator set (1 GB to 5 TB: 1024 to 5242880 MB)"
        ));
    }
    Ok(mb as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_become_whole_megabytes_rounded_up() {
        let mb = |t| storage_quota_mb("spec.storageQuota", t);
        assert_eq!(mb("5Ti"), Ok(5_242_880));
        assert_eq!(mb("1Ti"), Ok(1_048_576));
        assert_eq!(mb("500Gi"), Ok(512_000));
        assert_eq!(mb("1.5Gi"), Ok(1_536));
        assert_eq!(mb("1T"), Ok(953_675), "10^12 bytes is 953674.3 MiB, rounded up");
        assert_eq!(mb("1073741825"), Ok(1025), "a byte over 1 GiB rounds up to the next megabyte");
        assert!(mb("1023Mi").unwrap_err().contains("1 GB"));
        assert!(mb("6Ti").unwrap_err().contains("5 TB"));
        assert!(mb("0").is_err());
        assert!(mb("5 apples").unwrap_err().contains("spec.storageQuota"));
        assert!(mb("1e3").is_err());
        assert!(mb("").is_err());
    }
}
