//! Microsoft 365 clouds: each has its own sign-in, Graph and SharePoint hosts, and tokens from one
//! are not accepted in another (`reference/m365-protocol.md` §9).

use serde::{Deserialize, Serialize};

/// The Microsoft 365 cloud a tenant lives in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash, schemars::JsonSchema)]
pub enum Cloud {
    /// The worldwide cloud (also GCC): `login.microsoftonline.com`, `graph.microsoft.com`, `*.sharepoint.com`.
    #[default]
    Global,
    /// US Government GCC High: `login.microsoftonline.us`, `graph.microsoft.us`, `*.sharepoint.us`.
    USGovGCCHigh,
    /// US Government DoD: `login.microsoftonline.us`, `dod-graph.microsoft.us`, `*.sharepoint-mil.us`.
    USGovDoD,
    /// Microsoft 365 operated by 21Vianet: `login.chinacloudapi.cn`, `microsoftgraph.chinacloudapi.cn`, `*.sharepoint.cn`.
    China,
}

impl Cloud {
    pub const ALL: [Cloud; 4] = [Cloud::Global, Cloud::USGovGCCHigh, Cloud::USGovDoD, Cloud::China];

    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Global => "Global",
            Cloud::USGovGCCHigh => "USGovGCCHigh",
            Cloud::USGovDoD => "USGovDoD",
            Cloud::China => "China",
        }
    }

    /// The Entra ID authority (sign-in) host.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::USGovGCCHigh | Cloud::USGovDoD => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The Microsoft Graph root (also the token audience for Graph).
    pub fn graph_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::USGovGCCHigh => "https://graph.microsoft.us",
            Cloud::USGovDoD => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The DNS suffix every SharePoint host of the cloud ends with.
    pub fn sharepoint_suffix(self) -> &'static str {
        match self {
            Cloud::Global => ".sharepoint.com",
            Cloud::USGovGCCHigh => ".sharepoint.us",
            Cloud::USGovDoD => ".sharepoint-mil.us",
            Cloud::China => ".sharepoint.cn",
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cloud_maps_to_its_hosts() {
        let table: Vec<(Cloud, &str, &str, &str)> = Cloud::ALL
            .iter()
            .map(|c| (*c, c.authority_host(), c.graph_url(), c.sharepoint_suffix()))
            .collect();
        assert_eq!(
            table,
            vec![
                (
                    Cloud::Global,
                    "https://login.microsoftonline.com",
                    "https://graph.microsoft.com",
                    ".sharepoint.com"
                ),
                (
                    Cloud::USGovGCCHigh,
                    "https://login.microsoftonline.us",
                    "https://graph.microsoft.us",
                    ".sharepoint.us"
                ),
                (
                    Cloud::USGovDoD,
                    "https://login.microsoftonline.us",
                    "https://dod-graph.microsoft.us",
                    ".sharepoint-mil.us"
                ),
                (
                    Cloud::China,
                    "https://login.chinacloudapi.cn",
                    "https://microsoftgraph.chinacloudapi.cn",
                    ".sharepoint.cn"
                ),
            ]
        );
    }

    #[test]
    fn the_default_cloud_is_global_and_names_round_trip() {
        assert_eq!(Cloud::default(), Cloud::Global);
        for c in Cloud::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
