//! Property tests of the list query parser over arbitrary parameters, documented keys with
//! values near and far from valid: no panic, every rejection is `Invalid` (400), an accepted
//! query is well-formed, and limits, `in:` lists, time comparisons and property filters
//! mean what they say.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{Column, Compare, Filter, ListQuery, MAX_LIMIT, SORT_KEYS};
use crate::domain::DomainError;
use crate::domain::time;

const CASES: u32 = 256;

fn pair(key: &str, value: String) -> (String, String) {
    (key.to_string(), value)
}

fn one_of(words: &[&'static str]) -> impl Strategy<Value = String> + use<> {
    proptest::sample::select(words.to_vec()).prop_map(String::from)
}

/// Numbers as a query string carries them: in and out of range, signed, padded, not numbers.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<i64>().prop_map(|n| n.to_string()),
        2 => (0..2000i64).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => one_of(&["99999999999999999999", "-0", "+5", " 5", "1.5", "", "0x10"]),
        1 => ".{0,4}",
    ]
}

/// Sort keys, valid and not, as `sort_key` and `sort` name them.
fn sort_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => one_of(&[
            "name", "status", "container_format", "disk_format", "size", "id",
            "created_at", "updated_at",
        ]),
        1 => one_of(&["owner", "min_ram", "checksum", "", "Name", " name"]),
        1 => "[a-z_]{0,8}",
    ]
}

fn sort_dir() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => one_of(&["asc", "desc"]),
        1 => one_of(&["", "ASC", "up", " asc"]),
        1 => ".{0,4}",
    ]
}

/// The new syntax: `key[:dir]` items joined by commas, with stray spaces.
fn sort_spec() -> impl Strategy<Value = String> {
    vec((sort_key(), proptest::option::of(sort_dir()), " ?"), 0..4).prop_map(|items| {
        items
            .into_iter()
            .map(|(key, dir, pad)| match dir {
                Some(dir) => format!("{pad}{key}:{dir}"),
                None => format!("{key}{pad}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Instants in Glance's format, in other ISO 8601 forms, and not instants.
fn instant() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..4_102_444_800i64).prop_map(time::format),
        1 => one_of(&[
            "2020-01-01T00:00:00",
            "2020-01-01T01:00:00+01:00",
            "2020-02-30T00:00:00Z",
            "2020-01-01",
            "9999-12-31T23:59:59Z",
            "-2020-01-01T00:00:00Z",
            "soon",
            "",
        ]),
        1 => ".{0,12}",
    ]
}

fn operator() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => one_of(&["eq", "neq", "gt", "gte", "lt", "lte"]),
        1 => one_of(&["in", "foo", "", "GT", "2020-01-01T00"]),
    ]
}

fn time_filter() -> impl Strategy<Value = String> {
    (proptest::option::of(operator()), instant()).prop_map(|(op, at)| match op {
        Some(op) => format!("{op}:{at}"),
        None => at,
    })
}

/// Values of the string columns: plain, `in:` lists with and without quotes, operators.
fn column_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z0-9-]{0,8}",
        2 => "[a-z,\" ]{0,10}".prop_map(|list| format!("in:{list}")),
        1 => (operator(), "[a-z]{0,4}").prop_map(|(op, v)| format!("{op}:{v}")),
        1 => ".{0,10}",
    ]
}

/// One query parameter: a documented key with a value near or far from valid, or a
/// custom property filter with any name.
fn param() -> impl Strategy<Value = (String, String)> {
    let columns = [
        "name",
        "id",
        "status",
        "container_format",
        "disk_format",
        "owner",
        "checksum",
        "os_hash_value",
    ];
    let numeric = [
        "size",
        "virtual_size",
        "min_ram",
        "min_disk",
        "size_min",
        "size_max",
        "virtual_size_min",
        "virtual_size_max",
        "min_ram_min",
        "min_ram_max",
        "min_disk_min",
        "min_disk_max",
    ];
    prop_oneof![
        2 => number().prop_map(|v| pair("limit", v)),
        1 => ".{0,12}".prop_map(|v| pair("marker", v)),
        2 => sort_spec().prop_map(|v| pair("sort", v)),
        1 => sort_key().prop_map(|v| pair("sort_key", v)),
        1 => sort_dir().prop_map(|v| pair("sort_dir", v)),
        2 => (one_of(&["created_at", "updated_at"]), time_filter()),
        3 => (one_of(&columns), column_value()),
        2 => (one_of(&numeric), number()),
        1 => (
            Just("visibility".to_string()),
            prop_oneof![
                4 => one_of(&["public", "private", "shared", "community", "all"]),
                1 => ".{0,6}",
            ]
        ),
        1 => (
            Just("member_status".to_string()),
            prop_oneof![
                4 => one_of(&["pending", "accepted", "rejected", "all"]),
                1 => ".{0,6}",
            ]
        ),
        1 => (
            one_of(&["os_hidden", "protected"]),
            prop_oneof![4 => one_of(&["true", "false", "True", "FALSE"]), 1 => ".{0,5}"]
        ),
        1 => ".{0,8}".prop_map(|v| pair("tag", v)),
        1 => (prop_oneof![9 => ".{0,10}", 1 => Just("changes-since".to_string())], ".{0,10}"),
    ]
}

