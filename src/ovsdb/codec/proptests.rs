//! Properties of the framer over generated streams: whatever the values, their spelling and
//! the way the stream is cut into reads, the frames are exactly the values sent; and no
//! input, however broken, makes it panic.

use super::tests::{LIMIT, feed};
use super::*;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, PrettyFormatter, Serializer};
use std::io::{self, Write};

/// Text with the characters the scanner treats specially (quotes, backslashes, brackets)
/// and those JSON must escape (controls, NUL) far more common than in random text.
fn json_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec!['"', '\\', '{', '}', '[', ']', '/', '\n', '\0']);
    prop::collection::vec(prop_oneof![3 => any::<char>(), 2 => special], 0..12)
        .prop_map(String::from_iter)
}

/// Any JSON value, nested a few levels. Reals are multiples of 1/64, which print and parse
/// back exactly however precise serde_json's float parsing is, so values compare equal
/// after a trip through text.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 64.0)),
        json_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(json_text(), inner, 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A value that may stand at the top of the stream: an object or an array.
fn top_level_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(json_value(), 0..6).prop_map(Value::from),
        prop::collection::btree_map(json_text(), json_value(), 0..6)
            .prop_map(|members| Value::Object(members.into_iter().collect())),
    ]
}

/// Whitespace as it may appear between values.
fn whitespace() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec![' ', '\t', '\n', '\r']), 0..4)
        .prop_map(String::from_iter)
}

/// The ways a peer may spell the same value.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    /// No whitespace, `\"` and `\\` escapes, raw UTF-8.
    Compact,
    /// Whitespace and newlines between every token.
    Pretty,
    /// Every escapable character as `\u00XX` and everything beyond ASCII as `\uXXXX`
    /// (surrogate pairs past the BMP), as ASCII-only writers do: a quote or backslash
    /// then never appears escaped by a backslash.
    Escaped,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    prop::sample::select(vec![Spelling::Compact, Spelling::Pretty, Spelling::Escaped])
}

struct AsciiOnly;

impl Formatter for AsciiOnly {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let byte = match escape {
            CharEscape::Quote => b'"',
            CharEscape::ReverseSolidus => b'\\',
            CharEscape::Solidus => b'/',
            CharEscape::Backspace => 0x08,
            CharEscape::FormFeed => 0x0c,
            CharEscape::LineFeed => b'\n',
            CharEscape::CarriageReturn => b'\r',
            CharEscape::Tab => b'\t',
            CharEscape::AsciiControl(byte) => byte,
        };
        write!(writer, "\\u{byte:04x}")
    }
}

fn spell(value: &Value, spelling: Spelling) -> Vec<u8> {
    match spelling {
        Spelling::Compact => encode(value),
        Spelling::Pretty => write_with(value, PrettyFormatter::new()),
        Spelling::Escaped => write_with(value, AsciiOnly),
    }
}

fn write_with(value: &Value, formatter: impl Formatter) -> Vec<u8> {
    let mut out = Vec::new();
    value
        .serialize(&mut Serializer::with_formatter(&mut out, formatter))
        .expect("a JSON value serialises into memory");
    out
}

/// `bytes` cut at the given points: any number of cuts, anywhere, repeats giving empty
/// reads.
fn cut<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut from = 0;
    for point in points {
        chunks.push(&bytes[from..point]);
        from = point;
    }
    chunks.push(&bytes[from..]);
    chunks
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_stream_cut_anywhere_decodes_to_the_values_sent(
        values in prop::collection::vec((whitespace(), top_level_value(), spelling()), 0..6),
        trailing in whitespace(),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        for (gap, value, spelling) in &values {
            stream.extend_from_slice(gap.as_bytes());
            stream.extend(spell(value, *spelling));
        }
        stream.extend_from_slice(trailing.as_bytes());

        let mut framer = Framer::new(LIMIT);
        let mut buf = BytesMut::new();
        let decoded = feed(&mut framer, &mut buf, &cut(&stream, &cuts));
        let sent: Vec<Value> = values.into_iter().map(|(_, value, _)| value).collect();
        prop_assert_eq!(decoded, sent);
        prop_assert!(buf.is_empty(), "left over: {:?}", buf);
        prop_assert_eq!(framer.bytes_scanned(), stream.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_cut_anywhere_never_panic(
        bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(b"{}[]\"\\ \n".to_vec())],
            0..256,
        ),
        cuts in cuts(),
        limit in prop_oneof![1..64usize, Just(LIMIT)],
    ) {
        let mut framer = Framer::new(limit);
        let mut buf = BytesMut::new();
        'stream: for chunk in cut(&bytes, &cuts) {
            buf.extend_from_slice(chunk);
            loop {
                match framer.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        prop_assert!(matches!(frame.first(), Some(b'{' | b'[')), "{:?}", frame);
                        prop_assert!(matches!(frame.last(), Some(b'}' | b']')), "{:?}", frame);
                        prop_assert!(frame.len() <= limit);
                    }
                    Ok(None) => break,
                    // The stream is unusable after an error: nothing more is fed.
                    Err(_) => break 'stream,
                }
            }
        }
    }

    /// The limit applies to the value alone, not to whitespace before it, and a value over
    /// it is refused as soon as `limit` of its bytes are buffered, not when it ends.
    #[test]
    fn a_value_over_the_limit_is_too_large_once_limit_bytes_arrive(
        gap in whitespace(),
        value in top_level_value(),
        spelling in spelling(),
        limit in any::<Index>(),
        cuts in cuts(),
    ) {
        let text = spell(&value, spelling);
        // Below, at and above the value's length.
        let limit = 1 + limit.index(2 * text.len());
        let stream = [gap.as_bytes(), &text].concat();

        let mut framer = Framer::new(limit);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut decided = false;
        for chunk in cut(&stream, &cuts) {
            buf.extend_from_slice(chunk);
            fed += chunk.len();
            let buffered = fed.saturating_sub(gap.len());
            match framer.decode(&mut buf) {
                Ok(None) => prop_assert!(buffered < limit.min(text.len())),
                Ok(Some(frame)) => {
                    prop_assert!(text.len() <= limit);
                    prop_assert_eq!(&frame[..], &text[..]);
                    decided = true;
                    break;
                }
                Err(error) => {
                    let reported = match error {
                        CodecError::TooLarge { limit } => limit,
                        other => return Err(TestCaseError::fail(other.to_string())),
                    };
                    prop_assert_eq!(reported, limit);
                    prop_assert!(text.len() > limit && buffered >= limit);
                    decided = true;
                    break;
                }
            }
        }
        prop_assert!(decided);
    }
}
