//! SharePoint user profiles: `SPS-PersonalSiteInstantiationState` and what each code means.
//! After an enqueue, the profile is the only place SharePoint gives a per-user verdict.

use serde_json::Value;

use crate::plan::{Observation, ProfileMeaning, ProfileState};

/// What a user profile says about the personal site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRead {
    pub state: ProfileState,
    /// `PersonalSpace` (e.g. `/personal/alice_contoso_com/`), or the SPSSITEERROR placeholder.
    pub personal_space: String,
    /// `PersonalUrl`: the site once it exists, the profile page before.
    pub personal_url: String,
}

impl ProfileRead {
    /// "Done" is state 2 (Created) **and** a personal space: then the site is at `PersonalUrl`.
    pub fn observation(&self) -> Observation {
        let created = self.state.code == 2
            && self.personal_space.starts_with("/personal/")
            && self.personal_url.contains("/personal/");
        if created {
            let url = self.personal_url.trim_end_matches('/');
            Observation::HasSite { url: format!("{url}/") }
        } else {
            Observation::Profile(self.state)
        }
    }

    /// Reads a `GetPropertiesFor` answer (nometadata, or verbose's `results`); `None` for an
    /// empty profile (an unknown account).
    pub fn from_body(body: &Value) -> Option<ProfileRead> {
        let body = if body["d"].is_object() { &body["d"] } else { body };
        let properties = body["UserProfileProperties"]
            .as_array()
            .or(body["UserProfileProperties"]["results"].as_array())?;
        let property = |key: &str| {
            properties.iter().find(|p| p["Key"] == key).and_then(|p| p["Value"].as_str()).unwrap_or("")
        };
        let code = property("SPS-PersonalSiteInstantiationState").trim().parse().ok()?;
        Some(ProfileRead {
            state: profile_state(code),
            personal_space: property("PersonalSpace").to_string(),
            personal_url: body["PersonalUrl"].as_str().unwrap_or("").to_string(),
        })
    }
}

/// The meaning of an `SPS-PersonalSiteInstantiationState` code (Microsoft's names).
pub fn profile_state(code: i64) -> ProfileState {
    use ProfileMeaning::*;
    let (name, meaning) = match code {
        0 => ("Uninitialized", NoSite),
        1 => ("Enqueued", Working),
        2 => ("Created", Working),
        3 => ("Deleted", NoSite),
        4096 => ("PermissionsGeneral", NotPermitted),
        4097 => ("UPANotGranted", NotPermitted),
        4098 => ("UserNotLicensed", NotLicensed),
        4099 => ("SelfServiceSiteCreationDisabled", NotPermitted),
        4100 => ("NoMySitesInPeopleLight", NotPermitted),
        4101 => ("EmptyHostUrl", NotPermitted),
        4102 => ("HostFailedToInitializePersonalSiteContext", NotPermitted),
        8192 => ("ErrorGeneral", Failed),
        8193 => ("ManagedPathDoesNotExist", Failed),
        8194 => ("LanguageNotInstalled", Failed),
        8195 => ("PartialCreate", Failed),
        // The drive lookup says otherwise (that is why the profile was read): look again.
        8196 => ("PersonalSiteAlreadyExists", Working),
        8197 => ("RootSiteNotPresent", Failed),
        8198 => ("SelfServiceSiteCreateCallFailed", Failed),
        _ => ("an undocumented state", Unrecognised),
    };
    ProfileState { code, name, meaning }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_documented_code_has_its_name_and_meaning() {
        for (code, meaning) in [
            (0, ProfileMeaning::NoSite),
            (1, ProfileMeaning::Working),
            (3, ProfileMeaning::NoSite),
            (4098, ProfileMeaning::NotLicensed),
            (8196, ProfileMeaning::Working),
            (42, ProfileMeaning::Unrecognised),
        ] {
            assert_eq!(profile_state(code).meaning, meaning, "{code}");
        }
        for code in (4096..=4102).filter(|c| *c != 4098) {
            assert_eq!(profile_state(code).meaning, ProfileMeaning::NotPermitted, "{code}");
        }
        for code in (8192..=8198).filter(|c| *c != 8196) {
            assert_eq!(profile_state(code).meaning, ProfileMeaning::Failed, "{code}");
        }
        assert_eq!(profile_state(4099).name, "SelfServiceSiteCreationDisabled");
    }

    #[test]
    fn created_counts_only_with_a_personal_space() {
        let body = |state: &str, space: &str, url: &str| {
            json!({"PersonalUrl": url, "UserProfileProperties": [
                {"Key": "PersonalSpace", "Value": space, "ValueType": "Edm.String"},
                {"Key": "SPS-PersonalSiteInstantiationState", "Value": state, "ValueType": "Edm.String"}]})
        };
        let site = "https://contoso-my.sharepoint.com/personal/a_contoso_com";
        let done = ProfileRead::from_body(&body("2", "/personal/a_contoso_com/", site)).unwrap();
        assert_eq!(done.observation(), Observation::HasSite { url: format!("{site}/") });
        let placeholder =
            ProfileRead::from_body(&body("2", "SPSSITEERROR", "https://x/Person.aspx")).unwrap();
        assert_eq!(placeholder.observation(), Observation::Profile(profile_state(2)));
        let verbose = json!({"d": {"PersonalUrl": "", "UserProfileProperties": {"results": [
            {"Key": "SPS-PersonalSiteInstantiationState", "Value": "4099"}]}}});
        assert_eq!(ProfileRead::from_body(&verbose).unwrap().state.code, 4099);
        assert_eq!(ProfileRead::from_body(&json!({"odata.null": true})), None);
    }
}
