//! Content-addressed blob storage on `object_store`: local disk by default, or an
//! S3-compatible bucket (`blob_backend = "s3"`), with the same semantics.
//!
//! Layout: `images/<sha256 hex>` for published images, `staging/<uuid>` for uploads in flight
//! (below `s3_prefix` on S3). Publication is head-then-copy, which content addressing makes safe
//! on S3 and with several instances, and which needs no rename-if-not-exists: when the address
//! holds no blob, the verified staged upload is copied to it (any instance doing the same at
//! once writes the same bytes); when it holds one, that blob is re-hashed: the same bytes are
//! kept, while a blob whose bytes no longer match its address (damaged storage) is replaced by
//! the verified upload. The staged copy stays until the release row is in
//! ([`BlobStore::settle`]), so a blob that another instance's collector removed meanwhile is
//! put back from it.
//!
//! Staging names are random UUIDs (unique across instances); a start no longer empties
//! `staging/`, since another instance's upload may be in flight there: the collector removes
//! staged objects older than `blob_gc_grace_s` by their last modification.
//!
//! Blobs that no release references (an upload killed between publication and its database
//! row) are removed by the collector in [`crate::blob_gc`]; [`BlobStore::publishing`] and
//! [`BlobStore::collecting`] keep it from racing a publication.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::verified_read::{CheckedStream, ReadRequest, VerifiedBlobs};

/// A blob storage failure.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No such blob.
    #[error("blob not found")]
    NotFound,
    /// The storage backend failed.
    #[error("blob storage: {0}")]
    Backend(String),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            e => BlobError::Backend(e.to_string()),
        }
    }
}

impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> Self {
        BlobError::Backend(e.to_string())
    }
}

/// The blob store.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    /// The bucket itself (without the prefix), to presign downloads; `None` on local disk.
    s3: Option<(Arc<AmazonS3>, String)>,
    /// Shared by publications (from the blob's move to its address until its release row is
    /// committed), exclusive for the collector's check-then-delete of one blob.
    publish_lock: Arc<RwLock<()>>,
    /// Names of the `staging/` objects of uploads in flight in this process.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Blob identities already hashed whole ([`crate::verified_read`]).
    verified: Arc<VerifiedBlobs>,
}

/// Marks a staging name as in flight until dropped (also when a handler is cancelled).
struct InFlight {
    name: String,
    set: Arc<Mutex<HashSet<String>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.name);
        }
    }
}

/// An upload being written to `staging/`.
pub struct StagedBlob {
    path: ObjectPath,
    writer: BufWriter,
    flight: InFlight,
}

/// A published image as the collector sees it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// Its SHA-256, hex (its name under `images/`).
    pub sha256_hex: String,
    /// Last modification, Unix seconds.
    pub modified_at: i64,
    /// Size in bytes.
    pub size: u64,
}

impl BlobStore {
    /// Blobs under a directory on local disk (created if missing).
    pub fn local(root: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(root)?;
        let store = LocalFileSystem::new_with_prefix(root)?;
        Ok(BlobStore {
            store: Arc::new(store),
            local_root: Some(root.to_path_buf()),
            s3: None,
            publish_lock: Arc::new(RwLock::new(())),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            verified: Arc::default(),
        })
    }

