//! Framing of the OVSDB wire format (RFC 7047): JSON values sent back to back on a
//! stream socket with no delimiter or length prefix.
//!
//! This file owns only the byte-level framing: finding where one top-level JSON value
//! ends, and serialising outgoing values. It does no I/O and parses nothing; the
//! connection owns a `BytesMut`, appends whatever it reads, and asks [`Framer::decode`]
//! for whole frames, which are split off the front without moving the bytes behind them
//! ("check, then hand over and advance", as in mini-redis' `frame.rs`). Each consumer
//! parses a frame's text into its own types.
//!
//! Because nothing on the wire marks the end of a message, the only way to know a value
//! is complete is to track JSON nesting. The scanner keeps its position between calls,
//! so a large value arriving in many small reads is scanned once, not once per read.

use bytes::{Buf, Bytes, BytesMut};
use serde_json::Value;

/// Errors from framing: the stream is not valid JSON-RPC framing.
///
/// All of them are fatal for the connection: with no delimiters on the wire there is no
/// way to resynchronise after a framing error.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unexpected byte {byte:#04x} between JSON values")]
    Garbage { byte: u8 },
    #[error("JSON value larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Incremental scanner that finds complete top-level JSON values in a growing buffer.
///
/// A top-level value must be an object or an array (OVSDB only sends objects); scalars
/// at top level are rejected as [`CodecError::Garbage`], because a bare number has no
/// closing delimiter and could never be framed unambiguously.
#[derive(Debug)]
pub struct Framer {
    max_value_len: usize,
    /// Offset in the buffer of the next byte not yet examined.
    pos: usize,
    /// Offset of the opening `{`/`[` of the value being scanned, if one has started.
    start: Option<usize>,
    /// Nesting depth of `{`/`[` inside the current value (1 right after the opener).
    depth: usize,
    in_string: bool,
    /// The previous byte was a backslash inside a string, so this byte is escaped.
    /// Kept in the state because the escape and the escaped byte may arrive in
    /// different reads.
    escaped: bool,
    /// Total bytes examined over the framer's lifetime; proves the scan is linear.
    scanned: u64,
}

impl Framer {
    /// Creates a framer. A top-level value longer than `max_value_len` bytes is an error
    /// ([`CodecError::TooLarge`]) as soon as that many of its bytes have arrived; this
    /// bounds how much a peer can make us buffer.
    pub fn new(max_value_len: usize) -> Self {
        Self {
            max_value_len,
            pos: 0,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            scanned: 0,
        }
    }

