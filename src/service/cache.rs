//! Glance's cache API over this node's `ImageCache` (admin by default, through the
//! `cache_*` policy rules, and 404 when the cache is off), and the prefetcher: images queued
//! by `PUT /v2/cache/{id}` are read through the cache one at a time, by whichever generation
//! is live, from a queue kept on disk, so prefetching goes on across reloads and restarts.

use std::sync::Arc;

use futures_util::StreamExt;

use super::authz::ImageTarget;
use super::data::blocking;
use super::{Catalog, Result, ServiceError};
use crate::cache::{CachedImage, ImageCache};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::Status;

/// What `DELETE /v2/cache` clears (`x-image-cache-clear-target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearTarget {
    Both,
    Cache,
    Queue,
}

impl ClearTarget {
    /// The header's value, as Glance reads it (lower-cased; absent is empty).
    pub fn parse(value: &str) -> Option<ClearTarget> {
        match value.to_ascii_lowercase().as_str() {
            "" => Some(ClearTarget::Both),
            "cache" => Some(ClearTarget::Cache),
            "queue" => Some(ClearTarget::Queue),
            _ => None,
        }
    }
}

/// `GET /v2/cache`.
pub struct CacheState {
    pub cached: Vec<CachedImage>,
    pub queued: Vec<String>,
}

fn not_supported() -> ServiceError {
    DomainError::NotFound("Caching via API is not supported at this site.".into()).into()
}