/// Custom property names, which no documented key starts with.
fn property_name() -> impl Strategy<Value = String> {
    "x_.{0,10}"
}

fn parse(params: &[(String, String)]) -> Result<ListQuery, DomainError> {
    ListQuery::parse(params)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_parameters_parse_to_a_well_formed_query_or_are_invalid(
        params in vec(param(), 0..8),
    ) {
        match parse(&params) {
            Err(e) => prop_assert!(matches!(e, DomainError::Invalid(_)), "{:?}", e),
            Ok(query) => {
                prop_assert!(query.limit <= MAX_LIMIT);
                // The id tie-breaker is what makes marker pagination total.
                for column in [Column::CreatedAt, Column::Id] {
                    prop_assert!(query.sort.iter().any(|(c, _)| *c == column), "{:?}", query.sort);
                }
                prop_assert!(
                    query.sort.iter().all(|(c, _)| SORT_KEYS.contains(c)),
                    "{:?}", query.sort
                );
                prop_assert!(query.filters.len() <= params.len());
            }
        }
    }

    #[test]
    fn a_limit_is_refused_below_zero_and_capped_above_the_maximum(n in any::<i64>()) {
        let parsed = parse(&[pair("limit", n.to_string())]);
        if n < 0 {
            prop_assert!(matches!(parsed, Err(DomainError::Invalid(_))), "{:?}", parsed);
        } else {
            let expected = u32::try_from(n.min(i64::from(MAX_LIMIT))).ok();
            prop_assert_eq!(parsed.map(|q| q.limit).ok(), expected);
        }
    }

    #[test]
    fn an_in_list_yields_its_values(values in vec("[a-z ,]{0,6}", 1..5)) {
        // A value holding a comma is quoted, as clients must.
        let list = values
            .iter()
            .map(|v| if v.contains(',') { format!("\"{v}\"") } else { v.clone() })
            .collect::<Vec<_>>()
            .join(",");
        let parsed = parse(&[pair("name", format!("in:{list}"))]).map(|q| q.filters);
        prop_assert_eq!(parsed, Ok(vec![Filter::In(Column::Name, values)]));
    }

    #[test]
    fn a_time_comparison_keeps_its_operator_and_instant(
        column in prop_oneof![Just(Column::CreatedAt), Just(Column::UpdatedAt)],
        op in proptest::sample::select(vec![
            ("eq", Compare::Eq), ("neq", Compare::Neq), ("gt", Compare::Gt),
            ("gte", Compare::Gte), ("lt", Compare::Lt), ("lte", Compare::Lte),
        ]),
        seconds in 0..4_102_444_800i64,
    ) {
        // Filters are given, and compared, in the whole seconds Glance shows.
        let at = seconds * time::SECOND;
        let value = format!("{}:{}", op.0, time::format(at));
        let parsed = parse(&[pair(column.name(), value)]).map(|q| q.filters);
        prop_assert_eq!(parsed, Ok(vec![Filter::Time(column, op.1, at)]));
    }

    #[test]
    fn other_keys_filter_on_custom_properties_verbatim(
        params in vec((property_name(), ".{0,10}"), 0..5),
    ) {
        let expected: Vec<Filter> = params
            .iter()
            .map(|(k, v)| Filter::Property(k.clone(), v.clone()))
            .collect();
        prop_assert_eq!(parse(&params).map(|q| q.filters), Ok(expected));
    }
}
