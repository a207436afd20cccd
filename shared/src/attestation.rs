//! Signed certificates: an in-toto statement about the reviewed bytes, wrapped in a DSSE envelope
//! and signed with the service's Ed25519 key.
//!
//! - The statement's subjects are digests, never names: the bundle digest (see
//!   `sigma_scanner::unpack::bundle_digest`) and the SHA-256 of the LF-normalised SKILL.md.
//! - The predicate carries the verdict and every version that produced it, plus the payload hash of
//!   the sealed snapshot, so the signature covers the whole snapshot too.
//! - The signature is over DSSE's pre-authentication encoding (PAE), which binds the payload type:
//!   a payload cannot be replayed under another type.
//! - Verifiers take public keys from the published key set (`/.well-known/sigma-keys.json`), never
//!   from the envelope. Key ids are fingerprints of the public key, so a key set cannot claim one id
//!   for another key.
//! - Keys live in a directory of PEM files: PKCS#8 private keys (`openssl genpkey -algorithm
//!   ed25519`) and SPKI public keys for retired ones. Rotation = add a new key, make it active, keep
//!   the old one's public half: older certificates stay verifiable.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::canonical::{canonical_json, payload_hash};

pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://sigma.dev/attestation/skill-certificate/v1";
pub const ALGORITHM: &str = "ed25519";
/// Subject names in the statement; the digests are what binds.
pub const SUBJECT_BUNDLE: &str = "bundle";
pub const SUBJECT_SKILL_MD: &str = "SKILL.md";

/// A DSSE envelope (https://github.com/secure-systems-lab/dsse).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the statement bytes.
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EnvelopeSignature {
    pub keyid: String,
    /// Base64 of the Ed25519 signature over PAE(payloadType, payload).
    pub sig: String,
}

/// One entry of the published key set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedKey {
    pub key_id: String,
    pub algorithm: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// The same key as an SPKI PEM, for `openssl pkeyutl -verify`.
    pub public_key_pem: String,
    /// `active` signs new certificates; `retired` keys only verify older ones.
    pub status: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct KeySet {
    pub keys: Vec<PublishedKey>,
}

/// DSSE v1 pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// `sigma-ed25519-` and the first 16 hex digits of SHA-256 over the raw public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("sigma-ed25519-{}", &hex::encode(digest)[..16])
}

fn published(key: &VerifyingKey, status: &str) -> anyhow::Result<PublishedKey> {
    Ok(PublishedKey {
        key_id: key_id(key),
        algorithm: ALGORITHM.into(),
        public_key: B64.encode(key.as_bytes()),
        public_key_pem: key
            .to_public_key_pem(LineEnding::LF)
            .context("cannot encode a public key as PEM")?,
        status: status.into(),
    })
}

/// The service's keys: every public key it has published, and the private key it signs with.
pub struct Keyring {
    active: Option<(String, SigningKey)>,
    published: KeySet,
}

