//! Which node holds what, for several glint nodes on one database: an image's claim by the
//! node whose transfer moved it into `saving` or `uploading`, renewed while that node lives
//! (with its tasks' leases, `renew`), and what other nodes do once it has expired. The task
//! lease queries are `tasks`'.

use super::engine::{read, write_tx};
use super::rows::Text;
use super::{Database, DbError, bind_params, list};
use crate::domain::time::Timestamp;

/// A node holding a claim on an image or a lease on a task, until a time (its lease is
/// renewed while it lives).
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub node: &'a str,
    pub until: Timestamp,
}

impl Database {
    /// Moves the image from `from` to `to` only if it is still in `from`, claimed by
    /// `holder`: of two racing uploads (on any nodes), exactly one gets `true`.
    pub async fn claim_image(
        &self,
        id: &str,
        from: &str,
        to: &str,
        holder: Holder<'_>,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        let outcome = write_tx!(self, |tx, sql| {
            let moved = sqlx::query(&sql(
                "UPDATE images SET status = ?, updated_at = ?, claimed_by = ?, \
                 claim_expires_at = ? WHERE id = ? AND status = ? AND deleted = 0",
            ))
            .bind(to)
            .bind(now)
            .bind(holder.node)
            .bind(holder.until)
            .bind(id)
            .bind(from)
            .execute(&mut *tx)
            .await?;
            moved.rows_affected() == 1
        });
        self.settle(outcome, id, now, || true).await
    }

    /// Images whose upload was cut in `saving` go back to `queued` (their partial data is
    /// gone with the temporary files): those `node` held (a previous process of this node,
    /// at its start) and those whose holder's claim expired (a node that died). `uploading`
    /// is also a completed stage's status: the service tells those apart by their staged
    /// data. The uploads in `keep` (handed over to this process) stay as they are.
    pub async fn requeue_interrupted(
        &self,
        node: Option<&str>,
        keep: &[String],
        now: Timestamp,
    ) -> Result<u64, DbError> {
        let lock = self.row_lock();
        let requeued = write_tx!(self, |tx, sql| {
            let ids: Vec<Text> = sqlx::query_scalar(&sql(&format!(
                "SELECT id FROM images WHERE status = 'saving' AND deleted = 0 \
                 AND (claimed_by = ? OR claim_expires_at < ? \
                      OR (claimed_by IS NULL AND ? IS NOT NULL)){lock}"
            )))
            .bind(node)
            .bind(now)
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
            let ids: Vec<Text> = ids
                .into_iter()
                .filter(|Text(id)| !keep.contains(id))
                .collect();
            for Text(id) in &ids {
                sqlx::query(&sql(
                    "UPDATE images SET status = 'queued', size = NULL, virtual_size = NULL, \
                     checksum = NULL, os_hash_algo = NULL, os_hash_value = NULL, \
                     updated_at = ?, claimed_by = NULL, claim_expires_at = NULL \
                     WHERE id = ? AND status = 'saving'",
                ))
                .bind(now)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                sqlx::query(&sql("DELETE FROM image_locations WHERE image_id = ?"))
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            ids.len()
        })?;
        Ok(requeued as u64)
    }

    /// Stages held by a node whose claim expired (it died with the staged data on its
    /// disk): their images go back to `queued`, as a stage cut part-way does. Returns
    /// their ids.
    pub async fn requeue_abandoned_stages(&self, now: Timestamp) -> Result<Vec<String>, DbError> {
        let ids: Vec<Text> = write_tx!(self, |tx, sql| {
            let ids: Vec<Text> = sqlx::query_scalar(&sql(
                "SELECT id FROM images WHERE status = 'uploading' AND deleted = 0 \
                 AND claim_expires_at < ?",
            ))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for Text(id) in &ids {
                sqlx::query(&sql(
                    "UPDATE images SET status = 'queued', size = NULL, checksum = NULL, \
                     os_hash_algo = NULL, os_hash_value = NULL, updated_at = ?, \
                     claimed_by = NULL, claim_expires_at = NULL \
                     WHERE id = ? AND status = 'uploading' AND claim_expires_at < ?",
                ))
                .bind(now)
                .bind(id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            ids
        })?;
        Ok(ids.into_iter().map(String::from).collect())
    }

    /// Extends `holder.node`'s task leases, its completed stages' claims (the staged data
    /// is on its disk while it lives) and the claims of the uploads in `uploading` (those
    /// its transfers hold now) to `holder.until`. An upload claim not renewed expires.
    pub async fn renew(&self, holder: Holder<'_>, uploading: &[String]) -> Result<(), DbError> {
        let mut images = list::Statement::new(String::new());
        images
            .push("UPDATE images SET claim_expires_at = ")
            .push_bind(holder.until)
            .push(" WHERE claimed_by = ")
            .push_bind(holder.node)
            .push(" AND deleted = 0 AND (status = 'uploading'");
        if !uploading.is_empty() {
            images.push(" OR (status = 'saving' AND id IN (");
            for (i, id) in uploading.iter().enumerate() {
                if i > 0 {
                    images.push(", ");
                }
                images.push_bind(id.as_str());
            }
            images.push("))");
        }
        images.push(")");
        let images = &images;
        write_tx!(self, |tx, sql| {
            let text = sql(&images.text);
            bind_params!(sqlx::query(&text), images)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&sql(
                "UPDATE tasks SET lease_expires_at = ? WHERE lease_owner = ? \
                 AND status IN ('pending', 'processing')",
            ))
            .bind(holder.until)
            .bind(holder.node)
            .execute(&mut *tx)
            .await?;
        })
    }

    /// The live images in `status` that `node` holds (or that no node holds: a database
    /// from before nodes were recorded).
    pub async fn image_ids_held(&self, status: &str, node: &str) -> Result<Vec<String>, DbError> {
        let ids: Vec<Text> = read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT id FROM images WHERE status = ? AND deleted = 0 \
                 AND (claimed_by IS NULL OR claimed_by = ?)",
            ))
            .bind(status)
            .bind(node)
            .fetch_all(pool)
            .await?
        })?;
        Ok(ids.into_iter().map(String::from).collect())
    }

    /// The node holding image `id`'s upload or stage, if one does.
    pub async fn claim_holder(&self, id: &str) -> Result<Option<String>, DbError> {
        let holder: Option<Option<Text>> = read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT claimed_by FROM images WHERE id = ? AND deleted = 0",
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        })?;
        Ok(holder.flatten().map(String::from))
    }
}
