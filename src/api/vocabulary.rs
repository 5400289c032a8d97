//! The typed vocabulary of conditions: their status, the reasons a `OneDriveSite` carries and the
//! reasons a `OneDriveTenant` carries. Every condition, Event reason and metric label is spelled
//! through these enums' `as_str()`; nothing else spells a reason or a status.

/// A condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    pub const fn of(b: bool) -> ConditionStatus {
        if b { ConditionStatus::True } else { ConditionStatus::False }
    }

    /// The status a condition read from the API server spells (`None` for anything else).
    pub fn parse(s: &str) -> Option<ConditionStatus> {
        [ConditionStatus::True, ConditionStatus::False, ConditionStatus::Unknown]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    /// Whether a status read from the API server is this one.
    pub fn is(self, s: &str) -> bool {
        self.as_str() == s
    }
}

/// Declares a reason enum with its spelling, `ALL` in declaration order, and `parse`.
macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every reason, in the order docs/reference.md documents them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The reason a condition read from the API server spells (`None` for another word).
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|r| r.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

reasons! {
    /// The reason of a `OneDriveSite`'s conditions (docs/reference.md: "Condition reasons").
    SiteReason {
        /// No site yet (or not checked yet); waiting for a batch slot.
        Pending = "Pending",
        /// Enqueued; SharePoint shows the SPSSITEERROR placeholder while it creates the site.
        SpsSiteError = "SPSSITEERROR",
        /// The site exists.
        Provisioned = "Provisioned",
        UserNotFound = "UserNotFound",
        UserNotLicensed = "UserNotLicensed",
        SignInBlocked = "SignInBlocked",
        SiteCreationNotPermitted = "SiteCreationNotPermitted",
        ProvisioningFailed = "ProvisioningFailed",
        LookupFailing = "LookupFailing",
        ProvisioningTimedOut = "ProvisioningTimedOut",
        TenantNotReady = "TenantNotReady",
        TenantNotFound = "TenantNotFound",
        /// The tenant's `spec.allowedNamespaces` leaves out the site's namespace.
        TenantNotAllowed = "TenantNotAllowed",
        /// A guest account (`#EXT#`): it cannot hold a OneDrive in this tenant, and is never sent.
        GuestAccount = "GuestAccount",
        /// The site exists and its declared administrators and quota are applied.
        Configured = "Configured",
        /// The site exists; its declared settings are being applied (or wait for throttling).
        Configuring = "Configuring",
        /// Applying the declared settings failed in a way a person must fix (the call named).
        ConfigurationFailed = "ConfigurationFailed",
        /// The site declares administrators or a quota its tenant does not allow per site.
        SettingsNotAllowed = "SettingsNotAllowed",
    }
}

reasons! {
    /// The reason of a `OneDriveTenant`'s conditions: its health, what stops it, and warnings
    /// about its credentials. Also the Event reason and metric label of each.
    TenantReason {
        /// Credentials accepted, nothing to do.
        Ready = "Ready",
        /// Credentials accepted, users still have work ahead.
        Provisioning = "Provisioning",
        Throttled = "Throttled",
        InvalidSpec = "InvalidSpec",
        CredentialsInvalid = "CredentialsInvalid",
        TokenKindRefused = "TokenKindRefused",
        PermissionMissing = "PermissionMissing",
        Blocked = "Blocked",
        Unreachable = "Unreachable",
        InvalidRequest = "InvalidRequest",
        ProtocolError = "ProtocolError",
        /// No credential expires soon.
        CredentialsValid = "CredentialsValid",
        CertificateExpiresIn30Days = "CertificateExpiresIn30Days",
        CertificateExpiresIn7Days = "CertificateExpiresIn7Days",
        RefreshTokenAging = "RefreshTokenAging",
        /// Every rotated refresh token is stored in its Secret.
        Persisted = "Persisted",
        CredentialsNotPersisted = "CredentialsNotPersisted",
        /// Graph could not list the tenant's geos: only the central and declared geos are used.
        GeoDiscoveryFailed = "GeoDiscoveryFailed",
        /// The tenant's geos are known (discovered, or all declared).
        GeosDiscovered = "GeosDiscovered",
    }
}