impl Keyring {
    /// Loads every `*.pem` in `dir`. `active` names the file (without `.pem`) of the private key
    /// that signs; other private keys and public-key files are published as retired.
    pub fn load(dir: &Path, active: Option<&str>) -> anyhow::Result<Self> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the signing key directory {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut signing = None;
        let mut keys: Vec<PublishedKey> = Vec::new();
        for entry in entries {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let (public, private) = if pem.contains("PRIVATE KEY") {
                let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                    anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key: {e}", path.display())
                })?;
                (key.verifying_key(), Some(key))
            } else {
                let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
                    anyhow::anyhow!("{} is not an Ed25519 public key: {e}", path.display())
                })?;
                (key, None)
            };
            let is_active = active == Some(stem.as_str());
            if is_active {
                let key = private.with_context(|| {
                    format!(
                        "the active signing key {} holds no private key",
                        path.display()
                    )
                })?;
                signing = Some((key_id(&public), key));
            }
            let id = key_id(&public);
            // A retired key kept both as a private and a public file is published once.
            keys.retain(|k| k.key_id != id);
            keys.push(published(
                &public,
                if is_active { "active" } else { "retired" },
            )?);
        }
        if let Some(name) = active {
            anyhow::ensure!(
                signing.is_some(),
                "the active signing key {name}.pem is not in {}",
                dir.display()
            );
        }
        // Active first: a reader looking for "the" key finds the current one.
        keys.sort_by_key(|k| k.status != "active");
        Ok(Self {
            active: signing,
            published: KeySet { keys },
        })
    }

    pub fn empty() -> Self {
        Self {
            active: None,
            published: KeySet { keys: vec![] },
        }
    }

    pub fn key_set(&self) -> &KeySet {
        &self.published
    }

    pub fn can_sign(&self) -> bool {
        self.active.is_some()
    }

    /// Signs `statement` (canonical JSON bytes) into a DSSE envelope.
    pub fn sign(&self, statement: &Value) -> anyhow::Result<Envelope> {
        let (keyid, key) = self.active.as_ref().context(
            "no active signing key is configured (signing.key_dir and signing.active_key; \
             `sigma keygen` makes one)",
        )?;
        let payload = canonical_json(statement)?;
        let signature = key.sign(&pae(PAYLOAD_TYPE, &payload));
        Ok(Envelope {
            payload: B64.encode(&payload),
            payload_type: PAYLOAD_TYPE.into(),
            signatures: vec![EnvelopeSignature {
                keyid: keyid.clone(),
                sig: B64.encode(signature.to_bytes()),
            }],
        })
    }
}

/// A new Ed25519 private key as PKCS#8 PEM (what `openssl genpkey -algorithm ed25519` writes).
pub fn generate_private_key_pem() -> anyhow::Result<String> {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    Ok(key
        .to_pkcs8_pem(LineEnding::LF)
        .context("cannot encode the key")?
        .to_string())
}

/// What a certificate's signed statement says, built from its sealed snapshot.
pub fn certificate_statement(sealed: &Value) -> anyhow::Result<Value> {
    let mut subject = Vec::new();
    if let Some(digest) = sealed["source"]["bundleDigest"].as_str() {
        subject.push(json!({"name": SUBJECT_BUNDLE, "digest": {"sha256": digest}}));
    }
    if let Some(digest) = sealed["source"]["skillMdSha256"].as_str() {
        subject.push(json!({"name": SUBJECT_SKILL_MD, "digest": {"sha256": digest}}));
    }
    anyhow::ensure!(
        !subject.is_empty(),
        "a certificate needs at least one digest to sign"
    );
    let models: Vec<Value> = sealed["votes"]
        .as_array()
        .map(|votes| {
            votes
                .iter()
                .map(|v| json!({"phase": v["phase"], "validatorId": v["validatorId"], "model": v["model"], "verdict": v["verdict"]}))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "certificateId": sealed["certificateId"],
            "skillName": sealed["skillName"],
            "skillVersion": sealed["skillVersion"],
            "verdict": sealed["status"],
            "securityLevel": sealed["review"]["securityLevel"],
            "sandboxRiskLevel": sealed["review"]["sandboxRiskLevel"],
            "policyVersion": sealed["decision"]["policyVersion"],
            "rulePack": sealed["review"]["rulePack"],
            "analyzerVersion": sealed["review"]["analyzerVersion"],
            "votes": models,
            "issuedAt": sealed["issuedAt"],
            "sealedPayloadHash": payload_hash(sealed)?,
        },
    }))
}

/// Why a certificate failed verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the envelope's payload type is {0}, not {PAYLOAD_TYPE}")]
    PayloadType(String),
    #[error("the envelope is not valid base64 or JSON: {0}")]
    Malformed(String),
    #[error("no signature is by a published key (key ids in the envelope: {0})")]
    UnknownKey(String),
    #[error("the signature by {0} does not match the payload")]
    BadSignature(String),
    #[error("the statement is not a SIGMA certificate statement")]
    WrongStatement,
    #[error("the sealed snapshot was altered: its hash is {actual}, the signed hash is {signed}")]
    SnapshotAltered { signed: String, actual: String },
    #[error(
        "the sealed snapshot's {what} digest ({sealed}) differs from the signed one ({signed})"
    )]
    SnapshotDigest {
        what: &'static str,
        sealed: String,
        signed: String,
    },
}

