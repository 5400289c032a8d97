//! What a set's `OneDriveSite`s are called and what a set declares for them: both derived from
//! the user, so the same user always gets the same name, whatever their principal name spells.

use sha2::{Digest, Sha256};

use crate::api::rules::UPN_PATTERN;

/// Longest principal name a `OneDriveSite` accepts (its CRD's `spec.user` maxLength).
const MAX_USER: usize = 113;
/// The readable part of a name is cut here; the digest after it keeps names apart.
const MAX_SLUG: usize = 40;

/// The `OneDriveSite` name of `user` in a set: a readable slug of the principal name and 16
/// hex digits of its SHA-256 (names are compared without case, as Entra ID compares them), e.g.
/// `alice-contoso-com-3f2a…`. A valid object name (lowercase letters, digits, `-`; at most 57
/// characters) for any user, and two users share one only if their digests' first 64 bits do.
pub fn child_name(user: &str) -> String {
    let lower = user.trim().to_lowercase();
    let mut slug = String::with_capacity(MAX_SLUG);
    for c in lower.chars() {
        if slug.len() == MAX_SLUG {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let digest = hex(&Sha256::digest(lower.as_bytes())[..8]);
    if slug.is_empty() { format!("u-{digest}") } else { format!("{slug}-{digest}") }
}

/// Why the CRD would refuse `user` as a `OneDriveSite`'s `spec.user` (`None`: it would not).
pub fn invalid_user(user: &str) -> Option<&'static str> {
    static UPN: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(UPN_PATTERN).expect("the UPN pattern compiles"));
    if user.chars().count() > MAX_USER {
        Some("longer than 113 characters")
    } else if user.chars().count() < 3 || !UPN.is_match(user) {
        Some("not a user principal name (one '@', a domain with a dot, no spaces)")
    } else {
        None
    }
}

/// A short digest of `parts` (what a set declares for its sites, which deletions a guard holds).
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update((p.len() as u64).to_be_bytes());
        hash.update(p.as_bytes());
    }
    hex(&hash.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_valid_and_case_blind() {
        let a = child_name("Alice.Smith@Contoso.com");
        assert_eq!(a, child_name("alice.smith@contoso.com"));
        assert!(a.starts_with("alice-smith-contoso-com-"), "{a}");
        assert_ne!(a, child_name("alice_smith@contoso.com"), "the slug is shared, the digest is not");
        let valid = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
        for user in [
            "o'neil@contoso.com",
            "élodie.dupré@contoso.fr",
            "$adele@x.y",
            "--@--.--",
            &format!("{}@contoso.com", "x".repeat(200)),
        ] {
            let name = child_name(user);
            assert!(valid.is_match(&name) && name.len() <= 57, "{user} → {name}");
        }
        assert!(child_name("ééé@ééé.éé").starts_with("u-"));
    }

    #[test]
    fn users_the_crd_refuses_are_named() {
        assert_eq!(invalid_user("alice@contoso.com"), None);
        assert!(invalid_user("alice").is_some());
        assert!(invalid_user("a b@contoso.com").is_some());
        assert!(invalid_user(&format!("{}@contoso.com", "x".repeat(110))).unwrap().contains("113"));
    }

    #[test]
    fn digests_separate_their_parts() {
        assert_ne!(digest(["ab", "c"]), digest(["a", "bc"]));
        assert_eq!(digest(["x"]).len(), 16);
    }
}
