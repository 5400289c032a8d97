//! What each step needs of a token, and what a token's claims grant: `doctor` names the missing
//! permission and the step that needs it, from the claims alone (decoded, never printed).

use serde_json::Value;

/// One step and the permissions that allow it (any one of them).
struct Need {
    step: &'static str,
    any_of: &'static [&'static str],
}

const GRAPH: [Need; 2] = [
    Need {
        step: "look users up (licence, sign-in)",
        any_of: &["User.Read.All", "User.ReadWrite.All", "Directory.Read.All"],
    },
    Need {
        step: "look their OneDrives up",
        any_of: &["Sites.Read.All", "Files.Read.All", "Sites.ReadWrite.All", "Sites.FullControl.All"],
    },
];
const SHAREPOINT_APP: [Need; 2] = [
    Need { step: "enqueue personal sites and read user profiles", any_of: &["Sites.FullControl.All"] },
    Need { step: "enqueue personal sites (user profiles are written)", any_of: &["User.ReadWrite.All"] },
];
const SHAREPOINT_DELEGATED: [Need; 2] = [
    Need { step: "enqueue personal sites and read user profiles", any_of: &["AllSites.FullControl"] },
    Need { step: "enqueue personal sites (user profiles are written)", any_of: &["User.ReadWrite.All"] },
];

/// What lists a group's transitive members (a `OneDriveSiteSet`'s group source).
const GROUP_MEMBERS: Need = Need {
    step: "list groups' members (OneDriveSiteSets with spec.source.group)",
    any_of: &["GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"],
};

/// Whether a Graph token's claims let it list groups' members: the permission that does, or
/// what is missing and why.
pub fn group_members(claims: &Value) -> Result<String, String> {
    let roles = claims["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str());
    let scopes = claims["scp"].as_str().unwrap_or_default().split_whitespace();
    let mut granted = roles.chain(scopes);
    match granted.find(|g| GROUP_MEMBERS.any_of.contains(g)) {
        Some(p) => Ok(p.to_string()),
        None => {
            let delegated = claims["idtyp"].as_str() == Some("user") || claims["scp"].is_string();
            let kind = if delegated { "delegated" } else { "application" };
            Err(format!(
                "the Microsoft Graph token lacks {} ({kind}), needed to {}: grant it with admin consent",
                GROUP_MEMBERS.any_of[0], GROUP_MEMBERS.step
            ))
        }
    }
}

/// Directory role template ids that may ask SharePoint for other people's sites.
const SHAREPOINT_ADMINISTRATOR: &str = "f28a1f50-f6e7-4571-818b-6a12f2af6b6c";
const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";

/// Who signed in, as a delegated token's `wids` claim says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// SharePoint Administrator or Global Administrator (the role's name).
    Admin(&'static str),
    /// The token lists the user's roles, and neither is among them.
    NotAdmin,
    /// The token lists no roles: Entra ID puts `wids` in a token only as the resource is
    /// configured to, so its absence says nothing.
    Unknown,
}

/// The signed-in user's admin role, from a delegated token's claims.
pub fn role(claims: &Value) -> Role {
    let Some(wids) = claims["wids"].as_array() else { return Role::Unknown };
    let holds = |id: &str| wids.iter().any(|w| w.as_str().is_some_and(|w| w.eq_ignore_ascii_case(id)));
    if holds(SHAREPOINT_ADMINISTRATOR) {
        Role::Admin("SharePoint Administrator")
    } else if holds(GLOBAL_ADMINISTRATOR) {
        Role::Admin("Global Administrator")
    } else {
        Role::NotAdmin
    }
}

/// The user a delegated token is for (`upn`, else `preferred_username`), for messages.
pub fn signed_in_user(claims: &Value) -> &str {
    claims["upn"].as_str().or(claims["preferred_username"].as_str()).unwrap_or("the signed-in user")
}

/// Which service a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Graph,
    SharePoint,
}

impl Audience {
    fn name(self) -> &'static str {
        match self {
            Audience::Graph => "Microsoft Graph",
            Audience::SharePoint => "SharePoint",
        }
    }
}

/// What a token grants, as its claims say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    /// `app` (application permissions in `roles`) or `user` (delegated scopes in `scp`).
    pub identity: String,
    pub permissions: Vec<String>,
}

