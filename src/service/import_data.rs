//! Where an import's bytes come from and how they reach a store: the staged file (fetched
//! first for web-download) or an image's copy (copy-image); what the import plugins that
//! change bytes make of staged data (`transformed`); and each store's copy (`copy`), linked
//! when it shares a filesystem with its source and judged, hashed and written otherwise. The
//! task's progress and its failure are `import_task`'s.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::Catalog;
use super::data::{Judge, blocking};
use super::import_task::Plan;
use crate::domain::image::{Image, Location};
use crate::domain::import::Method;
use crate::inspect::Inspector;
use crate::store::{ByteStream, STAGING_ID, Store, Stored};
use crate::transform::{self, Data};

/// Where an import's data comes from.
pub(super) enum Source {
    /// A store's copy (the staging area's included).
    Stored(Location),
    /// A file the import plugins made in the import's work directory.
    Made(PathBuf),
}

/// A made file's size and bytes.
async fn open_made(path: &Path) -> std::result::Result<(u64, ByteStream), String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    Ok((
        length,
        tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).boxed(),
    ))
}

impl Catalog {
    /// Where the data comes from: the staged file (fetched first for web-download, unless
    /// an earlier attempt already did), or for copy-image the image's first readable copy.
    pub(super) async fn source(
        &self,
        image: &Image,
        plan: &Plan,
    ) -> std::result::Result<Location, String> {
        let staging = self.stores.staging().clone();
        let staged = |url| Location {
            store: STAGING_ID.into(),
            url,
        };
        let found = self
            .staged_location(&image.id)
            .await
            .map_err(|e| e.to_string())?;
        match &plan.request.method {
            Method::GlanceDirect => found
                .map(staged)
                .ok_or_else(|| format!("The staged data of image {} is missing", image.id)),
            Method::WebDownload { uri } => {
                if let Some(url) = found {
                    return Ok(staged(url));
                }
                let (length, body) = self
                    .import
                    .web
                    .open(uri, self.size_cap)
                    .await
                    .map_err(|e| e.to_string())?;
                let allowance = self
                    .allowance(image, length)
                    .await
                    .map_err(|e| e.to_string())?;
                let slot = self.task_slot().await;
                let (fetched, _) = self
                    .receive(
                        &staging,
                        &image.id,
                        length,
                        allowance,
                        body,
                        slot,
                        self.judge_for(image),
                    )
                    .await
                    .map_err(|e| format!("Downloading {uri} failed: {e}"))?;
                self.keep_staged_hashes(&image.id, &fetched).await;
                tracing::info!(image_id = %image.id, size = fetched.size, "web-download fetched");
                Ok(staged(fetched.location))
            }
            Method::CopyImage => image
                .locations
                .iter()
                .find(|l| self.stores.get(&l.store).is_ok())
                .cloned()
                .ok_or_else(|| format!("Image {} has no data in a store of this node", image.id)),
        }
    }

