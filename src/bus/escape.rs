//! Object-path labels from row names, encoded as systemd's `sd_bus_path_encode` does, so
//! paths are predictable from a name and any byte string is representable.

use std::fmt::Write;

/// Every byte outside `[A-Za-z0-9]` becomes `_` + two lowercase hex digits, a leading digit
/// is escaped too, and the empty string is `_`.
pub fn encode_label(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for (i, byte) in name.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (byte.is_ascii_digit() && i > 0) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "_{byte:02x}");
        }
    }
    out
}

/// The inverse of [`encode_label`] (a row path back to its name); `None` for text
/// `encode_label` never produces.
pub fn decode_label(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = label.get(i + 1..i + 3)?;
            if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if bytes[i].is_ascii_alphanumeric() {
            out.push(bytes[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(encode_label("br-int.1"), "br_2dint_2e1");
        assert_eq!(encode_label("9x"), "_39x");
        assert_eq!(encode_label("a_b"), "a_5fb");
        assert_eq!(encode_label(""), "_");
        assert_eq!(encode_label("tap0"), "tap0");
    }

    #[test]
    fn non_ascii_is_escaped_bytewise() {
        assert_eq!(encode_label("é"), "_c3_a9");
        assert_eq!(encode_label("a b/c"), "a_20b_2fc");
    }

    #[test]
    fn round_trips() {
        for name in [
            "",
            "br-int.1",
            "9x",
            "a_b",
            "é€😀",
            "_",
            "__",
            "0",
            "tap123",
            "x:y@z",
        ] {
            let label = encode_label(name);
            assert!(
                label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{label}"
            );
            assert_eq!(decode_label(&label).as_deref(), Some(name), "{label}");
        }
    }

    #[test]
    fn rejects_foreign_labels() {
        for bad in ["a-b", "_4", "_zz", "_2D", "a_"] {
            assert_eq!(decode_label(bad), None, "{bad}");
        }
    }
}
