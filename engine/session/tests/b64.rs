//! `carboy_session::b64` gives Python 3.11's answer for every vector of
//! `tests/data/b64_vectors.json` (generated from Python's `base64` module
//! by `tests/data/make_b64_vectors.py`): the same bytes, or the same error
//! with a message that starts with Python's.

use std::collections::BTreeMap;

use carboy_session::b64::{B64Error, b64decode, b64decode_validated, b64encode};
use serde_json::Value;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex string {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// The kind name the generator gives the Python error that `e` stands for.
fn kind(e: &B64Error) -> &'static str {
    match e {
        B64Error::AltcharsLength { .. } => "altchars_length",
        B64Error::InvalidLength { .. } => "invalid_length",
        B64Error::IncorrectPadding => "incorrect_padding",
        B64Error::LeadingPadding => "leading_padding",
        B64Error::NotBase64 { .. } => "not_base64",
        B64Error::DiscontinuousPadding { .. } => "discontinuous_padding",
        B64Error::ExcessDataAfterPadding { .. } => "excess_data_after_padding",
        other => panic!("a B64Error variant this test does not know: {other:?}"),
    }
}

#[test]
fn every_python_vector_matches() {
    let text = include_str!("data/b64_vectors.json");
    let doc: Value = serde_json::from_str(text).expect("b64_vectors.json is JSON");
    assert!(
        doc["python"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.11.")),
        "vectors must come from Python 3.11: {}",
        doc["python"]
    );
    let vectors = doc["vectors"].as_array().expect("a vectors array");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let op = v["op"].as_str().expect("op");
        let input = hex(v["input"].as_str().expect("input"));
        let altchars = v["altchars"].as_str().map(hex);
        let got = match op {
            "encode" => b64encode(&input, altchars.as_deref()),
            "decode" => b64decode(&input, altchars.as_deref()),
            "decode_validated" => b64decode_validated(&input, altchars.as_deref()),
            other => panic!("vector {i}: unknown op {other:?}"),
        };
        let expected = if let Some(out) = v["output"].as_str() {
            *seen.entry(format!("{op}: ok")).or_default() += 1;
            Ok(hex(out))
        } else {
            let err = &v["error"];
            let kind = err["kind"].as_str().expect("error kind");
            *seen.entry(format!("{op}: {kind}")).or_default() += 1;
            Err((kind, err["message"].as_str().expect("error message")))
        };
        let ok = match (&got, &expected) {
            (Ok(g), Ok(e)) => g == e,
            (Err(g), Err((kind_name, message))) => {
                kind(g) == *kind_name && g.to_string().starts_with(message)
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "vector {i}: {op}({:?}, altchars {:?}): python {expected:?}, carboy {got:?}",
                String::from_utf8_lossy(&input),
                altchars.as_deref().map(String::from_utf8_lossy),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors differ:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
    // The vectors must exercise every outcome, or this test proves little.
    for needed in [
        "encode: ok",
        "encode: altchars_length",
        "decode: ok",
        "decode: altchars_length",
        "decode: incorrect_padding",
        "decode: invalid_length",
        "decode_validated: ok",
        "decode_validated: leading_padding",
        "decode_validated: not_base64",
        "decode_validated: discontinuous_padding",
        "decode_validated: excess_data_after_padding",
        "decode_validated: incorrect_padding",
        "decode_validated: invalid_length",
    ] {
        assert!(
            seen.get(needed).is_some_and(|&n| n > 0),
            "no vector for {needed}: {seen:?}"
        );
    }
}

#[test]
fn errors_say_where() {
    assert_eq!(
        b64decode_validated(b"Zm9v!", None),
        Err(B64Error::NotBase64 {
            byte: b'!',
            offset: 4
        })
    );
    assert_eq!(
        b64decode_validated(b"Zg==xx", None),
        Err(B64Error::ExcessDataAfterPadding { offset: 4 })
    );
    assert_eq!(
        b64decode_validated(b"Zg=a", None),
        Err(B64Error::DiscontinuousPadding { offset: 3 })
    );
    assert_eq!(
        b64encode(b"x", Some(b"-_~")),
        Err(B64Error::AltcharsLength { len: 3 })
    );
    assert_eq!(
        b64decode(b"Zm9vY", None),
        Err(B64Error::InvalidLength { data_chars: 5 })
    );
}
