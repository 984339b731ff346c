//! What `GET /v2/images` asks for, parsed and checked from its query parameters: filters,
//! visibility and membership, sort order, page size and marker.

use super::DomainError;
use super::time::{self, Timestamp};

pub const DEFAULT_LIMIT: u32 = 25;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    Name,
    Status,
    ContainerFormat,
    DiskFormat,
    Owner,
    Checksum,
    OsHashValue,
    Size,
    VirtualSize,
    MinRam,
    MinDisk,
    CreatedAt,
    UpdatedAt,
}

impl Column {
    const ALL: [Column; 14] = [
        Column::Id,
        Column::Name,
        Column::Status,
        Column::ContainerFormat,
        Column::DiskFormat,
        Column::Owner,
        Column::Checksum,
        Column::OsHashValue,
        Column::Size,
        Column::VirtualSize,
        Column::MinRam,
        Column::MinDisk,
        Column::CreatedAt,
        Column::UpdatedAt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Id => "id",
            Column::Name => "name",
            Column::Status => "status",
            Column::ContainerFormat => "container_format",
            Column::DiskFormat => "disk_format",
            Column::Owner => "owner",
            Column::Checksum => "checksum",
            Column::OsHashValue => "os_hash_value",
            Column::Size => "size",
            Column::VirtualSize => "virtual_size",
            Column::MinRam => "min_ram",
            Column::MinDisk => "min_disk",
            Column::CreatedAt => "created_at",
            Column::UpdatedAt => "updated_at",
        }
    }

    fn parse(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Column::Size | Column::VirtualSize | Column::MinRam | Column::MinDisk
        )
    }

    pub fn is_time(self) -> bool {
        matches!(self, Column::CreatedAt | Column::UpdatedAt)
    }
}

/// Keys `sort_key` and `sort` accept.
const SORT_KEYS: [Column; 8] = [
    Column::Name,
    Column::Status,
    Column::ContainerFormat,
    Column::DiskFormat,
    Column::Size,
    Column::Id,
    Column::CreatedAt,
    Column::UpdatedAt,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// The column equals one of the values (`name=x` or `name=in:x,y`).
    In(Column, Vec<String>),
    /// A numeric column equals the value.
    NumberEq(Column, i64),
    /// A timestamp comparison with the whole second named (times are shown in seconds).
    Time(Column, Compare, Timestamp),
    /// `<column>_min` / `<column>_max`, inclusive.
    AtLeast(Column, i64),
    AtMost(Column, i64),
    Protected(bool),
    /// An exact match on a custom property.
    Property(String, String),
    /// The image has this tag.
    Tag(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisibilityFilter {
    All,
    Only(super::image::Visibility),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatusFilter {
    Pending,
    Accepted,
    Rejected,
    All,
}

impl MemberStatusFilter {
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            MemberStatusFilter::Pending => Some("pending"),
            MemberStatusFilter::Accepted => Some("accepted"),
            MemberStatusFilter::Rejected => Some("rejected"),
            MemberStatusFilter::All => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub limit: u32,
    pub marker: Option<String>,
    /// Always ends with `created_at` and `id`, so the order is total.
    pub sort: Vec<(Column, Direction)>,
    pub filters: Vec<Filter>,
    pub visibility: Option<VisibilityFilter>,
    pub member_status: MemberStatusFilter,
    /// `false`: hidden images are excluded; `true`: only hidden images.
    pub os_hidden: bool,
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

fn direction(text: &str) -> Result<Direction, DomainError> {
    match text {
        "asc" => Ok(Direction::Asc),
        "desc" => Ok(Direction::Desc),
        other => Err(invalid(format!("Invalid sort direction: {other}"))),
    }
}

fn sort_key(text: &str) -> Result<Column, DomainError> {
    Column::parse(text)
        .filter(|c| SORT_KEYS.contains(c))
        .ok_or_else(|| {
            invalid(format!(
                "Invalid sort key: {text}. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at."
            ))
        })
}

/// Splits `in:` values: commas separate, double quotes protect commas.
fn split_in(text: &str) -> Result<Vec<String>, DomainError> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                if !quoted && !current.is_empty() {
                    return Err(invalid(
                        "Invalid filter value: quotes must enclose a whole value.",
                    ));
                }
                quoted = !quoted;
                was_quoted = true;
            }
            ',' if !quoted => {
                values.push(std::mem::take(&mut current));
                was_quoted = false;
            }
            other => {
                if was_quoted && !quoted {
                    return Err(invalid(
                        "Invalid filter value: quotes must enclose a whole value.",
                    ));
                }
                current.push(other);
            }
        }
    }
    if quoted {
        return Err(invalid("Invalid filter value: a quote is not closed."));
    }
    values.push(current);
    Ok(values)
}