/// Reads `roles`/`scp`/`idtyp` and checks `aud` and `tid`: the grants, or what is wrong with the
/// token (wrong audience, wrong tenant, missing permissions — each naming the step).
pub fn check(
    claims: &Value,
    audience: Audience,
    resource: &str,
    tenant_id: &str,
) -> Result<Grants, Vec<String>> {
    let mut problems = Vec::new();
    let aud = claims["aud"].as_str().unwrap_or("");
    if aud.trim_end_matches('/') != resource.trim_end_matches('/') {
        problems.push(format!(
            "the {} token is for audience {aud:?}, not {resource}: check spec.{}",
            audience.name(),
            if audience == Audience::Graph { "graphUrl" } else { "adminUrl" }
        ));
    }
    let tid = claims["tid"].as_str().unwrap_or("");
    let is_guid = tenant_id.len() == 36 && tenant_id.chars().filter(|c| *c == '-').count() == 4;
    if is_guid && !tid.eq_ignore_ascii_case(tenant_id) {
        problems.push(format!(
            "the {} token was issued by tenant {tid}, not spec.tenantId {tenant_id}",
            audience.name()
        ));
    }
    let roles = claims["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str());
    let scopes = claims["scp"].as_str().unwrap_or_default().split_whitespace();
    let permissions: Vec<String> = roles.chain(scopes).map(str::to_string).collect();
    let delegated = claims["idtyp"].as_str() == Some("user") || claims["scp"].is_string();
    let needs: &[Need] = match (audience, delegated) {
        (Audience::Graph, _) => &GRAPH,
        (Audience::SharePoint, false) => &SHAREPOINT_APP,
        (Audience::SharePoint, true) => &SHAREPOINT_DELEGATED,
    };
    let kind = if delegated { "delegated" } else { "application" };
    if delegated && audience == Audience::SharePoint && role(claims) == Role::NotAdmin {
        problems.push(format!(
            "{} is neither a SharePoint Administrator nor a Global Administrator, and SharePoint enqueues only an administrator's requests: sign in again as one (onedrive-operator login)",
            signed_in_user(claims)
        ));
    }
    for need in needs {
        if !need.any_of.iter().any(|p| permissions.iter().any(|g| g == p)) {
            problems.push(format!(
                "the {} token lacks {} ({kind}), needed to {}: grant it with admin consent",
                audience.name(),
                need.any_of[0],
                need.step
            ));
        }
    }
    if problems.is_empty() {
        Ok(Grants { identity: if delegated { "user".into() } else { "app".into() }, permissions })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "8d1e4f12-7c3a-4b5e-9f60-0a1b2c3d4e5f";

    #[test]
    fn each_missing_permission_is_named_with_its_step() {
        let sp = "https://contoso-admin.sharepoint.com";
        let ok = json!({"aud": sp, "tid": TENANT, "idtyp": "app", "roles": ["Sites.FullControl.All", "User.ReadWrite.All"]});
        assert_eq!(check(&ok, Audience::SharePoint, sp, TENANT).unwrap().permissions.len(), 2);
        let lacking = json!({"aud": sp, "tid": TENANT, "idtyp": "app", "roles": ["User.ReadWrite.All"]});
        let problems = check(&lacking, Audience::SharePoint, sp, TENANT).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .contains("lacks Sites.FullControl.All (application), needed to enqueue personal sites")
        );
        let graph = "https://graph.microsoft.com";
        let user = json!({"aud": graph, "tid": TENANT, "idtyp": "user", "scp": "Files.Read.All"});
        let problems = check(&user, Audience::Graph, graph, TENANT).unwrap_err();
        assert!(
            problems[0].contains("lacks User.Read.All (delegated), needed to look users up"),
            "{problems:?}"
        );
        let elsewhere = json!({"aud": "https://other", "tid": "00000000-0000-0000-0000-000000000000", "roles": ["User.Read.All", "Sites.Read.All"]});
        let problems = check(&elsewhere, Audience::Graph, graph, TENANT).unwrap_err();
        assert!(problems[0].contains("audience") && problems[1].contains("issued by tenant"), "{problems:?}");
        let admin = json!({"aud": sp, "tid": TENANT, "idtyp": "user", "scp": "AllSites.FullControl User.ReadWrite.All"});
        assert!(check(&admin, Audience::SharePoint, sp, TENANT).is_ok());
        let helpdesk = json!({"aud": sp, "tid": TENANT, "idtyp": "user", "upn": "helpdesk@contoso.com", "wids": ["b79fbf4d-3ef9-4689-8143-76b194e85509"], "scp": "AllSites.FullControl User.ReadWrite.All"});
        let problems = check(&helpdesk, Audience::SharePoint, sp, TENANT).unwrap_err();
        assert!(
            problems[0].starts_with("helpdesk@contoso.com is neither a SharePoint Administrator"),
            "{problems:?}"
        );
    }

    #[test]
    fn reading_group_members_is_named_with_its_permission() {
        assert_eq!(
            group_members(&json!({"roles": ["User.Read.All", "GroupMember.Read.All"]})).unwrap(),
            "GroupMember.Read.All"
        );
        assert_eq!(group_members(&json!({"scp": "Directory.Read.All"})).unwrap(), "Directory.Read.All");
        let missing = group_members(&json!({"idtyp": "app", "roles": ["User.Read.All"]})).unwrap_err();
        assert!(
            missing.contains("lacks GroupMember.Read.All (application)")
                && missing.contains("spec.source.group"),
            "{missing}"
        );
    }

    #[test]
    fn the_admin_role_is_read_from_wids_and_its_absence_is_unknown() {
        assert_eq!(
            role(&json!({"wids": [SHAREPOINT_ADMINISTRATOR]})),
            Role::Admin("SharePoint Administrator")
        );
        assert_eq!(role(&json!({"wids": ["x", GLOBAL_ADMINISTRATOR]})), Role::Admin("Global Administrator"));
        assert_eq!(role(&json!({"wids": ["x"]})), Role::NotAdmin);
        assert_eq!(role(&json!({"scp": "AllSites.FullControl"})), Role::Unknown);
    }
}