/// Checks a DSSE envelope against the published keys and returns the signed statement and the id
/// of the key that signed it.
pub fn verify_envelope(envelope: &Envelope, keys: &KeySet) -> Result<(Value, String), VerifyError> {
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(VerifyError::PayloadType(envelope.payload_type.clone()));
    }
    let payload = B64
        .decode(&envelope.payload)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let message = pae(&envelope.payload_type, &payload);
    let mut last_error = None;
    for signature in &envelope.signatures {
        let Some(key) = keys
            .keys
            .iter()
            .find(|k| k.key_id == signature.keyid && k.algorithm == ALGORITHM)
        else {
            continue;
        };
        let checked = (|| {
            let raw: [u8; 32] = B64.decode(&key.public_key).ok()?.try_into().ok()?;
            let public = VerifyingKey::from_bytes(&raw).ok()?;
            // The published id must be this key's fingerprint; a key set cannot lend an id.
            if key_id(&public) != key.key_id {
                return None;
            }
            let sig: [u8; 64] = B64.decode(&signature.sig).ok()?.try_into().ok()?;
            public.verify(&message, &Signature::from_bytes(&sig)).ok()
        })();
        if checked.is_some() {
            let statement: Value = serde_json::from_slice(&payload)
                .map_err(|e| VerifyError::Malformed(e.to_string()))?;
            if statement["_type"] != STATEMENT_TYPE || statement["predicateType"] != PREDICATE_TYPE
            {
                return Err(VerifyError::WrongStatement);
            }
            return Ok((statement, signature.keyid.clone()));
        }
        last_error = Some(VerifyError::BadSignature(signature.keyid.clone()));
    }
    Err(last_error.unwrap_or_else(|| {
        VerifyError::UnknownKey(
            envelope
                .signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }))
}

/// The digest the statement signs for `name`, if any.
pub fn subject_digest<'a>(statement: &'a Value, name: &str) -> Option<&'a str> {
    statement["subject"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["digest"]["sha256"]
        .as_str()
}