fn compare(op: &str) -> Option<Compare> {
    Some(match op {
        "eq" => Compare::Eq,
        "neq" => Compare::Neq,
        "gt" => Compare::Gt,
        "gte" => Compare::Gte,
        "lt" => Compare::Lt,
        "lte" => Compare::Lte,
        _ => return None,
    })
}

impl ListQuery {
    /// Parses the query parameters of a list request, in request order.
    pub fn parse(params: &[(String, String)]) -> Result<ListQuery, DomainError> {
        let mut query = ListQuery {
            limit: DEFAULT_LIMIT,
            marker: None,
            sort: Vec::new(),
            filters: Vec::new(),
            visibility: None,
            member_status: MemberStatusFilter::Accepted,
            os_hidden: false,
        };
        let mut sort_keys = Vec::new();
        let mut sort_dirs = Vec::new();
        let mut sort_new: Option<&str> = None;
        for (key, value) in params {
            let value = value.as_str();
            match key.as_str() {
                "limit" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| invalid("limit param must be an integer"))?;
                    if n < 0 {
                        return Err(invalid("limit param must be positive"));
                    }
                    query.limit = u32::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
                }
                "marker" => query.marker = Some(value.to_string()),
                "sort_key" => sort_keys.push(sort_key(value)?),
                "sort_dir" => sort_dirs.push(direction(value)?),
                "sort" => sort_new = Some(value),
                "member_status" => {
                    query.member_status = match value {
                        "pending" => MemberStatusFilter::Pending,
                        "accepted" => MemberStatusFilter::Accepted,
                        "rejected" => MemberStatusFilter::Rejected,
                        "all" => MemberStatusFilter::All,
                        other => return Err(invalid(format!("Invalid status: {other}"))),
                    }
                }
                "visibility" => {
                    query.visibility = Some(match value {
                        "all" => VisibilityFilter::All,
                        other => VisibilityFilter::Only(
                            super::image::Visibility::parse(other).ok_or_else(|| {
                                invalid(format!("Invalid visibility value: {other}"))
                            })?,
                        ),
                    })
                }
                "os_hidden" => {
                    query.os_hidden = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid(format!("Invalid value for os_hidden: {value}"))),
                    }
                }
                "protected" => query.filters.push(Filter::Protected(match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(invalid(format!(
                            "Invalid value '{other}' for 'protected' filter. Valid values are 'true' or 'false'."
                        )));
                    }
                })),
                "tag" => query.filters.push(Filter::Tag(value.to_string())),
                "changes-since" => {
                    return Err(invalid(
                        "The \"changes-since\" filter is no longer available on v2.",
                    ));
                }
                other => query.filters.push(filter(other, value)?),
            }
        }
        query.sort = match sort_new {
            Some(_) if !sort_keys.is_empty() || !sort_dirs.is_empty() => {
                return Err(invalid("Old and new sorting syntax cannot be combined"));
            }
            Some(spec) => spec
                .split(',')
                .map(|part| match part.split_once(':') {
                    Some((key, dir)) => Ok((sort_key(key.trim())?, direction(dir.trim())?)),
                    None => Ok((sort_key(part.trim())?, Direction::Desc)),
                })
                .collect::<Result<_, _>>()?,
            None => {
                if sort_dirs.len() > 1 && sort_dirs.len() != sort_keys.len() {
                    return Err(invalid(
                        "Number of sort dirs does not match the number of sort keys",
                    ));
                }
                if sort_keys.is_empty() {
                    sort_keys.push(Column::CreatedAt);
                }
                let single = sort_dirs.first().copied().unwrap_or(Direction::Desc);
                sort_keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let dir = if sort_dirs.len() > 1 {
                            sort_dirs[i]
                        } else {
                            single
                        };
                        (*k, dir)
                    })
                    .collect()
            }
        };
        let tie = if sort_dirs.len() == 1 {
            sort_dirs[0]
        } else {
            Direction::Desc
        };
        for column in [Column::CreatedAt, Column::Id] {
            if !query.sort.iter().any(|(c, _)| *c == column) {
                query.sort.push((column, tie));
            }
        }
        Ok(query)
    }
}

