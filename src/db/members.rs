//! Image members in the metadata repository: who an image is shared with, and each
//! member's status.

use super::engine::{read, write_tx};
use super::rows::{MemberRow, Text};
use super::{Database, DbError, duplicate_or};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::time::Timestamp;

impl Database {
    pub async fn member(&self, image_id: &str, member: &str) -> Result<Option<Member>, DbError> {
        let row: Option<MemberRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(
                "SELECT image_id, member_id, status, created_at, updated_at FROM image_members \
                 WHERE image_id = ? AND member_id = ?",
            ))
            .bind(image_id)
            .bind(member)
            .fetch_optional(pool)
            .await?
        })?;
        row.map(MemberRow::into_member).transpose()
    }

    pub async fn members(&self, image_id: &str) -> Result<Vec<Member>, DbError> {
        let rows: Vec<MemberRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(
                "SELECT image_id, member_id, status, created_at, updated_at FROM image_members \
                 WHERE image_id = ? ORDER BY created_at, member_id",
            ))
            .bind(image_id)
            .fetch_all(pool)
            .await?
        })?;
        rows.into_iter().map(MemberRow::into_member).collect()
    }

    /// Adds a member unless it exists (`Duplicate`) or the image has `quota` members.
    /// Returns `Ok(false)` when the quota is reached. The image's row is locked first, so
    /// two nodes adding members at once cannot both pass the quota.
    pub async fn add_member(&self, member: &Member, quota: usize) -> Result<bool, DbError> {
        let lock = self.row_lock();
        write_tx!(self, |tx, sql| {
            let _: Option<Text> =
                sqlx::query_scalar(&sql(&format!("SELECT id FROM images WHERE id = ?{lock}")))
                    .bind(&member.image_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let count: i64 = sqlx::query_scalar(&sql(
                "SELECT COUNT(*) FROM image_members WHERE image_id = ?",
            ))
            .bind(&member.image_id)
            .fetch_one(&mut *tx)
            .await?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= quota {
                return Ok(false);
            }
            sqlx::query(&sql(
                "INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?)",
            ))
            .bind(&member.image_id)
            .bind(&member.member_id)
            .bind(member.status.as_str())
            .bind(member.created_at)
            .bind(member.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or)?;
            true
        })
    }

    pub async fn set_member_status(
        &self,
        image_id: &str,
        member: &str,
        status: MemberStatus,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let updated = sqlx::query(&sql("UPDATE image_members SET status = ?, updated_at = ? \
                 WHERE image_id = ? AND member_id = ?"))
            .bind(status.as_str())
            .bind(now)
            .bind(image_id)
            .bind(member)
            .execute(&mut *tx)
            .await?;
            updated.rows_affected() > 0
        })
    }

    pub async fn remove_member(&self, image_id: &str, member: &str) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let deleted = sqlx::query(&sql(
                "DELETE FROM image_members WHERE image_id = ? AND member_id = ?",
            ))
            .bind(image_id)
            .bind(member)
            .execute(&mut *tx)
            .await?;
            deleted.rows_affected() > 0
        })
    }
}
