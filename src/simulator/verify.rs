//! The simulator's own checks of a client assertion, written apart from the client's JOSE code
//! (`crate::jose`) so that a systematic encoding bug there cannot pass unnoticed: thumbprints are
//! computed here from the certificate's DER bytes, and signatures are checked with the `rsa`
//! crate's verifiers directly. Known-answer tests pin both to values computed by OpenSSL.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::PublicKey;
use rsa::signature::Verifier;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A compact JWS as Entra reads it: header, claims, the signed bytes and the signature.
pub struct Assertion {
    pub header: Value,
    pub claims: Value,
    signed: String,
    signature: Vec<u8>,
}

impl Assertion {
    /// `None` unless the token is three base64url parts, the first two JSON objects.
    pub fn parse(token: &str) -> Option<Assertion> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, signature] = parts.as_slice() else { return None };
        let json = |part: &str| -> Option<Value> {
            serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).ok()?).ok().filter(Value::is_object)
        };
        Some(Assertion {
            header: json(header)?,
            claims: json(claims)?,
            signed: format!("{header}.{claims}"),
            signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
        })
    }

    /// Whether the signature is a valid PS256 or RS256 (as the header says) signature by `key`.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        let message = self.signed.as_bytes();
        match self.header["alg"].as_str() {
            Some("PS256") => rsa::pss::Signature::try_from(self.signature.as_slice()).is_ok_and(|s| {
                rsa::pss::VerifyingKey::<Sha256>::new(key.clone()).verify(message, &s).is_ok()
            }),
            Some("RS256") => rsa::pkcs1v15::Signature::try_from(self.signature.as_slice()).is_ok_and(|s| {
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone()).verify(message, &s).is_ok()
            }),
            _ => false,
        }
    }

    /// Whether the header's `x5t#S256` or `x5t` names the certificate with these DER bytes.
    pub fn names_certificate(&self, der: &[u8]) -> bool {
        self.header["x5t#S256"].as_str() == Some(thumbprint_sha256(der).as_str())
            || self.header["x5t"].as_str() == Some(thumbprint_sha1(der).as_str())
    }
}

/// `x5t#S256`: base64url (unpadded) of the SHA-256 of the DER certificate.
pub fn thumbprint_sha256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// `x5t`: base64url (unpadded) of the SHA-1 of the DER certificate.
pub fn thumbprint_sha1(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha1::digest(der))
}
