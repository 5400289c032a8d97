//! Known answers for the JOSE code, pinned to values OpenSSL computed from a fixed test
//! certificate and key (`tests/data/jose/`): thumbprints, a deterministic RS256 signature, and a
//! PS256 signature that must verify. The client's signer and the simulator's verifier are checked
//! against them separately, so a systematic encoding bug shared by the two cannot pass.

use std::collections::HashMap;

use onedrive_operator::jose::{self, Alg, Certificate, Jws};
use onedrive_operator::simulator::verify::{Assertion, thumbprint_sha1, thumbprint_sha256};
use serde_json::json;

fn data(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jose").join(name),
    )
    .unwrap()
}

/// `known-answers.txt`: `name value` lines (comments start with `#`).
fn known() -> HashMap<String, String> {
    data("known-answers.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.trim().to_string())
        })
        .collect()
}

#[test]
fn thumbprints_match_openssl() {
    let k = known();
    let cert = Certificate::from_pem(&data("cert.pem")).unwrap();
    assert_eq!(cert.x5t_s256(), k["x5t#S256"]);
    assert_eq!(cert.x5t(), k["x5t"]);
    assert_eq!(thumbprint_sha256(&cert.der), k["x5t#S256"], "the simulator's own computation");
    assert_eq!(thumbprint_sha1(&cert.der), k["x5t"]);
}

#[test]
fn the_client_signs_exactly_what_openssl_signs() {
    let k = known();
    let key = jose::private_key_from_pem(&data("key.pem")).unwrap();
    let claims = json!({"aud": "https://login.example/t/oauth2/v2.0/token", "iss": "c", "sub": "c", "jti": "fixed", "nbf": 1_800_000_000, "iat": 1_800_000_000, "exp": 1_800_000_600});
    let token = jose::sign_rsa(Alg::RS256, &key, json!({"x5t#S256": k["x5t#S256"]}), &claims).unwrap();
    assert_eq!(token, format!("{}.{}", k["input"], k["rs256"]), "RS256 is deterministic: byte for byte");
}

#[test]
fn openssls_rs256_signature_verifies_in_the_client_and_the_simulator() {
    let k = known();
    let cert = Certificate::from_pem(&data("cert.pem")).unwrap();
    let token = format!("{}.{}", k["input"], k["rs256"]);
    let simulator = Assertion::parse(&token).unwrap();
    assert!(simulator.signed_by(&cert.public_key) && simulator.names_certificate(&cert.der));
    assert!(Jws::decode(&token).unwrap().verify_rsa(&cert.public_key).is_ok());
    let tampered = format!("{}x.{}", k["input"], k["rs256"]);
    assert!(!Assertion::parse(&tampered).is_some_and(|a| a.signed_by(&cert.public_key)));
    assert!(Jws::decode(&tampered).map_or(true, |j| j.verify_rsa(&cert.public_key).is_err()));
}

#[test]
fn a_pss_signature_from_openssl_verifies_under_a_ps256_header() {
    // OpenSSL signed the pinned input with PSS (salt 32); its header says RS256, so the PSS
    // verifier the simulator uses is asked directly over those exact bytes.
    use rsa::signature::Verifier;
    let k = known();
    let cert = Certificate::from_pem(&data("cert.pem")).unwrap();
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &k["ps256"]).unwrap();
    let signature = rsa::pss::Signature::try_from(signature.as_slice()).unwrap();
    let verifier = rsa::pss::VerifyingKey::<sha2::Sha256>::new(cert.public_key.clone());
    assert!(verifier.verify(k["input"].as_bytes(), &signature).is_ok());
    // And a PS256 assertion made by the client verifies in the simulator's code.
    let key = jose::private_key_from_pem(&data("key.pem")).unwrap();
    let token =
        jose::sign_rsa(Alg::PS256, &key, json!({"x5t#S256": k["x5t#S256"]}), &json!({"sub": "c"})).unwrap();
    let a = Assertion::parse(&token).unwrap();
    assert!(a.signed_by(&cert.public_key) && a.names_certificate(&cert.der));
}