impl Catalog {
    /// Whether this generation has a cache (the versions document says so).
    pub fn cache_enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The policy `rule`, then the cache (Glance's order: a 403 before a 404).
    fn cache_for(
        &self,
        caller: &Caller,
        rule: &str,
        target: &ImageTarget,
    ) -> Result<Arc<ImageCache>> {
        self.authorize(caller, rule, target)?;
        self.cache.clone().ok_or_else(not_supported)
    }

    pub fn cache_state(&self, caller: &Caller) -> Result<CacheState> {
        let cache = self.cache_for(caller, "cache_list", &ImageTarget::default())?;
        Ok(CacheState {
            cached: cache.entries(),
            queued: cache.queued(),
        })
    }

    /// `PUT /v2/cache/{id}`: queues an active image for prefetching and starts the
    /// prefetcher.
    pub async fn queue_for_cache(&self, caller: &Caller, id: &str) -> Result<()> {
        let (image, target) = self
            .get_seen(caller, id)
            .await
            .map_err(|_| DomainError::NotFound(format!("Image {id} not found.")))?;
        let cache = self.cache_for(caller, "cache_image", &target)?;
        if image.status != Status::Active {
            return Err(DomainError::Invalid(
                "Only images with status active can be targeted for queueing".into(),
            )
            .into());
        }
        let image_id = id.to_string();
        blocking(move || cache.queue(&image_id))
            .await?
            .map_err(queue_error)?;
        self.prefetch();
        Ok(())
    }

    /// `DELETE /v2/cache/{id}`: the image's entry and its place in the queue go.
    pub async fn delete_cache_entry(&self, caller: &Caller, id: &str) -> Result<()> {
        let seen = self.get_seen(caller, id).await.ok();
        let target = seen.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
        let cache = self.cache_for(caller, "cache_delete", &target)?;
        if seen.is_none() && !cache.contains(id) && !cache.queued().iter().any(|q| q == id) {
            return Err(DomainError::NotFound(format!("Image {id} not found.")).into());
        }
        let image_id = id.to_string();
        blocking(move || {
            cache.remove(&image_id);
            cache.dequeue(&image_id)
        })
        .await?
        .map_err(queue_error)?;
        Ok(())
    }

    /// `DELETE /v2/cache`; `None` is a target header Glance does not know (400, once the
    /// policy and the cache allowed the request).
    pub async fn clear_cache(&self, caller: &Caller, target: Option<ClearTarget>) -> Result<()> {
        let cache = self.cache_for(caller, "cache_delete", &ImageTarget::default())?;
        let target = target.ok_or_else(|| {
            DomainError::Invalid(
                "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty \
                 string."
                    .into(),
            )
        })?;
        blocking(move || {
            if target != ClearTarget::Queue {
                cache.clear();
            }
            match target {
                ClearTarget::Cache => Ok(0),
                _ => cache.clear_queue(),
            }
        })
        .await?
        .map_err(queue_error)?;
        Ok(())
    }

    /// `POST /v2/cache/clean`.
    pub async fn clean_cache(&self, caller: &Caller) -> Result<()> {
        let cache = self.cache_for(caller, "cache_clean", &ImageTarget::default())?;
        blocking(move || cache.clean()).await
    }

    /// `POST /v2/cache/prune`: entries and bytes removed.
    pub async fn prune_cache(&self, caller: &Caller) -> Result<(usize, u64)> {
        let cache = self.cache_for(caller, "cache_prune", &ImageTarget::default())?;
        blocking(move || cache.prune()).await
    }

    /// `GET /v2/cache/nodes/{id}`: only Glance's centralized cache driver knows other
    /// nodes' caches; each glint node has its own.
    pub fn cached_nodes(&self, caller: &Caller) -> Result<()> {
        self.cache_for(caller, "list_cached_nodes", &ImageTarget::default())?;
        Err(DomainError::Conflict("Centralized caching is not enabled".into()).into())
    }

    /// Starts the node's prefetcher unless it runs or nothing is queued. It caches the
    /// queued images one at a time, each with the generation live at that moment, and ends
    /// when the queue is empty (the upkeep starts it again for what a restart left).
    pub(super) fn prefetch(&self) {
        let Some(cache) = &self.cache else {
            return;
        };
        let board = self.executor.board().clone();
        if cache.queued().is_empty() || !board.begin_prefetching() {
            return;
        }
        board.clone().spawn(async move {
            while let Some(catalog) = board.live_catalog() {
                let Some(cache) = catalog.cache.clone() else {
                    break;
                };
                let Some(id) = cache.queued().first().cloned() else {
                    break;
                };
                if !catalog.prefetch_one(&cache, &id).await {
                    break;
                }
                let dequeued = blocking({
                    let (cache, id) = (cache.clone(), id.clone());
                    move || cache.dequeue(&id)
                })
                .await;
                if !matches!(dequeued, Ok(Ok(_))) {
                    tracing::warn!(image_id = %id, "prefetched image not taken off the queue");
                    break;
                }
            }
            board.end_prefetching();
        });
    }

    /// Reads image `id` through the cache; false when it should be tried again later (the
    /// database did not answer).
    async fn prefetch_one(&self, cache: &Arc<ImageCache>, id: &str) -> bool {
        let image = match self.db.get_image(id).await {
            Ok(Some(image)) if image.status == Status::Active => image,
            Ok(_) => {
                tracing::info!(
                    image_id = id,
                    "queued image no longer active: not prefetched"
                );
                return true;
            }
            Err(e) => {
                tracing::warn!(image_id = id, error = %e, "prefetch postponed");
                return false;
            }
        };
        let Some(copies) = self.copies_of(&image, Some(cache)) else {
            return true;
        };
        if cache.contains(id) {
            // Cached already (a stale entry is found out by the next download): reading it
            // would count a hit no client made.
            return true;
        }
        if image
            .size
            .and_then(|s| u64::try_from(s).ok())
            .is_some_and(|s| !cache.fits(s))
        {
            tracing::warn!(
                image_id = id,
                "queued image larger than cache.max_size: not prefetched"
            );
            return true;
        }
        match copies.open(None).await {
            Ok(mut stream) => {
                while let Some(chunk) = stream.next().await {
                    if let Err(e) = chunk {
                        tracing::warn!(image_id = id, error = %e, "prefetch failed");
                        return true;
                    }
                }
                tracing::info!(image_id = id, "image prefetched into the cache");
            }
            Err(e) => tracing::warn!(image_id = id, error = %e, "prefetch failed"),
        }
        true
    }
}

fn queue_error(e: std::io::Error) -> ServiceError {
    tracing::warn!(error = %e, "image cache queue not written");
    ServiceError::Unavailable("The image cache queue could not be written.".into())
}