    /// Splits one complete JSON value off the front of `buf`, without parsing it.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a complete value; append more bytes
    /// and call again (the scan resumes where it stopped). On `Ok(Some(frame))` the
    /// value's bytes and any whitespace before it are no longer in `buf`; call again to
    /// get further values already in the buffer. Whitespace between values is discarded
    /// even when no value follows yet. Neither copies nor moves the bytes that remain.
    ///
    /// `buf` must only ever be appended to between calls (apart from what this method
    /// takes itself), or the saved scan position is meaningless.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        match self.check(buf)? {
            Some((start, end)) => {
                let mut frame = buf.split_to(end);
                frame.advance(start);
                Ok(Some(frame.freeze()))
            }
            None => {
                // Everything scanned so far is inter-value whitespace: drop it so a peer
                // sending endless whitespace cannot grow the buffer.
                if self.start.is_none() && self.pos > 0 {
                    buf.advance(self.pos);
                    self.pos = 0;
                }
                Ok(None)
            }
        }
    }

    /// Looks for one complete JSON value at the front of `buf` without parsing it.
    ///
    /// Returns `Ok(Some((start, end)))`, the byte range of the complete top-level value
    /// (`start` skips leading whitespace), or `Ok(None)` if more bytes are needed. The
    /// scan position is remembered, so calling again after appending bytes continues
    /// where it stopped and total work is linear in the stream length.
    ///
    /// After `Some`, the framer has reset itself for the next value and the caller must
    /// remove `buf[..end]` before calling again. After `Err`, the stream is unusable.
    pub fn check(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
        let before = self.pos;
        let result = self.scan(buf);
        self.scanned += (self.pos - before) as u64;
        match result {
            Ok(Some(_)) | Err(_) => self.reset(),
            Ok(None) => {}
        }
        result
    }

    /// How many more bytes `buf` can usefully take: past that, the value being scanned is
    /// too large whatever they hold, so a reader need not make room for more.
    pub fn room(&self, buf: &[u8]) -> usize {
        let buffered = self.start.map_or(0, |start| buf.len() - start);
        self.max_value_len.saturating_sub(buffered)
    }

    /// Total number of bytes the scanner has examined since creation. A byte is examined
    /// once, so this equals the number of bytes framed (plus any trailing partial value).
    pub fn bytes_scanned(&self) -> u64 {
        self.scanned
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.start = None;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    fn scan(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
        let start = match self.start {
            Some(start) => start,
            None => match self.skip_whitespace(buf)? {
                Some(start) => start,
                None => return Ok(None),
            },
        };

        // Never look further than the limit allows: a peer streaming one endless value
        // is cut off after `max_value_len` bytes instead of whenever it stops.
        let window = start.saturating_add(self.max_value_len).min(buf.len());
        let from = self.pos.min(window);

        // Locals instead of fields keep the hot loop in registers.
        let mut depth = self.depth;
        let mut in_string = self.in_string;
        let mut escaped = self.escaped;
        let mut end = None;
        for (i, &b) in buf[from..window].iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    // Mismatched pairs such as `{]` are left for serde_json to reject;
                    // counting is enough to find where the value claims to end.
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(from + i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        self.depth = depth;
        self.in_string = in_string;
        self.escaped = escaped;

        if let Some(end) = end {
            self.pos = end;
            return Ok(Some((start, end)));
        }
        self.pos = window;
        if window - start >= self.max_value_len {
            // `max_value_len` bytes seen and still open: the value is longer than allowed.
            return Err(CodecError::TooLarge {
                limit: self.max_value_len,
            });
        }
        Ok(None)
    }

    /// Advances past whitespace between values. Returns the offset of the opener of the
    /// next value (and enters it) or `None` if the buffer ends first.
    fn skip_whitespace(&mut self, buf: &[u8]) -> Result<Option<usize>, CodecError> {
        while let Some(&b) = buf.get(self.pos) {
            match b {
                // RFC 8259 insignificant whitespace.
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'{' | b'[' => {
                    self.start = Some(self.pos);
                    self.depth = 1;
                    self.pos += 1;
                    return Ok(Some(self.pos - 1));
                }
                byte => return Err(CodecError::Garbage { byte }),
            }
        }
        Ok(None)
    }
}

/// Serialises an outgoing JSON-RPC message. No delimiter is added: the peer frames
/// values by their nesting, exactly as [`Framer`] does.
pub fn encode(value: &Value) -> Vec<u8> {
    // `Display` for `Value` cannot fail (keys are always strings), unlike the generic
    // `serde_json::to_vec`, which would need an `unwrap`.
    value.to_string().into_bytes()
}

#[cfg(test)]
pub(crate) mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) const LIMIT: usize = 256 * 1024 * 1024;

    /// The next frame, parsed (framing itself never parses).
    fn next(framer: &mut Framer, buf: &mut BytesMut) -> Result<Option<Value>, CodecError> {
        Ok(framer
            .decode(buf)?
            .map(|frame| serde_json::from_slice(&frame).expect("a frame of valid JSON")))
    }

    /// Feeds `chunks` one at a time, collecting every value decoded along the way.
    pub(super) fn feed(framer: &mut Framer, buf: &mut BytesMut, chunks: &[&[u8]]) -> Vec<Value> {
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(v) = next(framer, buf).expect("valid stream") {
                out.push(v);
            }
        }
        out
    }

    fn decode_all(input: &[u8]) -> Result<Vec<Value>, CodecError> {
        let mut framer = Framer::new(LIMIT);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(v) = next(&mut framer, &mut buf)? {
            out.push(v);
        }
        Ok(out)
    }

    /// Asserts `text` decodes to exactly `expected` however it is split into two reads,
    /// and also when fed one byte at a time.
    fn assert_every_split(text: &str, expected: &Value) {
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let mut framer = Framer::new(LIMIT);
            let mut buf = BytesMut::new();
            let got = feed(&mut framer, &mut buf, &[&bytes[..split], &bytes[split..]]);
            assert_eq!(got, vec![expected.clone()], "split at {split}");
            assert!(buf.is_empty(), "split at {split}: leftover {buf:?}");
        }
        let mut framer = Framer::new(LIMIT);
        let mut buf = BytesMut::new();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed(&mut framer, &mut buf, &chunks), vec![expected.clone()]);
        assert_eq!(framer.bytes_scanned(), bytes.len() as u64);
    }

    #[test]
    fn value_split_at_every_byte() {
        let text = r#"  {"id":1,"method":"update","params":[null,{"Bridge":{"uuid-1":{"new":{"name":"br0","ports":["set",[["uuid","p1"]]]}}}}],"f":-1.5e3,"t":true}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_every_split(text, &expected);
    }

    #[test]
    fn top_level_array_accepted() {
        assert_every_split("[1,[2,{\"a\":[]}],\"]\"]", &json!([1, [2, {"a": []}], "]"]));
    }

    #[test]
    fn several_values_in_one_read() {
        let values = decode_all(br#"{"a":1}{"b":[2]}[3]"#).unwrap();
        assert_eq!(values, vec![json!({"a": 1}), json!({"b": [2]}), json!([3])]);

        let values = decode_all(b"\n{\"a\":1}\r\n  \t{\"b\":2}\n\n[]\n").unwrap();
        assert_eq!(values, vec![json!({"a": 1}), json!({"b": 2}), json!([])]);
    }

    #[test]
    fn none_after_last_value_and_whitespace_discarded() {
        let mut framer = Framer::new(LIMIT);
        let mut buf = BytesMut::from(&b"{\"a\":1}  \n"[..]);
        assert_eq!(next(&mut framer, &mut buf).unwrap(), Some(json!({"a": 1})));
        assert_eq!(next(&mut framer, &mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert_eq!(next(&mut framer, &mut buf).unwrap(), None);

        buf.extend_from_slice(b" {\"b\"");
        assert_eq!(next(&mut framer, &mut buf).unwrap(), None);
        buf.extend_from_slice(b":2}");
        assert_eq!(next(&mut framer, &mut buf).unwrap(), Some(json!({"b": 2})));
        assert!(buf.is_empty());
    }

    #[test]
    fn check_reports_range_skipping_whitespace() {
        let mut framer = Framer::new(LIMIT);
        let buf = b"  {\"a\":\"}\"} {}";
        assert_eq!(framer.check(buf).unwrap(), Some((2, 11)));
        let rest = &buf[11..];
        assert_eq!(framer.check(rest).unwrap(), Some((1, 3)));
    }

    #[test]
    fn delimiters_and_escapes_inside_strings() {
        let cases = [
            r#"{"a":"{[}]","b":"}}}]]]"}"#,
            r#"{"q":"say \"}\" and \"{\""}"#,
            r#"{"bs":"\\","next":{"x":1}}"#,
            // String ending in an escaped backslash: the quote after `\\` closes it.
            r#"{"k":"ends with \\"}"#,
            r#"{"k":"a\\\"}b\\\\","z":["\\"]}"#,
            r#"{"u":"\u0022}\u005c"}"#,
        ];
        for text in cases {
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_every_split(text, &expected);
            // A following value proves the end was found at the right byte.
            let doubled = format!("{text}{text}");
            assert_eq!(
                decode_all(doubled.as_bytes()).unwrap(),
                vec![expected.clone(), expected]
            );
        }
    }

    #[test]
    fn utf8_split_at_every_byte() {
        let text = r#"{"ñ":"España €5 😀","e":["€","😀😀"]}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_every_split(text, &expected);
    }

    #[test]
    fn garbage_at_top_level() {
        for input in [
            &b"x"[..],
            b"}",
            b"]",
            b"\"str\"",
            b"42",
            b"  \n null",
            b"\0",
        ] {
            match decode_all(input) {
                Err(CodecError::Garbage { .. }) => {}
                other => panic!("{input:?}: expected Garbage, got {other:?}"),
            }
        }
        match decode_all(b"{\"a\":1} }") {
            Err(CodecError::Garbage { byte: b'}' }) => {}
            other => panic!("expected Garbage after value, got {other:?}"),
        }
    }

    #[test]
    fn too_large_complete_value() {
        let limit = 16;
        let mut framer = Framer::new(limit);
        let mut buf = BytesMut::from(&br#"{"k":"0123456789"}"#[..]); // 18 bytes
        assert!(matches!(
            framer.decode(&mut buf),
            Err(CodecError::TooLarge { limit: 16 })
        ));

        // Exactly at the limit is fine.
        let mut framer = Framer::new(limit);
        let mut buf = BytesMut::from(&b"  {\"k\":\"01234567\"}"[..]); // 16 bytes after whitespace
        assert_eq!(
            next(&mut framer, &mut buf).unwrap(),
            Some(json!({"k": "01234567"}))
        );
    }

    #[test]
    fn too_large_incomplete_value() {
        let mut framer = Framer::new(16);
        let mut buf = BytesMut::from(&br#"{"k":"0123"#[..]);
        assert_eq!(next(&mut framer, &mut buf).unwrap(), None);
        buf.extend_from_slice(b"456789abcdef");
        assert!(matches!(
            framer.decode(&mut buf),
            Err(CodecError::TooLarge { limit: 16 })
        ));
    }

    #[test]
    fn too_large_is_refused_once_the_limit_has_arrived() {
        // A value that never ends, in small reads: refused at the read that brings it to
        // the limit, without waiting for its end or looking past the limit.
        let limit = 1000;
        let mut framer = Framer::new(limit);
        let mut buf = BytesMut::from(&b"{\"k\":\""[..]);
        loop {
            match framer.decode(&mut buf) {
                Ok(None) => {
                    assert_eq!(framer.room(&buf), limit - buf.len());
                    buf.extend_from_slice(&[b'x'; 64]);
                }
                Err(CodecError::TooLarge { limit: 1000 }) => break,
                other => panic!("after {} bytes: {other:?}", buf.len()),
            }
        }
        assert!(
            (limit..limit + 64).contains(&buf.len()),
            "refused with {} bytes buffered",
            buf.len()
        );
        assert_eq!(framer.bytes_scanned(), limit as u64);
    }

    #[test]
    fn large_value_in_small_reads_is_scanned_linearly() {
        // ~20 MB of mixed content: nesting, escapes and multi-byte characters.
        let item = r#"{"name":"br-int \"q\" \\ ñ€😀","ports":["set",[["uuid","a{b}[c]"]]]},"#;
        let mut text = String::from(r#"{"id":7,"result":["#);
        while text.len() < 20_000_000 {
            text.push_str(item);
        }
        text.push_str("null]}");
        let bytes = text.as_bytes();
        let total = bytes.len();

        let mut framer = Framer::new(LIMIT);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(4096) {
            buf.extend_from_slice(chunk);
            if let Some(v) = next(&mut framer, &mut buf).unwrap() {
                got.push(v);
            }
        }
        assert_eq!(got.len(), 1);
        assert!(buf.is_empty());
        assert_eq!(got[0]["id"], json!(7));
        let items = got[0]["result"].as_array().unwrap();
        assert_eq!(items[0]["name"], json!("br-int \"q\" \\ ñ€😀"));
        assert_eq!(items.last(), Some(&Value::Null));
        assert!(framer.bytes_scanned() <= 2 * total as u64);
    }

    #[test]
    fn encode_round_trips() {
        let value = json!({"method": "echo", "params": ["ñ", {"a": [1, 2.5, null]}], "id": "x"});
        let bytes = encode(&value);
        assert_eq!(decode_all(&bytes).unwrap(), vec![value]);
    }
}