/// Checks that a sealed snapshot is the one the statement signed, digest for digest.
pub fn check_sealed(statement: &Value, sealed: &Value) -> Result<(), VerifyError> {
    let signed = statement["predicate"]["sealedPayloadHash"]
        .as_str()
        .unwrap_or_default();
    let actual = payload_hash(sealed).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if signed != actual {
        return Err(VerifyError::SnapshotAltered {
            signed: signed.into(),
            actual,
        });
    }
    for (what, name, field) in [
        ("bundle", SUBJECT_BUNDLE, "bundleDigest"),
        ("SKILL.md", SUBJECT_SKILL_MD, "skillMdSha256"),
    ] {
        let in_sealed = sealed["source"][field].as_str();
        let in_statement = subject_digest(statement, name);
        if in_sealed != in_statement {
            return Err(VerifyError::SnapshotDigest {
                what,
                sealed: in_sealed.unwrap_or("none").into(),
                signed: in_statement.unwrap_or("none").into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> Value {
        json!({
            "certificateId": "0123456789abcdef01234567",
            "status": "APPROVED",
            "skillName": "weather",
            "review": {"securityLevel": "CLEAR", "sandboxRiskLevel": "LOW", "rulePack": {"version": "1"}},
            "source": {"bundleDigest": "aa".repeat(32), "skillMdSha256": "bb".repeat(32)},
            "decision": {"policyVersion": "sigma-consensus-v1"},
            "votes": [{"phase": 1, "validatorId": "v1", "model": "m", "verdict": "SAFE"}],
            "issuedAt": "2026-12-01T00:00:00.000Z",
        })
    }

    fn keyring(dir: &Path, files: &[(&str, String)], active: Option<&str>) -> Keyring {
        for (name, pem) in files {
            std::fs::write(dir.join(format!("{name}.pem")), pem).unwrap();
        }
        Keyring::load(dir, active).unwrap()
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sigma-keys-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_then_verify_round_trip_and_tampering() {
        let dir = tempdir();
        let ring = keyring(
            &dir,
            &[("k1", generate_private_key_pem().unwrap())],
            Some("k1"),
        );
        let sealed = sealed();
        let statement = certificate_statement(&sealed).unwrap();
        let envelope = ring.sign(&statement).unwrap();
        let (signed, keyid) = verify_envelope(&envelope, ring.key_set()).unwrap();
        assert_eq!(signed, statement);
        assert_eq!(keyid, ring.key_set().keys[0].key_id);
        check_sealed(&signed, &sealed).unwrap();

        // One changed byte of the sealed snapshot.
        let mut altered = sealed.clone();
        altered["skillName"] = json!("weathes");
        assert!(matches!(
            check_sealed(&signed, &altered),
            Err(VerifyError::SnapshotAltered { .. })
        ));
        // One changed byte of the payload.
        let mut payload = B64.decode(&envelope.payload).unwrap();
        let at = payload.len() / 2;
        payload[at] ^= 1;
        let forged = Envelope {
            payload: B64.encode(&payload),
            ..envelope.clone()
        };
        assert!(matches!(
            verify_envelope(&forged, ring.key_set()),
            Err(VerifyError::BadSignature(_))
        ));
        // The same payload under another type fails: PAE binds the type.
        let retyped = Envelope {
            payload_type: "application/json".into(),
            ..envelope.clone()
        };
        assert!(matches!(
            verify_envelope(&retyped, ring.key_set()),
            Err(VerifyError::PayloadType(_))
        ));
        // A key the verifier did not publish is refused even if the signature is sound.
        let other_dir = tempdir();
        let other = keyring(
            &other_dir,
            &[("k9", generate_private_key_pem().unwrap())],
            Some("k9"),
        );
        let foreign = other.sign(&statement).unwrap();
        assert!(matches!(
            verify_envelope(&foreign, ring.key_set()),
            Err(VerifyError::UnknownKey(_))
        ));
        // A key set that lends the trusted id to the attacker's key is refused too.
        let mut lending = other.key_set().clone();
        lending.keys[0].key_id = ring.key_set().keys[0].key_id.clone();
        let mut relabelled = foreign.clone();
        relabelled.signatures[0].keyid = ring.key_set().keys[0].key_id.clone();
        assert!(verify_envelope(&relabelled, &lending).is_err());
    }

    #[test]
    fn rotation_keeps_older_certificates_verifiable() {
        let dir = tempdir();
        let first = generate_private_key_pem().unwrap();
        let ring1 = keyring(&dir, &[("2026-01", first.clone())], Some("2026-01"));
        let old = ring1
            .sign(&certificate_statement(&sealed()).unwrap())
            .unwrap();

        // Rotate: a new active key; the old one's private half is replaced by its public half.
        let public_pem = ring1.key_set().keys[0].public_key_pem.clone();
        std::fs::remove_file(dir.join("2026-01.pem")).unwrap();
        let ring2 = keyring(
            &dir,
            &[
                ("2026-01", public_pem),
                ("2026-12", generate_private_key_pem().unwrap()),
            ],
            Some("2026-12"),
        );
        let new = ring2
            .sign(&certificate_statement(&sealed()).unwrap())
            .unwrap();
        assert_ne!(old.signatures[0].keyid, new.signatures[0].keyid);
        let set = ring2.key_set();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.keys[0].status, "active");
        assert_eq!(set.keys[0].key_id, new.signatures[0].keyid);
        assert_eq!(set.keys[1].status, "retired");
        verify_envelope(&old, set).unwrap();
        verify_envelope(&new, set).unwrap();
        // A public key cannot be made the signer.
        assert!(Keyring::load(&dir, Some("2026-01")).is_err());
    }
}