fn filter(key: &str, value: &str) -> Result<Filter, DomainError> {
    if let Some((column, bound)) = key
        .strip_suffix("_min")
        .map(|c| (c, true))
        .or_else(|| key.strip_suffix("_max").map(|c| (c, false)))
    {
        if let Some(column) = Column::parse(column).filter(|c| c.is_numeric()) {
            let n: i64 = value
                .parse()
                .map_err(|_| invalid("Unable to filter on a range with a non-numeric value."))?;
            return Ok(if bound {
                Filter::AtLeast(column, n)
            } else {
                Filter::AtMost(column, n)
            });
        }
    }
    let Some(column) = Column::parse(key) else {
        return Ok(Filter::Property(key.to_string(), value.to_string()));
    };
    if column.is_time() {
        let (op, text) = match value.split_once(':') {
            Some((op, rest)) if compare(op).is_some() => (compare(op), rest),
            Some((op, _)) if !op.contains('-') && !op.contains('T') => {
                return Err(invalid(format!(
                    "Unable to filter by unknown operator '{op}'."
                )));
            }
            _ => (Some(Compare::Eq), value),
        };
        let at = time::parse(text).ok_or_else(|| {
            invalid(format!(
                "Bad \"{}\" query filter format. Use ISO 8601 DateTime notation.",
                column.name()
            ))
        })?;
        return Ok(Filter::Time(column, op.unwrap_or(Compare::Eq), at));
    }
    if column.is_numeric() {
        let n: i64 = value.parse().map_err(|_| {
            invalid(format!(
                "Unable to filter on {key} with a non-numeric value."
            ))
        })?;
        return Ok(Filter::NumberEq(column, n));
    }
    let values = match value.split_once(':') {
        Some(("in", list)) => split_in(list)?,
        Some((op, _))
            if matches!(
                column,
                Column::Name
                    | Column::Id
                    | Column::Status
                    | Column::ContainerFormat
                    | Column::DiskFormat
            ) && compare(op).is_some() =>
        {
            return Err(invalid(format!(
                "Unable to filter by unknown operator '{op}'."
            )));
        }
        _ => vec![value.to_string()],
    };
    Ok(Filter::In(column, values))
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ListQuery, DomainError> {
        let params: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ListQuery::parse(&params)
    }

    #[test]
    fn defaults() {
        let q = parse(&[]).unwrap();
        assert_eq!(q.limit, 25);
        assert_eq!(
            q.sort,
            vec![
                (Column::CreatedAt, Direction::Desc),
                (Column::Id, Direction::Desc)
            ]
        );
        assert!(!q.os_hidden);
        assert_eq!(q.member_status, MemberStatusFilter::Accepted);
    }

    #[test]
    fn limits() {
        assert_eq!(parse(&[("limit", "5000")]).unwrap().limit, 1000);
        assert_eq!(parse(&[("limit", "0")]).unwrap().limit, 0);
        assert!(parse(&[("limit", "-1")]).is_err());
        assert!(parse(&[("limit", "x")]).is_err());
    }

    #[test]
    fn sorting() {
        let q = parse(&[("sort_key", "name"), ("sort_dir", "asc")]).unwrap();
        assert_eq!(
            q.sort,
            vec![
                (Column::Name, Direction::Asc),
                (Column::CreatedAt, Direction::Asc),
                (Column::Id, Direction::Asc)
            ]
        );
        let q = parse(&[("sort", "name:asc,size")]).unwrap();
        assert_eq!(q.sort[0], (Column::Name, Direction::Asc));
        assert_eq!(q.sort[1], (Column::Size, Direction::Desc));
        assert!(parse(&[("sort", "name"), ("sort_key", "size")]).is_err());
        assert!(parse(&[("sort_key", "owner")]).is_err());
        assert!(parse(&[("sort_dir", "up")]).is_err());
        assert!(
            parse(&[
                ("sort_key", "name"),
                ("sort_key", "size"),
                ("sort_key", "id"),
                ("sort_dir", "asc"),
                ("sort_dir", "desc")
            ])
            .is_err()
        );
    }

    #[test]
    fn filters() {
        let q = parse(&[
            ("name", "in:a,\"b,c\""),
            ("size_min", "10"),
            ("created_at", "gte:2020-01-01T00:00:00Z"),
            ("updated_at", "2020-01-01T00:00:00Z"),
            ("os_distro", "ubuntu"),
            ("tag", "x"),
            ("protected", "true"),
        ])
        .unwrap();
        assert_eq!(
            q.filters[0],
            Filter::In(Column::Name, vec!["a".into(), "b,c".into()])
        );
        assert_eq!(q.filters[1], Filter::AtLeast(Column::Size, 10));
        assert!(matches!(
            q.filters[2],
            Filter::Time(Column::CreatedAt, Compare::Gte, _)
        ));
        assert!(matches!(
            q.filters[3],
            Filter::Time(Column::UpdatedAt, Compare::Eq, _)
        ));
        assert_eq!(
            q.filters[4],
            Filter::Property("os_distro".into(), "ubuntu".into())
        );
        assert!(parse(&[("protected", "True")]).is_err());
        assert!(parse(&[("os_hidden", "TRUE")]).unwrap().os_hidden);
        assert!(parse(&[("created_at", "soon")]).is_err());
        assert!(parse(&[("created_at", "foo:2020-01-01T00:00:00Z")]).is_err());
        assert!(parse(&[("size_max", "big")]).is_err());
        assert!(parse(&[("visibility", "secret")]).is_err());
        assert!(parse(&[("member_status", "maybe")]).is_err());
        assert!(parse(&[("changes-since", "x")]).is_err());
        assert!(parse(&[("name", "in:\"a")]).is_err());
    }
}
