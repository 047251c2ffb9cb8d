//! Content-addressed blob storage on `object_store`: local disk by default, S3-compatible later,
//! with the same semantics.
//!
//! Layout: `images/<sha256 hex>` for published images, `staging/<uuid>` for uploads in flight.
//! A published image is never overwritten: publication is `rename_if_not_exists`, so a second
//! upload of the same bytes just drops its staging copy.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt;

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
}

/// An upload being written to `staging/`.
pub struct StagedBlob {
    path: ObjectPath,
    writer: BufWriter,
}

impl BlobStore {
    /// Blobs under a directory on local disk (created if missing).
    pub fn local(root: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(root)?;
        let store = LocalFileSystem::new_with_prefix(root)?;
        Ok(BlobStore {
            store: Arc::new(store),
            local_root: Some(root.to_path_buf()),
        })
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
        let path = ObjectPath::from(format!("staging/{}", uuid::Uuid::new_v4().simple()));
        StagedBlob {
            writer: BufWriter::new(self.store.clone(), path.clone()),
            path,
        }
    }

    /// Makes a completed staged upload visible at its content address.
    pub async fn publish(&self, staged: StagedObject, sha256_hex: &str) -> Result<(), BlobError> {
        match self
            .store
            .rename_if_not_exists(&staged.0, &Self::image_key(sha256_hex))
            .await
        {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.store.delete(&staged.0).await?;
                Ok(())
            }
            Err(e) => {
                self.discard(staged).await;
                Err(e.into())
            }
        }
    }

    /// Reads a completed staged upload whole (bounded by the upload limit), to parse it.
    pub async fn read_staged(&self, staged: &StagedObject) -> Result<Bytes, BlobError> {
        Ok(self.store.get(&staged.0).await?.bytes().await?)
    }

    /// Deletes a completed staged upload that was refused.
    pub async fn discard(&self, staged: StagedObject) {
        if let Err(e) = self.store.delete(&staged.0).await {
            tracing::warn!(error = %e, key = %staged.0, "could not delete a refused upload; it is removed at the next start");
        }
    }

    /// Streams a published image, or a range of it.
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

    /// Removes uploads that a crash or kill left in `staging/`.
    pub async fn clean_staging(&self) -> Result<usize, BlobError> {
        let mut n = 0;
        if let Some(root) = &self.local_root {
            // Also catches object_store's own half-written temporary files.
            let dir = root.join("staging");
            if dir.exists() {
                n = std::fs::read_dir(&dir)?.count();
                std::fs::remove_dir_all(&dir)?;
            }
            return Ok(n);
        }
        let mut list = self.store.list(Some(&ObjectPath::from("staging")));
        while let Some(meta) = list.next().await {
            self.store.delete(&meta?.location).await?;
            n += 1;
        }
        Ok(n)
    }
}

/// A staged upload whose bytes are all written, not yet published.
pub struct StagedObject(ObjectPath);

impl StagedBlob {
    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.writer.write_all(data).await?;
        Ok(())
    }

    /// Completes the write; the object exists in `staging/` afterwards.
    pub async fn complete(mut self) -> Result<StagedObject, BlobError> {
        self.writer.shutdown().await?;
        Ok(StagedObject(self.path))
    }

    /// Drops an unfinished upload.
    pub async fn abort(mut self) {
        let _ = self.writer.abort().await;
    }
}
