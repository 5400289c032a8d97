//! Minimal JOSE: compact JWS signing and verification (PS256, RS256, HS256), X.509 certificate
//! thumbprints and PEM key loading. Shared by the tenant client (client assertions) and the
//! simulator (verifying them, issuing tokens). Nothing here knows Microsoft's endpoints.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{PrivateKey, PublicKey};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoseError {
    #[error("not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("unsupported JWS algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("private key: {0}")]
    PrivateKey(String),
}

/// JWS algorithms this project uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    PS256,
    RS256,
    HS256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::PS256 => "PS256",
            Alg::RS256 => "RS256",
            Alg::HS256 => "HS256",
        }
    }

    fn parse(s: &str) -> Result<Alg, JoseError> {
        match s {
            "PS256" => Ok(Alg::PS256),
            "RS256" => Ok(Alg::RS256),
            "HS256" => Ok(Alg::HS256),
            other => Err(JoseError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// Signs with RSA; `header` must not carry `alg` (it is set here).
pub fn sign_rsa(alg: Alg, key: &PrivateKey, mut header: Value, claims: &Value) -> Result<String, JoseError> {
    header["alg"] = Value::from(alg.as_str());
    header["typ"] = Value::from("JWT");
    let input = signing_input(&header, claims);
    let sig = match alg {
        Alg::PS256 => rsa::pss::SigningKey::<Sha256>::new(key.clone()).sign(input.as_bytes()).to_vec(),
        Alg::RS256 => rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone()).sign(input.as_bytes()).to_vec(),
        Alg::HS256 => return Err(JoseError::UnsupportedAlgorithm("HS256 with an RSA key".into())),
    };
    Ok(format!("{input}.{}", b64url(&sig)))
}

pub fn sign_hmac(secret: &[u8], claims: &Value) -> String {
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
    let input = signing_input(&header, claims);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// A decoded, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    pub header: Value,
    pub claims: Value,
    input: String,
    signature: Vec<u8>,
}

impl Jws {
    pub fn decode(token: &str) -> Result<Jws, JoseError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Malformed);
        };
        let json = |p: &str| -> Result<Value, JoseError> {
            let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| JoseError::Malformed)?;
            serde_json::from_slice(&bytes).map_err(|_| JoseError::Malformed)
        };
        Ok(Jws {
            header: json(h)?,
            claims: json(c)?,
            input: format!("{h}.{c}"),
            signature: URL_SAFE_NO_PAD.decode(s).map_err(|_| JoseError::Malformed)?,
        })
    }

    pub fn alg(&self) -> Result<Alg, JoseError> {
        Alg::parse(self.header["alg"].as_str().unwrap_or_default())
    }

    pub fn verify_rsa(&self, key: &PublicKey) -> Result<(), JoseError> {
        let msg = self.input.as_bytes();
        let ok = match self.alg()? {
            Alg::PS256 => rsa::pss::Signature::try_from(self.signature.as_slice())
                .ok()
                .is_some_and(|s| rsa::pss::VerifyingKey::<Sha256>::new(key.clone()).verify(msg, &s).is_ok()),
            Alg::RS256 => {
                rsa::pkcs1v15::Signature::try_from(self.signature.as_slice()).ok().is_some_and(|s| {
                    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone()).verify(msg, &s).is_ok()
                })
            }
            Alg::HS256 => return Err(JoseError::UnsupportedAlgorithm("HS256 where RSA is required".into())),
        };
        if ok { Ok(()) } else { Err(JoseError::BadSignature) }
    }

    pub fn verify_hmac(&self, secret: &[u8]) -> Result<(), JoseError> {
        if self.alg()? != Alg::HS256 {
            return Err(JoseError::BadSignature);
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(self.input.as_bytes());
        mac.verify_slice(&self.signature).map_err(|_| JoseError::BadSignature)
    }
}

/// An X.509 certificate: its DER bytes and RSA public key.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub der: Vec<u8>,
    pub public_key: PublicKey,
    /// The start of its validity (`notBefore`).
    pub not_before: Option<jiff::Timestamp>,
    /// The end of its validity (`notAfter`).
    pub not_after: Option<jiff::Timestamp>,
}

impl Certificate {
    /// The first certificate in a PEM bundle (`tls.crt` may carry a chain).
    pub fn from_pem(pem: &str) -> Result<Certificate, JoseError> {
        use x509_cert::der::{Decode, DecodePem, Encode};
        let cert = x509_cert::Certificate::from_pem(first_pem_block(pem, "CERTIFICATE")?.as_bytes())
            .map_err(|e| JoseError::Certificate(format!("not a PEM X.509 certificate ({e})")))?;
        let der = cert.to_der().map_err(|e| JoseError::Certificate(e.to_string()))?;
        let spki_der = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| JoseError::Certificate(e.to_string()))?;
        let spki = rsa::pkcs8::SubjectPublicKeyInfoRef::from_der(&spki_der)
            .map_err(|e| JoseError::Certificate(e.to_string()))?;
        let public_key = PublicKey::try_from(spki)
            .map_err(|e| JoseError::Certificate(format!("the certificate's key is not RSA ({e})")))?;
        let validity = cert.tbs_certificate().validity();
        let at = |t: x509_cert::time::Time| {
            jiff::Timestamp::from_second(t.to_unix_duration().as_secs() as i64).ok()
        };
        Ok(Certificate {
            der,
            public_key,
            not_before: at(validity.not_before),
            not_after: at(validity.not_after),
        })
    }

    /// `x5t#S256`: base64url SHA-256 of the DER certificate.
    pub fn x5t_s256(&self) -> String {
        b64url(&Sha256::digest(&self.der))
    }

    /// `x5t`: base64url SHA-1 of the DER certificate (older guidance).
    pub fn x5t(&self) -> String {
        b64url(&Sha1::digest(&self.der))
    }

    pub fn to_pem(&self) -> String {
        let body = STANDARD.encode(&self.der);
        let lines: Vec<&str> =
            body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    }
}