reasons! {
    /// The reason of a `OneDriveSiteSet`'s conditions (and of its Events).
    SetReason {
        /// Every site of the set has settled (Ready, or Failed with a reason that needs a person).
        Settled = "Settled",
        /// Sites are being created or deleted, or are still being provisioned.
        Syncing = "Syncing",
        /// The source lists fewer users than the set has sites by more than the removal guard
        /// allows in one sync: nothing is deleted until a person confirms or the source recovers.
        RemovalHeld = "RemovalHeld",
        /// The tenant's `spec.groupSources` does not let this namespace read this group.
        GroupNotAllowed = "GroupNotAllowed",
        /// Graph knows no such group (unknown id or mail).
        GroupNotFound = "GroupNotFound",
        /// The group was deleted (it stays restorable in Entra ID for 30 days).
        GroupDeleted = "GroupDeleted",
        /// The token may not read the group's members (`GroupMember.Read.All`).
        GroupPermissionMissing = "GroupPermissionMissing",
        /// Members were listed without a user principal name (hidden membership, or a permission
        /// that does not show it): the sync stops, nothing is removed.
        MembersUnreadable = "MembersUnreadable",
        /// Graph throttled the member listing; the sync resumes when it said.
        Throttled = "Throttled",
        /// The member listing failed otherwise (the tenant's client, the network, an answer not
        /// understood).
        SourceUnavailable = "SourceUnavailable",
        /// The set names no tenant (and the operator has no default), or a tenant that does not
        /// exist.
        TenantNotFound = "TenantNotFound",
        /// The spec cannot be acted on (a set name too long for the label naming it).
        InvalidSpec = "InvalidSpec",
    }
}

reasons! {
    /// The reasons of the Events a tenant gets besides its condition reasons.
    EventReason {
        /// A batch was accepted by SharePoint.
        BatchEnqueued = "BatchEnqueued",
        /// An in-flight batch ended (completed or timed out).
        BatchFinished = "BatchFinished",
        /// A batch in flight whose users could not be read back from the operator's namespace.
        BatchRecordLost = "BatchRecordLost",
        /// A site's `onedrive-operator.dev/retry` value was acted on (its user sent again, or its
        /// settings applied again).
        Retried = "Retried",
    }
}

reasons! {
    /// Why a cycle failed against the Kubernetes API (metric label and log field).
    KubernetesReason {
        Conflict = "Conflict",
        Forbidden = "Forbidden",
        KubernetesApi = "KubernetesApi",
        /// The leader's Lease lapsed (it could not be renewed in time): nothing more is sent.
        LeaseLost = "LeaseLost",
    }
}

reasons! {
    /// How a cycle ended (the `result` label of the reconcile counter).
    CycleResult {
        Ok = "ok",
        TenantNotReady = "tenant_not_ready",
        Error = "error",
    }
}

/// The site reasons as strings, for comparing with conditions read back (tests, tools).
pub mod reason {
    use super::SiteReason;

    pub const PENDING: &str = SiteReason::Pending.as_str();
    pub const SPSSITEERROR: &str = SiteReason::SpsSiteError.as_str();
    pub const PROVISIONED: &str = SiteReason::Provisioned.as_str();
    pub const USER_NOT_FOUND: &str = SiteReason::UserNotFound.as_str();
    pub const USER_NOT_LICENSED: &str = SiteReason::UserNotLicensed.as_str();
    pub const SIGN_IN_BLOCKED: &str = SiteReason::SignInBlocked.as_str();
    pub const SITE_CREATION_NOT_PERMITTED: &str = SiteReason::SiteCreationNotPermitted.as_str();
    pub const PROVISIONING_FAILED: &str = SiteReason::ProvisioningFailed.as_str();
    pub const LOOKUP_FAILING: &str = SiteReason::LookupFailing.as_str();
    pub const PROVISIONING_TIMED_OUT: &str = SiteReason::ProvisioningTimedOut.as_str();
    pub const TENANT_NOT_READY: &str = SiteReason::TenantNotReady.as_str();
    pub const TENANT_NOT_FOUND: &str = SiteReason::TenantNotFound.as_str();
    pub const GUEST_ACCOUNT: &str = SiteReason::GuestAccount.as_str();
    pub const CONFIGURED: &str = SiteReason::Configured.as_str();
    pub const CONFIGURING: &str = SiteReason::Configuring.as_str();
    pub const CONFIGURATION_FAILED: &str = SiteReason::ConfigurationFailed.as_str();
    pub const SETTINGS_NOT_ALLOWED: &str = SiteReason::SettingsNotAllowed.as_str();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for r in SiteReason::ALL {
            assert_eq!(SiteReason::parse(r.as_str()), Some(*r));
        }
        for r in TenantReason::ALL {
            assert_eq!(TenantReason::parse(r.as_str()), Some(*r));
        }
        for r in SetReason::ALL {
            assert_eq!(SetReason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(SiteReason::parse("Ready"), None);
        assert_eq!(ConditionStatus::parse("Unknown"), Some(ConditionStatus::Unknown));
        assert_eq!(ConditionStatus::of(true).as_str(), "True");
    }
}
