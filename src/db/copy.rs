//! `glint db copy`: a whole catalogue from one database to another, across engines (the
//! way from the embedded SQLite to a shared PostgreSQL or MariaDB, and back). Every table
//! is read in primary-key batches and written in one transaction on the target, which is
//! committed only when each table's row count and checksum read back from the target equal
//! the source's. It knows the tables' columns; it knows nothing of what they mean.

use sha2::{Digest, Sha256};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::bind_params;
use super::engine::{Pools, read};
use super::list::{Param, Statement};
use super::rows::Text;
use super::{Database, DbError};

/// How a column is read and written.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
}

struct Table {
    name: &'static str,
    /// The primary key's columns first, in key order.
    key: usize,
    columns: &'static [(&'static str, Kind)],
}

use Kind::{Int, Text as Txt};

/// Every table of the catalogue, parents before children (the target checks foreign keys).
const TABLES: &[Table] = &[
    Table {
        name: "images",
        key: 1,
        columns: &[
            ("id", Txt),
            ("name", Txt),
            ("status", Txt),
            ("visibility", Txt),
            ("protected", Int),
            ("os_hidden", Int),
            ("checksum", Txt),
            ("os_hash_algo", Txt),
            ("os_hash_value", Txt),
            ("owner", Txt),
            ("size", Int),
            ("virtual_size", Int),
            ("min_ram", Int),
            ("min_disk", Int),
            ("disk_format", Txt),
            ("container_format", Txt),
            ("created_at", Int),
            ("updated_at", Int),
            ("deleted", Int),
            ("deleted_at", Int),
            ("claimed_by", Txt),
            ("claim_expires_at", Int),
        ],
    },
    Table {
        name: "image_properties",
        key: 2,
        columns: &[("image_id", Txt), ("name", Txt), ("value", Txt)],
    },
    Table {
        name: "image_tags",
        key: 2,
        columns: &[("image_id", Txt), ("value", Txt)],
    },
    Table {
        name: "image_members",
        key: 2,
        columns: &[
            ("image_id", Txt),
            ("member_id", Txt),
            ("status", Txt),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "image_locations",
        key: 2,
        columns: &[
            ("image_id", Txt),
            ("store", Txt),
            ("url", Txt),
            ("position", Int),
        ],
    },
    Table {
        name: "tasks",
        key: 1,
        columns: &[
            ("id", Txt),
            ("type", Txt),
            ("status", Txt),
            ("owner", Txt),
            ("image_id", Txt),
            ("request_id", Txt),
            ("user_id", Txt),
            ("input", Txt),
            ("result", Txt),
            ("message", Txt),
            ("created_at", Int),
            ("updated_at", Int),
            ("expires_at", Int),
            ("lease_owner", Txt),
            ("lease_expires_at", Int),
        ],
    },
    Table {
        name: "metadef_namespaces",
        key: 1,
        columns: &[
            ("id", Txt),
            ("namespace", Txt),
            ("display_name", Txt),
            ("description", Txt),
            ("visibility", Txt),
            ("protected", Int),
            ("owner", Txt),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "metadef_resource_types",
        key: 1,
        columns: &[
            ("name", Txt),
            ("protected", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "metadef_namespace_resource_types",
        key: 2,
        columns: &[
            ("namespace_id", Txt),
            ("resource_type", Txt),
            ("prefix", Txt),
            ("properties_target", Txt),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "metadef_properties",
        key: 2,
        columns: METADEF_DEFINITION,
    },
    Table {
        name: "metadef_objects",
        key: 2,
        columns: METADEF_DEFINITION,
    },
    Table {
        name: "metadef_tags",
        key: 2,
        columns: &[
            ("namespace_id", Txt),
            ("name", Txt),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
];

/// The columns of a property or object definition.
const METADEF_DEFINITION: &[(&str, Kind)] = &[
    ("namespace_id", Txt),
    ("name", Txt),
    ("definition", Txt),
    ("created_at", Int),
    ("updated_at", Int),
];

/// Rows read or written per statement.
const BATCH: usize = 500;

/// One table as copied: rows, and a checksum that does not depend on row order (the
/// engines sort text alike, but need not return it alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: &'static str,
    pub rows: u64,
    pub checksum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "the target holds {images} images and {tasks} tasks: copy into an empty database, \
         or pass --replace-target to replace its catalogue"
    )]
    TargetNotEmpty { images: i64, tasks: i64 },
    #[error(
        "{table}: the target has {target_rows} rows (sha256 {target_sum}), the source \
         {source_rows} (sha256 {source_sum}); nothing was committed"
    )]
    Mismatch {
        table: &'static str,
        source_rows: u64,
        source_sum: String,
        target_rows: u64,
        target_sum: String,
    },
}

impl From<sqlx::Error> for CopyError {
    fn from(error: sqlx::Error) -> Self {
        CopyError::Db(error.into())
    }
}

/// Copies every table of `source` into `target` (both already migrated). With `replace`,
/// the target's catalogue is deleted first, in the same transaction. Returns each table as
/// copied and verified.
pub async fn copy(
    source: &Database,
    target: &Database,
    replace: bool,
) -> Result<Vec<TableCopy>, CopyError> {
    if !replace {
        let count = |table| target.count(table);
        let (images, tasks) = (count("images").await?, count("tasks").await?);
        if images > 0 || tasks > 0 {
            return Err(CopyError::TargetNotEmpty { images, tasks });
        }
    }
    let mut copied = Vec::new();
    macro_rules! copy_into {
        ($pool:expr, $sql:expr) => {{
            let mut tx = $pool.begin().await?;
            let sql = $sql;
            if replace {
                for table in TABLES.iter().rev() {
                    sqlx::query(&format!("DELETE FROM {}", table.name))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for table in TABLES {
                let mut hashes = Vec::new();
                let mut after: Option<Vec<Param>> = None;
                loop {
                    let rows = source.batch(table, after.as_deref()).await?;
                    let Some(last) = rows.last() else { break };
                    after = Some(last[..table.key].to_vec());
                    hashes.extend(rows.iter().map(|row| row_hash(row)));
                    for chunk in rows.chunks(BATCH) {
                        let statement = insert_statement(table, chunk.len());
                        let text = sql(&statement);
                        let mut query = sqlx::query(&text);
                        let kinds = table.columns.iter().map(|(_, kind)| kind).cycle();
                        for (value, kind) in chunk.iter().flatten().zip(kinds) {
                            // PostgreSQL types a NULL by its parameter: as the column's.
                            query = match (value, kind) {
                                (Param::Int(n), _) => query.bind(*n),
                                (Param::Text(t), _) => query.bind(Some(t.as_str())),
                                (Param::Null, Kind::Int) => query.bind(None::<i64>),
                                (Param::Null, Kind::Text) => query.bind(None::<&str>),
                            };
                        }
                        query.execute(&mut *tx).await?;
                    }
                }
                let source_sum = TableCopy {
                    table: table.name,
                    rows: hashes.len() as u64,
                    checksum: checksum(hashes),
                };
                let statement = select_all(table);
                let text = sql(&statement);
                let written = sqlx::query(&text).fetch_all(&mut *tx).await?;
                let written = written
                    .iter()
                    .map(|row| values(row, table).map(|v| row_hash(&v)))
                    .collect::<Result<Vec<_>, _>>()?;
                let target_sum = TableCopy {
                    table: table.name,
                    rows: written.len() as u64,
                    checksum: checksum(written),
                };
                if target_sum != source_sum {
                    return Err(CopyError::Mismatch {
                        table: table.name,
                        source_rows: source_sum.rows,
                        source_sum: source_sum.checksum,
                        target_rows: target_sum.rows,
                        target_sum: target_sum.checksum,
                    });
                }
                copied.push(source_sum);
            }
            tx.commit().await?;
        }};
    }
    match &target.pools {
        Pools::Sqlite { write, .. } => copy_into!(write, super::engine::as_is),
        Pools::Postgres(pool) => copy_into!(pool, super::engine::numbered),
        Pools::MySql(pool) => copy_into!(pool, super::engine::mysql),
    }
    Ok(copied)
}

impl Database {
    async fn count(&self, table: &str) -> Result<i64, DbError> {
        read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(&format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(pool)
                .await?
        })
    }

    /// Up to `BATCH` rows of `table` after key `after`, in key order, as values.
    async fn batch(
        &self,
        table: &Table,
        after: Option<&[Param]>,
    ) -> Result<Vec<Vec<Param>>, DbError> {
        let columns = column_list(table);
        let key = column_names(table)[..table.key].join(", ");
        let mut statement = Statement::new(format!("SELECT {columns} FROM {}", table.name));
        if let Some(after) = after {
            statement.push(format!(" WHERE ({key}) > ("));
            for (i, value) in after.iter().enumerate() {
                if i > 0 {
                    statement.push(", ");
                }
                statement.push_bind(value.clone());
            }
            statement.push(")");
        }
        statement.push(format!(" ORDER BY {key} LIMIT {BATCH}"));
        let statement = &statement;
        read!(self, |pool, sql| {
            let text = sql(&statement.text);
            let rows = bind_params!(sqlx::query(&text), statement)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| values(row, table))
                .collect::<Result<Vec<_>, _>>()?
        })
    }
}

/// A row's values by the table's column kinds.
fn values<'r, R>(row: &'r R, table: &Table) -> Result<Vec<Param>, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    Option<Text>: Decode<'r, R::Database> + Type<R::Database>,
{
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Kind::Int => row
                    .try_get::<Option<i64>, _>(i)?
                    .map_or(Param::Null, Param::Int),
                Kind::Text => row
                    .try_get::<Option<Text>, _>(i)?
                    .map_or(Param::Null, |t| Param::Text(t.0)),
            })
        })
        .collect()
}