    /// The import plugins that change the bytes, run once over the staged data before the
    /// first store takes a copy: the data they made and the image with the formats it is
    /// in. An import cut after its first copy takes that copy for the next stores (its
    /// steps ran already); one cut before runs them again from the staged data.
    pub(super) async fn transformed(
        &self,
        image: &Image,
        plan: &Plan,
        source: Location,
    ) -> std::result::Result<(Source, Image), String> {
        let steps = &self.import.steps;
        if plan.copies() || steps.is_empty() {
            return Ok((Source::Stored(source), image.clone()));
        }
        if let Some(copy) = image
            .locations
            .iter()
            .find(|l| self.stores.get(&l.store).is_ok())
        {
            return Ok((Source::Stored(copy.clone()), image.clone()));
        }
        let staging = self.stores.staging().clone();
        let image_id = image.id.clone();
        let known = blocking(move || staging.kept_hashes(&image_id))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|kept| kept.inspection);
        let staged = Data {
            path: self
                .stores
                .staging()
                .file_of(&source.url)
                .map_err(|e| e.to_string())?,
            disk_format: image.disk_format.clone(),
            container_format: image.container_format.clone(),
            inspection: known,
        };
        let work = self.import.work_dir.join(&image.id);
        let made = transform::run(steps, staged.clone(), &work, self.size_cap)
            .await
            .map_err(|e| e.to_string())?;
        if made == staged {
            return Ok((Source::Stored(source), image.clone()));
        }
        let image = Image {
            disk_format: made.disk_format,
            container_format: made.container_format,
            ..image.clone()
        };
        Ok((Source::Made(made.path), image))
    }

    pub(super) fn store_of(&self, id: &str) -> std::result::Result<&Store, String> {
        if id == STAGING_ID {
            return Ok(self.stores.staging());
        }
        self.stores.get(id).map_err(|e| e.to_string())
    }

    /// Copies `source` into store `store_id`, checking the copy against `expected` (the
    /// md5 of an earlier copy) when there is one.
    /// The data is judged as it is copied (or, linked, by what its stage found), so unsafe
    /// or mismatched data never lands in a store; returns the copy and its virtual size.
    pub(super) async fn copy(
        &self,
        image: &Image,
        source: &Source,
        store_id: &str,
        expected: Option<&str>,
    ) -> std::result::Result<(Stored, Option<u64>), String> {
        let image_id = image.id.as_str();
        let target = self.store_of(store_id)?.clone();
        if target.read_only() || store_id == STAGING_ID {
            return Err(format!("Store {store_id} does not take new data"));
        }
        let remove = |stored: &Stored| {
            let (target, location) = (target.clone(), stored.location.clone());
            async move { target.delete(&location).await }
        };
        let (length, body) = match source {
            Source::Made(path) => {
                if let Some(adopted) = self
                    .link_made(image_id, path, &target, self.judge_for(image))
                    .await?
                {
                    if let Some(expected) = expected.filter(|e| *e != adopted.0.md5) {
                        let _ = remove(&adopted.0).await;
                        return Err(format!(
                            "The converted data has checksum {}, expected {expected}",
                            adopted.0.md5
                        ));
                    }
                    return Ok(adopted);
                }
                open_made(path).await?
            }
            Source::Stored(source) => {
                if let Some((stored, virtual_size)) = self
                    .link_staged(image_id, source, &target, self.judge_for(image))
                    .await?
                {
                    if let Some(expected) = expected.filter(|e| *e != stored.md5) {
                        let _ = remove(&stored).await;
                        return Err(format!(
                            "The staged data has checksum {}, expected {expected}",
                            stored.md5
                        ));
                    }
                    return Ok((stored, virtual_size));
                }
                let source_store = self.store_of(&source.store)?.clone();
                let length = source_store
                    .size_of(&source.url)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = source_store
                    .read(&source.url, None)
                    .await
                    .map_err(|e| e.to_string())?;
                (length, body)
            }
        };
        let slot = self.task_slot().await;
        let (stored, virtual_size) = self
            .receive(
                &target,
                image_id,
                Some(length),
                None,
                body,
                slot,
                self.judge_for(image),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Some(expected) = expected.filter(|e| *e != stored.md5) {
            let _ = remove(&stored).await;
            return Err(format!(
                "The copy in store {store_id} has checksum {}, expected {expected}",
                stored.md5
            ));
        }
        Ok((stored, virtual_size))
    }

    /// Staged data with its kept hashes and inspection goes into `target` as a hard link
    /// when they share a filesystem, once `judge` has taken what its stage found: the
    /// import then costs no copy and no second pass over the bytes.
    async fn link_staged(
        &self,
        image_id: &str,
        source: &Location,
        target: &Store,
        judge: Judge,
    ) -> std::result::Result<Option<(Stored, Option<u64>)>, String> {
        if source.store != STAGING_ID {
            return Ok(None);
        }
        let staging = self.stores.staging().clone();
        let target = target.clone();
        let (image_id, url) = (image_id.to_string(), source.url.clone());
        blocking(move || {
            let Some(kept) = staging.kept_hashes(&image_id) else {
                return Ok(None);
            };
            let Some(inspection) = &kept.inspection else {
                return Ok(None);
            };
            let virtual_size = judge(inspection, kept.size).map_err(|e| e.to_string())?;
            let path = staging.file_of(&url).map_err(|e| e.to_string())?;
            let linked = target
                .link_from(&image_id, &path)
                .map_err(|e| e.to_string())?;
            Ok(linked.map(|location| (Stored { location, ..kept }, virtual_size)))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A file the import plugins made goes into `target` as a hard link when they share a
    /// filesystem: hashed and inspected in one read (and synced meanwhile), then judged, and
    /// only then linked. No second copy of the bytes is written.
    async fn link_made(
        &self,
        image_id: &str,
        path: &Path,
        target: &Store,
        judge: Judge,
    ) -> std::result::Result<Option<(Stored, Option<u64>)>, String> {
        let (target, image_id, path) = (target.clone(), image_id.to_string(), path.to_path_buf());
        let slot = self.task_slot().await;
        blocking(move || {
            let _slot = slot;
            let mut inspector = Inspector::new();
            let digests = target
                .digest_for_link(&path, &mut |chunk| inspector.feed(chunk))
                .map_err(|e| e.to_string())?;
            let Some(digests) = digests else {
                return Ok(None);
            };
            let inspection = inspector.finish();
            let virtual_size = judge(&inspection, digests.size).map_err(|e| e.to_string())?;
            let Some(location) = target
                .link_from(&image_id, &path)
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let stored = Stored {
                inspection: Some(inspection),
                ..Stored::new(location, digests)
            };
            Ok(Some((stored, virtual_size)))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A transfer slot for a background task: it waits as long as it takes.
    async fn task_slot(&self) -> super::data::Slot {
        let transfers = self.executor.board().transfers.clone();
        loop {
            if let Some(slot) = transfers.acquire(None).await {
                return slot;
            }
        }
    }
}
