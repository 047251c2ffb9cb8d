//! The blob collector: removes images that no release references and stale leftovers in
//! `staging/`. It runs once when the server starts and then every `blob_gc_interval_s`, as a
//! task that [`crate::launch_with_listener`] starts and stops.
//!
//! Where orphans come from: an upload copies its blob to `images/<sha>` and then inserts its
//! release row. A kill between the two (or a refused insert) leaves a blob that nothing serves.
//!
//! Why it cannot delete a blob that an upload is publishing. The race: the collector sees blob X
//! with no release, an upload of the same bytes finds X in place (and keeps it instead of its own
//! copy) and inserts its release, then the collector deletes X; the release now points at
//! nothing. Two rules close it:
//! 1. In this process, an upload holds [`BlobStore::publishing`] (a shared lock) from the moment
//!    it moves or keeps the blob until its release row is committed or refused. The collector
//!    takes the same lock exclusively for each blob and, under it, checks again that no release
//!    references the blob before deleting it. So either the collector deletes first and the
//!    upload then finds no blob and moves its own copy in, or the upload commits first and the
//!    collector's second check sees the release. There is no order in which a committed release
//!    ends up without its blob.
//! 2. Blobs modified less than `blob_gc_grace_s` ago are never collected: a freshly copied
//!    blob is young.
//! 3. Against another instance on the same bucket, which this lock cannot see (issue 9), both
//!    sides check after the other could have acted. The upload keeps its staged copy until its
//!    release row is in, then checks that the blob is still at its address and copies it back
//!    if it is gone ([`BlobStore::settle`]). The collector moves the blob aside rather than
//!    deleting it, checks the database once more, and puts it back if a release references it
//!    now. A row committed before the collector's last check is seen by it; one committed
//!    after it finds the blob gone when it settles, and restores it.
//!
//! Staging entries of uploads in flight in this process are never touched (the store tracks
//! them); other staging entries go once they are older than the grace period.

use crate::blob::BlobStore;
use crate::AppState;

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Images no release referenced.
    pub images: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Stale entries in `staging/`.
    pub staging: usize,
}

/// One pass of the collector. Safe to run while uploads are in flight.
pub async fn collect_once(state: &AppState) -> anyhow::Result<Collected> {
    let cutoff = crate::now().saturating_sub(state.settings.blob_gc_grace_s as i64);
    let blobs: &BlobStore = &state.blobs;
    let mut done = Collected {
        staging: blobs.clean_stale_staging(cutoff).await?,
        ..Default::default()
    };
    for image in blobs.list_images().await? {
        if image.modified_at > cutoff || state.db.blob_referenced(&image.sha256_hex).await? {
            continue;
        }
        // Rule 1 above: check again, and delete, with publications held off.
        let _exclusive = blobs.collecting().await;
        if state.db.blob_referenced(&image.sha256_hex).await? {
            continue;
        }
        // Rule 3 above: an instance this lock cannot see may commit a release of the blob
        // meanwhile; set aside, checked once more, and put back if so.
        let Some(aside) = blobs.set_aside(&image.sha256_hex).await? else {
            continue;
        };
        if state.db.blob_referenced(&image.sha256_hex).await? {
            tracing::info!(blob = %image.sha256_hex, "a release came to reference a blob being collected; kept");
            blobs.put_back(aside).await?;
            continue;
        }
        blobs.drop_aside(aside).await?;
        done.images += 1;
        done.bytes += image.size;
    }
    if done != Collected::default() {
        tracing::info!(
            images = done.images,
            bytes = done.bytes,
            staging = done.staging,
            "removed blobs that no release references and stale staged uploads"
        );
    }
    Ok(done)
}