fn column_names(table: &Table) -> Vec<&'static str> {
    table.columns.iter().map(|(name, _)| *name).collect()
}

fn column_list(table: &Table) -> String {
    column_names(table).join(", ")
}

fn select_all(table: &Table) -> String {
    format!("SELECT {} FROM {}", column_list(table), table.name)
}

fn insert_statement(table: &Table, rows: usize) -> String {
    let row = format!("({})", vec!["?"; table.columns.len()].join(", "));
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.name,
        column_list(table),
        vec![row; rows].join(", ")
    )
}

/// A row's hash over an encoding in which no two rows look alike (each value tagged and
/// length-prefixed).
fn row_hash(row: &[Param]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for value in row {
        match value {
            Param::Null => hash.update([0]),
            Param::Int(n) => {
                hash.update([1]);
                hash.update(n.to_be_bytes());
            }
            Param::Text(text) => {
                hash.update([2]);
                hash.update((text.len() as u64).to_be_bytes());
                hash.update(text.as_bytes());
            }
        }
    }
    hash.finalize().into()
}

/// The table's checksum: of its rows' hashes, sorted.
fn checksum(mut hashes: Vec<[u8; 32]>) -> String {
    hashes.sort_unstable();
    let mut hash = Sha256::new();
    for row in &hashes {
        hash.update(row);
    }
    hex::encode(hash.finalize())
}