    /// The store the settings name: `data_dir/blobs` on local disk, or an S3 bucket.
    pub fn open(settings: &crate::config::Settings) -> Result<Self, BlobError> {
        if settings.blob_backend != "s3" {
            return Self::local(&settings.data_dir.join("blobs"));
        }
        // Credentials and options not set here come from the AWS_* environment, as AWS's tools do.
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(settings.s3_bucket.clone().unwrap_or_default())
            .with_region(&settings.s3_region)
            .with_allow_http(settings.s3_allow_http);
        if let Some(e) = &settings.s3_endpoint {
            b = b.with_endpoint(e);
        }
        if let (Some(id), Some(secret)) =
            (&settings.s3_access_key_id, &settings.s3_secret_access_key)
        {
            b = b
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
        }
        let s3 = Arc::new(b.build()?);
        let prefix = settings.s3_prefix.trim_matches('/').to_string();
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            s3.clone()
        } else {
            let inner: Arc<dyn ObjectStore> = s3.clone();
            Arc::new(PrefixStore::new(inner, prefix.as_str()))
        };
        Ok(BlobStore {
            store,
            local_root: None,
            s3: Some((s3, prefix)),
            publish_lock: Arc::new(RwLock::new(())),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            verified: Arc::default(),
        })
    }

    /// The object store underneath (prefix applied), for tests and tools that inspect blobs.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// A presigned `GET` URL of a published image, valid for `ttl`; `None` on local disk.
    pub async fn presigned_image_url(
        &self,
        sha256_hex: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, BlobError> {
        let Some((s3, prefix)) = &self.s3 else {
            return Ok(None);
        };
        let key = if prefix.is_empty() {
            Self::image_key(sha256_hex)
        } else {
            ObjectPath::from(format!("{prefix}/images/{sha256_hex}"))
        };
        let url = s3.signed_url(axum::http::Method::GET, &key, ttl).await?;
        Ok(Some(url.to_string()))
    }

    /// The key of a published image.
    pub fn image_key(sha256_hex: &str) -> ObjectPath {
        ObjectPath::from(format!("images/{sha256_hex}"))
    }

    /// The local file of a published image, when the store is on local disk (tests, benchmarks).
    pub fn local_image_path(&self, sha256_hex: &str) -> Option<PathBuf> {
        self.local_root
            .as_ref()
            .map(|r| r.join("images").join(sha256_hex))
    }

    /// Starts a staged upload. Staging keys are random, never derived from client input.
    pub fn stage(&self) -> StagedBlob {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let path = ObjectPath::from(format!("staging/{name}"));
        if let Ok(mut set) = self.in_flight.lock() {
            set.insert(name.clone());
        }
        StagedBlob {
            writer: BufWriter::new(self.store.clone(), path.clone()),
            path,
            flight: InFlight {
                name,
                set: self.in_flight.clone(),
            },
        }
    }

    /// Held by an upload from [`BlobStore::publish`] until its release row is committed (or
    /// refused): while any is held, the collector deletes nothing.
    pub async fn publishing(&self) -> OwnedRwLockReadGuard<()> {
        self.publish_lock.clone().read_owned().await
    }

    /// Held by the collector around the check-then-delete of one blob.
    pub async fn collecting(&self) -> OwnedRwLockWriteGuard<()> {
        self.publish_lock.clone().write_owned().await
    }

    /// Makes a completed staged upload visible at its content address, whose bytes the caller
    /// has verified (head-then-copy; the module's documentation says why it is safe). When that
    /// address holds a blob already, the blob is re-hashed: the same bytes are kept; other bytes
    /// (storage damage or tampering) are replaced by the staged copy. The staged copy stays
    /// until [`BlobStore::settle`], which the caller calls once the release row is committed
    /// or refused.
    pub async fn publish(
        &self,
        staged: StagedObject,
        sha256_hex: &str,
    ) -> Result<Placed, BlobError> {
        let key = Self::image_key(sha256_hex);
        let placed = Placed { staged, key };
        let copy = match self.store.head(&placed.key).await {
            Err(object_store::Error::NotFound { .. }) => true,
            Err(e) => {
                self.discard(placed.staged).await;
                return Err(e.into());
            }
            Ok(_) => match self.hash_of(&placed.key).await {
                Ok(existing) if existing == sha256_hex => false,
                found => {
                    let found = match found {
                        Ok(h) => format!("bytes hashing to {h}"),
                        Err(e) => format!("unreadable bytes ({e})"),
                    };
                    tracing::warn!(blob = %placed.key, %found, "a stored image does not match its address; replacing it with the verified upload");
                    true
                }
            },
        };
        if copy {
            if let Err(e) = self.store.copy(&placed.staged.path, &placed.key).await {
                self.discard(placed.staged).await;
                return Err(e.into());
            }
        }
        Ok(placed)
    }

    /// After the release row of a [`BlobStore::publish`] went in (or was refused): makes sure
    /// the blob is still at its address (a collector on another instance may have judged it an
    /// orphan meanwhile; it is put back from the staged copy), then drops the staged copy.
    pub async fn settle(&self, placed: Placed) -> Result<(), BlobError> {
        if let Err(object_store::Error::NotFound { .. }) = self.store.head(&placed.key).await {
            tracing::warn!(blob = %placed.key, "an image vanished while its release was published; restoring it from the upload");
            if let Err(e) = self.store.copy(&placed.staged.path, &placed.key).await {
                self.discard(placed.staged).await;
                return Err(e.into());
            }
        }
        self.discard(placed.staged).await;
        Ok(())
    }

    /// SHA-256 (hex) of a stored object, streamed.
    async fn hash_of(&self, key: &ObjectPath) -> Result<String, BlobError> {
        let mut stream = self.store.get(key).await?.into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Every published image (names that are not a SHA-256 in hex are not ours; left alone).
    pub async fn list_images(&self) -> Result<Vec<StoredImage>, BlobError> {
        let mut out = Vec::new();
        let mut list = self.store.list(Some(&ObjectPath::from("images")));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                continue;
            }
            out.push(StoredImage {
                sha256_hex: name.to_string(),
                modified_at: meta.last_modified.timestamp(),
                size: meta.size,
            });
        }
        Ok(out)
    }

    /// Deletes a published image. Only the collector calls this, holding [`BlobStore::collecting`].
    pub async fn delete_image(&self, sha256_hex: &str) -> Result<(), BlobError> {
        match self.store.delete(&Self::image_key(sha256_hex)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves a published image aside, to `staging/removed-<sha>`, before the collector decides
    /// for good: a release committed meanwhile on another instance gets it back
    /// ([`BlobStore::put_back`]). `None`: there was no such image.
    pub async fn set_aside(&self, sha256_hex: &str) -> Result<Option<Aside>, BlobError> {
        let name = format!("removed-{sha256_hex}");
        if let Ok(mut set) = self.in_flight.lock() {
            set.insert(name.clone());
        }
        let aside = Aside {
            sha256_hex: sha256_hex.to_string(),
            key: ObjectPath::from(format!("staging/{name}")),
            _flight: InFlight {
                name,
                set: self.in_flight.clone(),
            },
        };
        match self
            .store
            .copy(&Self::image_key(sha256_hex), &aside.key)
            .await
        {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.delete_image(sha256_hex).await?;
        Ok(Some(aside))
    }

    /// Puts an image set aside back at its address, unless an upload has put one there since.
    pub async fn put_back(&self, aside: Aside) -> Result<(), BlobError> {
        let key = Self::image_key(&aside.sha256_hex);
        if let Err(object_store::Error::NotFound { .. }) = self.store.head(&key).await {
            self.store.copy(&aside.key, &key).await?;
        }
        self.drop_aside(aside).await
    }

    /// Deletes an image set aside for good.
    pub async fn drop_aside(&self, aside: Aside) -> Result<(), BlobError> {
        match self.store.delete(&aside.key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes what `staging/` holds from uploads that are no longer in flight in this process
    /// and were last written at or before `cutoff` (Unix seconds): leftovers of failed deletions and
    /// of object_store's temporary files. Returns how many entries went.
    pub async fn clean_stale_staging(&self, cutoff: i64) -> Result<usize, BlobError> {
        let in_flight = |name: &str| {
            self.in_flight
                .lock()
                .map(|set| set.iter().any(|f| name.starts_with(f.as_str())))
                .unwrap_or(true)
        };
        let mut n = 0;
        if let Some(root) = &self.local_root {
            // Read the directory itself: it also shows object_store's half-written temporary files.
            let dir = root.join("staging");
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // An upload may finish (and drop its staged copy) between the listing and here.
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                let modified = meta
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                if modified > cutoff || in_flight(&name) {
                    continue;
                }
                let path = entry.path();
                let removed = if meta.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(n);
        }
        let mut list = self.store.list(Some(&ObjectPath::from("staging")));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            let name = meta.location.filename().unwrap_or_default().to_string();
            if meta.last_modified.timestamp() > cutoff || in_flight(&name) {
                continue;
            }
            self.store.delete(&meta.location).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Reads a completed staged upload whole (bounded by the upload limit), to parse it.
    pub async fn read_staged(&self, staged: &StagedObject) -> Result<Bytes, BlobError> {
        Ok(self.store.get(&staged.path).await?.bytes().await?)
    }

    /// Deletes a completed staged upload that was refused.
    pub async fn discard(&self, staged: StagedObject) {
        if let Err(e) = self.store.delete(&staged.path).await {
            tracing::warn!(error = %e, key = %staged.path, "could not delete a staged upload; the collector removes it once it is older than blob_gc_grace_s");
        }
    }

    /// Streams a published image, or a range of it, for a device: never bytes that do not match
    /// the image's SHA-256 ([`crate::verified_read`] says how, without hashing per request).
    pub async fn read_checked(&self, req: ReadRequest<'_>) -> Result<CheckedStream, BlobError> {
        match self.local_image_path(req.sha256_hex) {
            Some(path) => crate::verified_read::read_local(self.verified.clone(), path, req).await,
            None => {
                let key = Self::image_key(req.sha256_hex);
                crate::verified_read::read_object(
                    self.verified.clone(),
                    self.store.clone(),
                    key,
                    req,
                )
                .await
            }
        }
    }

    /// Streams a published image, or a range of it, unchecked (the collector and tools).
    pub async fn stream_image(
        &self,
        sha256_hex: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let res = self
            .store
            .get_opts(&Self::image_key(sha256_hex), opts)
            .await?;
        Ok(res
            .into_stream()
            .map(|r| r.map_err(BlobError::from))
            .boxed())
    }
}

/// An image the collector moved aside ([`BlobStore::set_aside`]); the staging sweep spares it.
pub struct Aside {
    sha256_hex: String,
    key: ObjectPath,
    _flight: InFlight,
}

/// A staged upload copied to its address, waiting for [`BlobStore::settle`].
pub struct Placed {
    staged: StagedObject,
    key: ObjectPath,
}

/// A staged upload whose bytes are all written, not yet published.
pub struct StagedObject {
    path: ObjectPath,
    /// Keeps the collector off it until it is published or discarded.
    _flight: InFlight,
}

impl StagedBlob {
    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.writer.write_all(data).await?;
        Ok(())
    }

    /// Completes the write; the object exists in `staging/` afterwards.
    pub async fn complete(mut self) -> Result<StagedObject, BlobError> {
        self.writer.shutdown().await?;
        Ok(StagedObject {
            path: self.path,
            _flight: self.flight,
        })
    }

    /// Drops an unfinished upload.
    pub async fn abort(mut self) {
        let _ = self.writer.abort().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn staged(store: &BlobStore, bytes: &[u8]) -> StagedObject {
        let mut s = store.stage();
        s.write(bytes).await.unwrap();
        s.complete().await.unwrap()
    }

    async fn image(store: &BlobStore, sha: &str) -> Option<Vec<u8>> {
        match store.store.get(&BlobStore::image_key(sha)).await {
            Ok(g) => Some(g.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    async fn staging_count(store: &BlobStore) -> usize {
        let prefix = ObjectPath::from("staging");
        store.store.list(Some(&prefix)).count().await
    }

    #[tokio::test]
    async fn publish_copies_keeps_sound_blobs_and_settle_restores_a_vanished_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = BlobStore::local(dir.path()).unwrap();
        let bytes = b"an image".repeat(100);
        let sha = hex::encode(Sha256::digest(&bytes));

        // Nothing at the address: the staged copy is copied there, and kept until settled.
        let placed = store
            .publish(staged(&store, &bytes).await, &sha)
            .await
            .unwrap();
        assert_eq!(image(&store, &sha).await.as_deref(), Some(&bytes[..]));
        assert_eq!(staging_count(&store).await, 1);
        store.settle(placed).await.unwrap();
        assert_eq!(staging_count(&store).await, 0);

        // The blob vanishes between publication and settling (another instance's collector):
        // settling puts it back from the staged copy.
        let placed = store
            .publish(staged(&store, &bytes).await, &sha)
            .await
            .unwrap();
        store.delete_image(&sha).await.unwrap();
        store.settle(placed).await.unwrap();
        assert_eq!(image(&store, &sha).await.as_deref(), Some(&bytes[..]));
        assert_eq!(staging_count(&store).await, 0);

        // Damaged bytes at the address are replaced by the verified upload.
        store
            .store
            .put(&BlobStore::image_key(&sha), b"damaged".to_vec().into())
            .await
            .unwrap();
        let placed = store
            .publish(staged(&store, &bytes).await, &sha)
            .await
            .unwrap();
        store.settle(placed).await.unwrap();
        assert_eq!(image(&store, &sha).await.as_deref(), Some(&bytes[..]));
    }

    #[tokio::test]
    async fn an_image_set_aside_is_put_back_or_dropped() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = BlobStore::local(dir.path()).unwrap();
        let bytes = b"orphan?".repeat(50);
        let sha = hex::encode(Sha256::digest(&bytes));
        assert!(
            store.set_aside(&sha).await.unwrap().is_none(),
            "no such image"
        );
        let placed = store
            .publish(staged(&store, &bytes).await, &sha)
            .await
            .unwrap();
        store.settle(placed).await.unwrap();

        let aside = store.set_aside(&sha).await.unwrap().unwrap();
        assert_eq!(image(&store, &sha).await, None);
        // An upload on another instance put the verified image back meanwhile: kept as it is.
        store
            .store
            .put(&BlobStore::image_key(&sha), bytes.clone().into())
            .await
            .unwrap();
        store.put_back(aside).await.unwrap();
        assert_eq!(image(&store, &sha).await.as_deref(), Some(&bytes[..]));
        let aside = store.set_aside(&sha).await.unwrap().unwrap();
        // The sweep spares it while the collector holds it, however old.
        assert_eq!(
            store
                .clean_stale_staging(crate::now() + 3600)
                .await
                .unwrap(),
            0
        );
        store.put_back(aside).await.unwrap();
        assert_eq!(image(&store, &sha).await.as_deref(), Some(&bytes[..]));
        assert_eq!(staging_count(&store).await, 0);

        let aside = store.set_aside(&sha).await.unwrap().unwrap();
        store.drop_aside(aside).await.unwrap();
        assert_eq!(image(&store, &sha).await, None);
        assert_eq!(staging_count(&store).await, 0);
    }

    #[tokio::test]
    async fn the_staging_sweep_spares_uploads_in_flight_and_young_objects() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = BlobStore::local(dir.path()).unwrap();
        let in_flight = staged(&store, b"mine").await;
        store
            .store
            .put(
                &ObjectPath::from("staging/leftover"),
                b"old".to_vec().into(),
            )
            .await
            .unwrap();
        // Cutoff in the past: both are younger, nothing goes.
        assert_eq!(
            store
                .clean_stale_staging(crate::now() - 3600)
                .await
                .unwrap(),
            0
        );
        // Cutoff in the future: the leftover goes, the upload in flight stays.
        assert_eq!(
            store
                .clean_stale_staging(crate::now() + 3600)
                .await
                .unwrap(),
            1
        );
        assert_eq!(staging_count(&store).await, 1);
        store.discard(in_flight).await;
        assert_eq!(staging_count(&store).await, 0);
    }
}
