//! The statement behind an image list: one `SELECT` that applies who may see what
//! (Glance's visibility rules), the list's filters, keyset pagination after a marker
//! (`push_after`) and the sort, and returns each image as JSON (on SQLite, the whole page
//! as one JSON array in one row). It builds SQL text with `?` placeholders and the values
//! to bind (`Statement`), the same for every engine but for the JSON functions;
//! `Database::list_images` runs it and turns the rows into images.

use super::Engine;
use super::rows::image_json;
use crate::domain::caller::Caller;
use crate::domain::image::Image;
use crate::domain::query::{Column, Compare, Direction, Filter, ListQuery, VisibilityFilter};
use crate::domain::time::{SECOND, Timestamp};

/// A value bound to a `?` of a `Statement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param {
    Int(i64),
    Text(String),
    /// NULL, which equals nothing: a caller with no project owns nothing.
    Null,
}

/// SQL text with `?` placeholders and the values for them, in order.
#[derive(Debug, Default)]
pub(super) struct Statement {
    pub text: String,
    pub params: Vec<Param>,
}

impl Statement {
    pub(super) fn new(text: String) -> Statement {
        Statement {
            text,
            params: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, text: impl AsRef<str>) -> &mut Statement {
        self.text.push_str(text.as_ref());
        self
    }

    pub(super) fn push_bind(&mut self, value: impl Into<Param>) -> &mut Statement {
        self.text.push('?');
        self.params.push(value.into());
        self
    }
}

impl From<i64> for Param {
    fn from(n: i64) -> Param {
        Param::Int(n)
    }
}

impl From<bool> for Param {
    fn from(b: bool) -> Param {
        Param::Int(i64::from(b))
    }
}

impl From<String> for Param {
    fn from(text: String) -> Param {
        Param::Text(text)
    }
}

impl From<Option<String>> for Param {
    fn from(text: Option<String>) -> Param {
        text.map_or(Param::Null, Param::Text)
    }
}

impl From<&str> for Param {
    fn from(text: &str) -> Param {
        Param::Text(text.to_string())
    }
}

/// The statement for one page of the images `caller` may list, in `query`'s order, after
/// `marker`: a row per image, each as `image_json` builds it, except on SQLite, where sqlx
/// hands every row across threads, so the page travels as one JSON array in one row.
pub(super) fn page_query(
    engine: Engine,
    query: &ListQuery,
    caller: &Caller,
    marker: Option<&Image>,
) -> Statement {
    let order = query
        .sort
        .iter()
        .map(|(column, direction)| {
            let dir = match direction {
                Direction::Asc => "ASC",
                Direction::Desc => "DESC",
            };
            format!("{} {dir}", sort_expr(*column))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let image = image_json(engine);
    let select = match engine {
        Engine::Sqlite => format!("SELECT json_group_array({image} ORDER BY {order})"),
        Engine::Postgres | Engine::MySql => format!("SELECT {image}"),
    };
    // MariaDB's optimizer walks `images_by_created` from one end for the default order
    // and stops only after the page when told to use it: otherwise a page deep in the
    // catalogue reads every row before it.
    let hint = match (engine, query.sort.first()) {
        (Engine::MySql, Some((Column::CreatedAt, _))) => " FORCE INDEX (images_by_created)",
        _ => "",
    };
    let mut sql = Statement::new(format!(
        "{select} FROM (SELECT i.* FROM images i{hint} \
         WHERE i.deleted = 0 AND i.status != 'killed' AND i.os_hidden = "
    ));
    sql.push_bind(query.os_hidden);
    push_visibility(&mut sql, query, caller);
    for filter in &query.filters {
        push_filter(&mut sql, filter);
    }
    if let Some(marker) = marker {
        push_after(&mut sql, engine, &query.sort, marker);
    }
    sql.push(format!(" ORDER BY {order} LIMIT "));
    sql.push_bind(i64::from(query.limit));
    sql.push(") i");
    if engine != Engine::Sqlite {
        sql.push(format!(" ORDER BY {order}"));
    }
    sql
}

/// Who sees what in a list (Glance's rules, spec §3.4.4).
fn push_visibility(sql: &mut Statement, query: &ListQuery, caller: &Caller) {
    let project = caller.project.clone();
    if !caller.is_admin {
        sql.push(" AND (i.visibility IN ('public', 'community') OR i.owner = ");
        sql.push_bind(project.clone());
        sql.push(" OR (i.visibility = 'shared' AND EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = i.id AND m.member_id = ");
        sql.push_bind(project.clone());
        if let Some(status) = query.member_status.as_str() {
            sql.push(" AND m.status = ");
            sql.push_bind(status);
        }
        sql.push(")))");
    }
    match query.visibility {
        None => {
            sql.push(" AND (i.visibility != 'community' OR i.owner = ");
            sql.push_bind(project);
            sql.push(")");
        }
        Some(VisibilityFilter::All) => {}
        Some(VisibilityFilter::Only(visibility)) => {
            sql.push(" AND i.visibility = ");
            sql.push_bind(visibility.as_str());
        }
    }
}

fn push_filter(sql: &mut Statement, filter: &Filter) {
    match filter {
        Filter::In(column, values) => {
            sql.push(format!(" AND i.{} IN (", column.name()));
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push_bind(value.clone());
            }
            sql.push(")");
        }
        Filter::NumberEq(column, n) => {
            sql.push(format!(" AND i.{} = ", column.name()));
            sql.push_bind(*n);
        }
        Filter::Time(column, compare, at) => {
            // Times are kept to the microsecond but shown, and named by filters, in whole
            // seconds; a filter compares the second a time falls in, as Glance's database
            // keeps whole seconds: `gt:` the created_at an image shows does not list it.
            let start = at.div_euclid(SECOND) * SECOND;
            let end = start + SECOND;
            let name = column.name();
            let bound = |sql: &mut Statement, op: &str, at: Timestamp| {
                sql.push(format!("i.{name} {op} "));
                sql.push_bind(at);
            };
            sql.push(" AND (");
            match compare {
                Compare::Eq => {
                    bound(sql, ">=", start);
                    sql.push(" AND ");
                    bound(sql, "<", end);
                }
                Compare::Neq => {
                    bound(sql, "<", start);
                    sql.push(" OR ");
                    bound(sql, ">=", end);
                }
                Compare::Gt => bound(sql, ">=", end),
                Compare::Gte => bound(sql, ">=", start),
                Compare::Lt => bound(sql, "<", start),
                Compare::Lte => bound(sql, "<", end),
            }
            sql.push(")");
        }
        Filter::AtLeast(column, n) => {
            sql.push(format!(" AND i.{} >= ", column.name()));
            sql.push_bind(*n);
        }
        Filter::AtMost(column, n) => {
            sql.push(format!(" AND i.{} <= ", column.name()));
            sql.push_bind(*n);
        }
        Filter::Protected(value) => {
            sql.push(" AND i.protected = ");
            sql.push_bind(*value);
        }
        Filter::Property(name, value) => {
            sql.push(" AND EXISTS (SELECT 1 FROM image_properties p WHERE p.image_id = i.id AND p.name = ");
            sql.push_bind(name.clone());
            sql.push(" AND p.value = ");
            sql.push_bind(value.clone());
            sql.push(")");
        }
        Filter::Tag(tag) => {
            sql.push(
                " AND EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = i.id AND t.value = ",
            );
            sql.push_bind(tag.clone());
            sql.push(")");
        }
    }
}

/// The sort expression of a column: NULLs sort (and compare, for the marker) as '' or 0.
fn sort_expr(column: Column) -> String {
    match column {
        Column::Id | Column::CreatedAt | Column::UpdatedAt | Column::Status => {
            format!("i.{}", column.name())
        }
        c if c.is_numeric() => format!("COALESCE(i.{}, 0)", c.name()),
        c => format!("COALESCE(i.{}, '')", c.name()),
    }
}

/// The sort key value of `image` for `column`, as `sort_expr` computes it.
enum Key {
    Text(String),
    Number(i64),
}

fn key_of(image: &Image, column: Column) -> Key {
    let text = |v: &Option<String>| Key::Text(v.clone().unwrap_or_default());
    match column {
        Column::Id => Key::Text(image.id.clone()),
        Column::Name => text(&image.name),
        Column::Status => Key::Text(image.status.as_str().to_string()),
        Column::ContainerFormat => text(&image.container_format),
        Column::DiskFormat => text(&image.disk_format),
        Column::Owner => text(&image.owner),
        Column::Checksum => text(&image.checksum),
        Column::OsHashValue => text(&image.os_hash_value),
        Column::Size => Key::Number(image.size.unwrap_or(0)),
        Column::VirtualSize => Key::Number(image.virtual_size.unwrap_or(0)),
        Column::MinRam => Key::Number(image.min_ram),
        Column::MinDisk => Key::Number(image.min_disk),
        Column::CreatedAt => Key::Number(image.created_at),
        Column::UpdatedAt => Key::Number(image.updated_at),
    }
}

fn push_key(sql: &mut Statement, key: Key) {
    match key {
        Key::Text(text) => sql.push_bind(text),
        Key::Number(n) => sql.push_bind(n),
    };
}

/// Keyset pagination: rows strictly after `marker` in the sort order. With one direction
/// for every key this is a row-value comparison, which SQLite and PostgreSQL answer from an
/// index; MariaDB does not use one for it, so there (and with mixed directions) it is
/// written out key by key.
fn push_after(sql: &mut Statement, engine: Engine, sort: &[(Column, Direction)], marker: &Image) {
    let uniform = sort.windows(2).all(|w| w[0].1 == w[1].1);
    if uniform && engine != Engine::MySql {
        let op = match sort[0].1 {
            Direction::Asc => ">",
            Direction::Desc => "<",
        };
        sql.push(" AND (");
        sql.push(
            sort.iter()
                .map(|(c, _)| sort_expr(*c))
                .collect::<Vec<_>>()
                .join(", "),
        );
        sql.push(format!(") {op} ("));
        for (i, (column, _)) in sort.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            push_key(sql, key_of(marker, *column));
        }
        sql.push(")");
        return;
    }
    sql.push(" AND (");
    for (i, (column, direction)) in sort.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for (equal, _) in &sort[..i] {
            sql.push(format!("{} = ", sort_expr(*equal)));
            push_key(sql, key_of(marker, *equal));
            sql.push(" AND ");
        }
        let op = match direction {
            Direction::Asc => ">",
            Direction::Desc => "<",
        };
        sql.push(format!("{} {op} ", sort_expr(*column)));
        push_key(sql, key_of(marker, *column));
        sql.push(")");
    }
    sql.push(")");
}
