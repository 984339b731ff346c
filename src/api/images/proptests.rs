//! Property tests of the `Range` header parser: no header makes it panic, every refusal
//! is answered with a 4xx, an accepted range lies inside the image, and the three forms
//! of a single range mean what RFC 9110 and Glance say.

use axum::response::IntoResponse;
use proptest::collection::vec;
use proptest::prelude::*;

use super::parse_range;

const CASES: u32 = 256;

/// Image sizes: empty, small (so offsets often fall inside and just outside), and any.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        4 => 1..200u64,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
}

/// Offsets near a size of at most 200, and any.
fn offset() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..220u64).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => proptest::sample::select(vec![
            "18446744073709551616", "-1", "+1", " 7 ", "0x10", "1.5", "", "x",
        ])
        .prop_map(String::from),
    ]
}

/// One range spec: `a-b`, `-n`, `a-`, or something else.
fn spec() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (offset(), offset()).prop_map(|(a, b)| format!("{a}-{b}")),
        2 => offset().prop_map(|n| format!("-{n}")),
        2 => offset().prop_map(|a| format!("{a}-")),
        1 => proptest::sample::select(vec!["-", "", "--", "1-2-3", "1 - 2"]).prop_map(String::from),
        1 => "[0-9 ,=-]{0,8}",
    ]
}

/// Whole headers: mostly one spec, sometimes several, behind `bytes=` or another unit;
/// or garbage.
fn header() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        4 => Just("bytes="),
        1 => proptest::sample::select(vec![" bytes=", "bytes= ", "Bytes=", "items=", ""]),
    ];
    let specs = prop_oneof![
        4 => spec(),
        1 => vec(spec(), 2..4).prop_map(|specs| specs.join(",")),
    ];
    prop_oneof![
        8 => (unit, specs).prop_map(|(unit, specs)| format!("{unit}{specs}")),
        1 => ".{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn a_range_lies_inside_the_image_or_is_refused_with_a_4xx(
        header in header(),
        size in size(),
    ) {
        match parse_range(&header, size) {
            Ok((start, end)) => {
                prop_assert!(start <= end && end < size, "{}..={} of {}", start, end, size);
            }
            Err(e) => {
                let status = e.into_response().status();
                prop_assert!(status.is_client_error(), "{} for {:?}", status, header);
            }
        }
    }

    #[test]
    fn a_first_last_range_is_clamped_to_the_image(a in 0..300u64, b in 0..300u64, size in size()) {
        let parsed = parse_range(&format!("bytes={a}-{b}"), size).ok();
        let expected = (a < size && a <= b).then(|| (a, b.min(size - 1)));
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn an_open_range_runs_to_the_end(a in 0..300u64, size in size()) {
        let parsed = parse_range(&format!("bytes={a}-"), size).ok();
        prop_assert_eq!(parsed, (a < size).then(|| (a, size - 1)));
    }

    #[test]
    fn a_suffix_range_is_the_last_bytes(n in 0..300u64, size in size()) {
        let parsed = parse_range(&format!("bytes=-{n}"), size).ok();
        let expected = (n > 0 && size > 0).then(|| (size - n.min(size), size - 1));
        prop_assert_eq!(parsed, expected);
    }
}