fn first_pem_block(pem: &str, label: &str) -> Result<String, JoseError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).ok_or_else(|| JoseError::Certificate(format!("no {begin} block")))?;
    let stop = pem[start..].find(&end).ok_or_else(|| JoseError::Certificate(format!("no {end} line")))?;
    Ok(format!("{}\n", &pem[start..start + stop + end.len()]))
}

/// An RSA private key from PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub fn private_key_from_pem(pem: &str) -> Result<PrivateKey, JoseError> {
    if pem.contains("BEGIN PRIVATE KEY") {
        PrivateKey::from_pkcs8_pem(pem.trim()).map_err(|e| JoseError::PrivateKey(format!("PKCS#8: {e}")))
    } else if pem.contains("BEGIN RSA PRIVATE KEY") {
        PrivateKey::from_pkcs1_pem(pem.trim()).map_err(|e| JoseError::PrivateKey(format!("PKCS#1: {e}")))
    } else if pem.contains("ENCRYPTED PRIVATE KEY") {
        Err(JoseError::PrivateKey(
            "encrypted keys are not supported: store the key unencrypted in the Secret".into(),
        ))
    } else {
        Err(JoseError::PrivateKey("no RSA private key PEM block (PRIVATE KEY or RSA PRIVATE KEY)".into()))
    }
}

pub fn private_key_to_pem(key: &PrivateKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF).expect("an RSA key encodes as PKCS#8").to_string()
}

/// A fresh 2048-bit RSA key.
pub fn generate_key() -> PrivateKey {
    use rsa::Generate;
    PrivateKey::generate()
}

/// A self-signed certificate for `key` (test credentials; Entra ID accepts self-signed app certificates).
pub fn self_signed_certificate(key: &PrivateKey, common_name: &str) -> Result<Certificate, JoseError> {
    self_signed_certificate_until(key, common_name, None)
}

/// [`self_signed_certificate`], valid until midnight (UTC) at the start of the day of `until`.
pub fn self_signed_certificate_until(
    key: &PrivateKey,
    common_name: &str,
    until: Option<jiff::Timestamp>,
) -> Result<Certificate, JoseError> {
    let pem = private_key_to_pem(key);
    let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| JoseError::PrivateKey(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| JoseError::Certificate(e.to_string()))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    if let Some(until) = until {
        let d = until.to_zoned(jiff::tz::TimeZone::UTC).date();
        params.not_after = rcgen::date_time_ymd(d.year() as i32, d.month() as u8, d.day() as u8);
    }
    let cert = params.self_signed(&pair).map_err(|e| JoseError::Certificate(e.to_string()))?;
    Certificate::from_pem(&cert.pem())
}

/// A random version-4 GUID (for `jti` and correlation ids).
pub fn guid() -> String {
    let mut b = [0u8; 16];
    getrandom_fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Random bytes from the operating system.
pub fn getrandom_fill(buf: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::LazyLock;

    static KEY: LazyLock<PrivateKey> = LazyLock::new(generate_key);

    #[test]
    fn rsa_signatures_round_trip_and_tampering_is_detected() {
        let public = KEY.to_public_key();
        for alg in [Alg::PS256, Alg::RS256] {
            let jwt = sign_rsa(alg, &KEY, json!({"kid": "k"}), &json!({"sub": "a"})).unwrap();
            let jws = Jws::decode(&jwt).unwrap();
            assert_eq!(jws.alg().unwrap(), alg);
            jws.verify_rsa(&public).unwrap();
            // Change the claims, keep the signature.
            let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
            parts[1] = b64url(json!({"sub": "b"}).to_string().as_bytes());
            let forged = Jws::decode(&parts.join(".")).unwrap();
            assert_eq!(forged.verify_rsa(&public), Err(JoseError::BadSignature));
        }
    }

    #[test]
    fn hmac_tokens_verify_only_with_their_secret() {
        let jwt = sign_hmac(b"one", &json!({"aud": "x"}));
        Jws::decode(&jwt).unwrap().verify_hmac(b"one").unwrap();
        assert_eq!(Jws::decode(&jwt).unwrap().verify_hmac(b"two"), Err(JoseError::BadSignature));
        assert_eq!(Jws::decode("a.b").unwrap_err(), JoseError::Malformed);
    }

    #[test]
    fn certificates_give_thumbprints_and_keys_load_from_pem() {
        let cert = self_signed_certificate(&KEY, "test").unwrap();
        let again = Certificate::from_pem(&format!("junk\n{}", cert.to_pem())).unwrap();
        assert_eq!(again.der, cert.der);
        assert_eq!(cert.x5t_s256().len(), 43);
        assert_eq!(cert.x5t().len(), 27);
        assert_eq!(again.public_key, KEY.to_public_key());
        let back = private_key_from_pem(&private_key_to_pem(&KEY)).unwrap();
        assert_eq!(back.to_public_key(), KEY.to_public_key());
        assert!(private_key_from_pem("nothing").unwrap_err().to_string().contains("no RSA private key"));
        assert!(Certificate::from_pem("nothing").is_err());
    }

    #[test]
    fn guids_look_like_guids() {
        let g = guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert_ne!(g, guid());
    }
}
