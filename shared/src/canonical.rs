//! Canonical JSON (RFC 8785, JCS) and the certificate payload hash `keccak256-canonical-json-v1`.

use serde::Serialize;
use sha3::{Digest, Keccak256};

pub const PAYLOAD_HASH_ALGORITHM: &str = "keccak256-canonical-json-v1";

pub fn canonical_json<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

pub fn keccak256_hex(bytes: &[u8]) -> String {
    hex::encode(Keccak256::digest(bytes))
}

/// `0x`-prefixed keccak-256 of the RFC 8785 canonical form of `value`.
pub fn payload_hash<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(format!("0x{}", keccak256_hex(&canonical_json(value)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "é"}});
        let b: serde_json::Value =
            serde_json::from_str("{ \"a\" : {\"x\":\"é\", \"y\":[1,2]}, \"b\":1 }").unwrap();
        assert_eq!(
            canonical_json(&a).unwrap(),
            "{\"a\":{\"x\":\"é\",\"y\":[1,2]},\"b\":1}".as_bytes()
        );
        assert_eq!(payload_hash(&a).unwrap(), payload_hash(&b).unwrap());
        assert_ne!(
            payload_hash(&a).unwrap(),
            payload_hash(&json!({"b": 2})).unwrap()
        );
    }

    #[test]
    fn keccak_is_the_ethereum_variant_not_nist_sha3() {
        // The well-known keccak-256 of the empty input (NIST SHA3-256 would give a7ffc6f8…).
        assert_eq!(
            keccak256_hex(b""),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }
}
