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

    /// The examples published in RFC 8785 itself (§3.2.2 numbers, strings and literals; §3.2.3
    /// property sorting by UTF-16 code units, where a surrogate pair sorts before U+FB33).
    #[test]
    fn rfc_8785_published_examples() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        let value: serde_json::Value = serde_json::from_str(input).unwrap();
        let expected = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
        assert_eq!(
            String::from_utf8(canonical_json(&value).unwrap()).unwrap(),
            expected
        );

        let sorting = r#"{
            "\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let value: serde_json::Value = serde_json::from_str(sorting).unwrap();
        let canonical: serde_json::Value =
            serde_json::from_slice(&canonical_json(&value).unwrap()).unwrap();
        let text = String::from_utf8(canonical_json(&value).unwrap()).unwrap();
        let order: Vec<usize> = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small",
            "Euro Sign",
            "Emoji",
            "Hebrew",
        ]
        .iter()
        .map(|v| text.find(v).expect("value present"))
        .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "UTF-16 order violated: {text}"
        );
        assert_eq!(canonical, value);
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
