//! Reading published blobs for devices, hashed once per stored identity rather than per request.
//!
//! The guarantee (docs/security.md, "Downloads"): bytes altered in storage never reach a device
//! as a complete image, or as a range, that the server presents as good. Blobs are content
//! addressed, so the SHA-256 they must have is their name.
//!
//! - The first read of a blob's *identity* hashes all of it: on local disk the identity is the
//!   open file's device, inode, size, modification and change times (`ctime` moves on every
//!   write, and no user call sets it back); on S3 it is the object's ETag, version, size and
//!   modification time. A whole download hashes as it streams and checks the digest before its
//!   last chunk leaves; a range of an unverified blob is answered only after the whole blob was
//!   hashed.
//! - An identity that matched is remembered ([`VerifiedBlobs`]); later reads of the same identity
//!   stream without hashing, and re-check the identity before the last chunk leaves (on disk a
//!   second `fstat` of the open file), so a blob rewritten mid-download is still caught.
//! - Local reads use positioned reads of `chunk` bytes on the blocking pool (one per chunk, not
//!   per 8 KiB as a generic object-store read does); at most one chunk per download is in memory.

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};
use sha2::{Digest, Sha256};

use crate::blob::BlobError;

/// Remembered identities at most; past this the memory is cleared and blobs are hashed again.
/// Each published image has one identity, so this is far above any real release count.
pub const VERIFIED_CAPACITY: usize = 4096;

/// What a stored blob is, as far as "did its bytes change?" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A file on local disk, from `fstat` of the open file.
    File {
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
    },
    /// An object in a store that names its versions.
    Object {
        e_tag: String,
        version: Option<String>,
        size: u64,
        modified_ms: i64,
    },
}

impl Identity {
    fn of_file(meta: &std::fs::Metadata) -> Identity {
        Identity::File {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// `None` when the store gives no ETag: such a blob is hashed on every read.
    fn of_object(meta: &ObjectMeta) -> Option<Identity> {
        Some(Identity::Object {
            e_tag: meta.e_tag.clone()?,
            version: meta.version.clone(),
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
        })
    }
}

/// The blob identities whose whole content matched their SHA-256, shared by all requests.
#[derive(Debug, Default)]
pub struct VerifiedBlobs {
    seen: Mutex<HashMap<String, Identity>>,
}

impl VerifiedBlobs {
    fn is_verified(&self, sha256_hex: &str, identity: &Identity) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(sha256_hex) == Some(identity)
    }

    fn record(&self, sha256_hex: &str, identity: Identity) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= VERIFIED_CAPACITY && !seen.contains_key(sha256_hex) {
            seen.clear();
        }
        seen.insert(sha256_hex.to_string(), identity);
    }

    /// Forgets a blob (removed, or found changed).
    pub fn forget(&self, sha256_hex: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(sha256_hex);
    }
}

/// A blob's bytes, checked as described in the module documentation.
pub type CheckedStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// What a read is asked for.
pub struct ReadRequest<'a> {
    /// The blob's SHA-256, hex: its name and the digest its bytes must have.
    pub sha256_hex: &'a str,
    /// Its size as recorded with its release.
    pub size: u64,
    /// The bytes wanted (`0..size` for all).
    pub span: Range<u64>,
    /// Bytes per read on local disk.
    pub chunk: usize,
}

fn tampered(sha256_hex: &str) -> BlobError {
    tracing::error!(blob = %sha256_hex, "stored blob does not match its SHA-256 (storage tampered with or corrupt); not serving it");
    metrics::counter!("otter_download_integrity_failures_total").increment(1);
    BlobError::Backend(format!(
        "the stored image {sha256_hex} does not match its SHA-256; restore it from the release file (otter release upload) or the object store's versions"
    ))
}

fn expected_digest(sha256_hex: &str) -> Result<[u8; 32], BlobError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(sha256_hex, &mut out)
        .map_err(|_| BlobError::Backend(format!("{sha256_hex:?} is not a SHA-256")))?;
    Ok(out)
}

/// Reads a blob from a local file.
pub async fn read_local(
    verified: Arc<VerifiedBlobs>,
    path: std::path::PathBuf,
    req: ReadRequest<'_>,
) -> Result<CheckedStream, BlobError> {
    let sha = req.sha256_hex.to_string();
    let expected = expected_digest(&sha)?;
    let (file, identity) = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BlobError::NotFound,
            _ => BlobError::from(e),
        })?;
        let identity = Identity::of_file(&file.metadata()?);
        Ok::<_, BlobError>((Arc::new(file), identity))
    })
    .await
    .map_err(|e| BlobError::Backend(e.to_string()))??;

    let whole = req.span == (0..req.size);
    let check = if verified.is_verified(&sha, &identity) {
        Check::Unchanged
    } else if whole {
        Check::Hash(Box::new(Sha256::new()))
    } else {
        // A range of a blob not yet verified: hash all of it first, from the same open file.
        let (f, size, chunk) = (file.clone(), req.size, req.chunk);
        let digest = tokio::task::spawn_blocking(move || hash_file(&f, size, chunk))
            .await
            .map_err(|e| BlobError::Backend(e.to_string()))??;
        if digest != expected {
            verified.forget(&sha);
            return Err(tampered(&sha));
        }
        verified.record(&sha, identity.clone());
        Check::Unchanged
    };
    let state = LocalRead {
        file,
        pos: req.span.start,
        end: req.span.end,
        chunk: req.chunk.max(1),
        check,
        identity,
        expected,
        sha,
        verified,
    };
    Ok(futures::stream::try_unfold(state, |state| async move {
        if state.pos >= state.end {
            return Ok(None);
        }
        tokio::task::spawn_blocking(move || state.next_chunk())
            .await
            .map_err(std::io::Error::other)?
            .map(Some)
    })
    .boxed())
}

fn hash_file(file: &std::fs::File, size: u64, chunk: usize) -> Result<[u8; 32], BlobError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; chunk.max(1)];
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher.finalize().into())
}

enum Check {
    /// Not verified yet: hash as we go (only for a whole read).
    Hash(Box<Sha256>),
    /// Verified: the identity must still be the same at the end.
    Unchanged,
}

struct LocalRead {
    file: Arc<std::fs::File>,
    pos: u64,
    end: u64,
    chunk: usize,
    check: Check,
    identity: Identity,
    expected: [u8; 32],
    sha: String,
    verified: Arc<VerifiedBlobs>,
}

impl LocalRead {
    /// Reads the next chunk; before the last one leaves, the digest or the identity is checked.
    fn next_chunk(mut self) -> Result<(Bytes, LocalRead), std::io::Error> {
        let n = (self.end - self.pos).min(self.chunk as u64) as usize;
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, self.pos)?;
        self.pos += n as u64;
        let last = self.pos >= self.end;
        match &mut self.check {
            Check::Hash(hasher) => {
                hasher.update(&buf);
                if last {
                    let digest: [u8; 32] = std::mem::take(hasher.as_mut()).finalize().into();
                    if digest != self.expected {
                        self.verified.forget(&self.sha);
                        return Err(std::io::Error::other(tampered(&self.sha).to_string()));
                    }
                    self.verified.record(&self.sha, self.identity.clone());
                }
            }
            Check::Unchanged if last => {
                if Identity::of_file(&self.file.metadata()?) != self.identity {
                    self.verified.forget(&self.sha);
                    return Err(std::io::Error::other(format!(
                        "the stored image {} changed while it was being sent; not completing the download",
                        self.sha
                    )));
                }
            }
            Check::Unchanged => {}
        }
        Ok((Bytes::from(buf), self))
    }
}

/// Reads a blob from an object store (S3). A range of an unverified object is answered after a
/// whole read hashed it, and is then read with `If-Match` on the verified ETag so that the range
/// comes from the same version.
pub async fn read_object(
    verified: Arc<VerifiedBlobs>,
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    req: ReadRequest<'_>,
) -> Result<CheckedStream, BlobError> {
    let sha = req.sha256_hex.to_string();
    let expected = expected_digest(&sha)?;
    let whole = req.span == (0..req.size);
    if whole {
        let got = store.get_opts(&key, GetOptions::default()).await?;
        let identity = Identity::of_object(&got.meta);
        if identity
            .as_ref()
            .is_some_and(|i| verified.is_verified(&sha, i))
        {
            return Ok(plain(got.into_stream()));
        }
        return Ok(hashed(
            got.into_stream(),
            req.size,
            expected,
            sha,
            identity,
            verified,
        ));
    }
    let head = store.head(&key).await?;
    let Some(e_tag) = head.e_tag.clone() else {
        // Without an ETag the range could come from another version than the one hashed.
        return Err(BlobError::Backend(
            "the object store gives no ETag, so a range of a checked image cannot be served; ask for the whole image".into(),
        ));
    };
    let identity = Identity::of_object(&head);
    let known = identity
        .as_ref()
        .is_some_and(|i| verified.is_verified(&sha, i));
    if !known {
        let mut stream = store.get(&key).await?.into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
        }
        if <[u8; 32]>::from(hasher.finalize()) != expected {
            verified.forget(&sha);
            return Err(tampered(&sha));
        }
        if let Some(i) = identity.clone() {
            verified.record(&sha, i);
        }
    }
    let opts = GetOptions {
        range: Some(GetRange::Bounded(req.span.clone())),
        if_match: Some(e_tag),
        ..Default::default()
    };
    Ok(plain(store.get_opts(&key, opts).await?.into_stream()))
}

fn plain(stream: BoxStream<'static, object_store::Result<Bytes>>) -> CheckedStream {
    stream.map_err(std::io::Error::other).boxed()
}

/// Hashes a whole object as it streams; the chunk that completes it leaves only if it matched.
fn hashed(
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    size: u64,
    expected: [u8; 32],
    sha: String,
    identity: Option<Identity>,
    verified: Arc<VerifiedBlobs>,
) -> CheckedStream {
    struct Hashing {
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        hasher: Sha256,
        seen: u64,
    }
    let start = Hashing {
        stream,
        hasher: Sha256::new(),
        seen: 0,
    };
    futures::stream::try_unfold(start, move |mut h| {
        let (sha, identity, verified) = (sha.clone(), identity.clone(), verified.clone());
        async move {
            let Some(chunk) = h.stream.try_next().await.map_err(std::io::Error::other)? else {
                if h.seen < size {
                    return Err(std::io::Error::other(format!(
                        "the stored image {sha} is shorter than its release says"
                    )));
                }
                return Ok(None);
            };
            // Bytes past the recorded size are never sent.
            let room = (size - h.seen.min(size)) as usize;
            let chunk = chunk.slice(..chunk.len().min(room));
            h.hasher.update(&chunk);
            h.seen += chunk.len() as u64;
            if h.seen == size {
                let digest: [u8; 32] = std::mem::take(&mut h.hasher).finalize().into();
                if digest != expected {
                    verified.forget(&sha);
                    return Err(std::io::Error::other(tampered(&sha).to_string()));
                }
                if let Some(i) = identity {
                    verified.record(&sha, i);
                }
            }
            Ok(Some((chunk, h)))
        }
    })
    .try_filter(|c| futures::future::ready(!c.is_empty()))
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 4096;

    async fn read_all(
        verified: &Arc<VerifiedBlobs>,
        path: &std::path::Path,
        sha: &str,
        size: u64,
        span: Range<u64>,
    ) -> Result<Vec<u8>, String> {
        let req = ReadRequest {
            sha256_hex: sha,
            size,
            span,
            chunk: CHUNK,
        };
        let stream = read_local(verified.clone(), path.to_path_buf(), req)
            .await
            .map_err(|e| e.to_string())?;
        let chunks: Vec<Bytes> = stream.try_collect().await.map_err(|e| e.to_string())?;
        Ok(chunks.concat())
    }

    fn blob(dir: &tempfile::TempDir, len: usize) -> (std::path::PathBuf, Vec<u8>, String) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let sha = hex::encode(Sha256::digest(&bytes));
        let path = dir.path().join(&sha);
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes, sha)
    }

    #[tokio::test]
    async fn a_whole_read_is_remembered_and_an_in_place_change_is_caught_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes, sha) = blob(&dir, 3 * CHUNK + 17);
        let size = bytes.len() as u64;
        let verified = Arc::new(VerifiedBlobs::default());
        let identity = Identity::of_file(&std::fs::metadata(&path).unwrap());
        assert!(!verified.is_verified(&sha, &identity));
        assert_eq!(
            read_all(&verified, &path, &sha, size, 0..size)
                .await
                .unwrap(),
            bytes
        );
        assert!(verified.is_verified(&sha, &identity));

        // Same length, same modification time: the change time still moves.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[bytes[5] ^ 1], 5).unwrap();
        f.set_modified(modified).unwrap();
        let err = read_all(&verified, &path, &sha, size, 0..size)
            .await
            .unwrap_err();
        assert!(err.contains("does not match its SHA-256"), "{err}");
        assert!(!verified.is_verified(&sha, &identity));
        let err = read_all(&verified, &path, &sha, size, 1..20)
            .await
            .unwrap_err();
        assert!(err.contains("does not match its SHA-256"), "{err}");
    }

    #[tokio::test]
    async fn a_verified_blob_rewritten_mid_download_never_completes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes, sha) = blob(&dir, 3 * CHUNK);
        let size = bytes.len() as u64;
        let verified = Arc::new(VerifiedBlobs::default());
        read_all(&verified, &path, &sha, size, 0..size)
            .await
            .unwrap();
        let req = ReadRequest {
            sha256_hex: &sha,
            size,
            span: 0..size,
            chunk: CHUNK,
        };
        let mut stream = read_local(verified.clone(), path.clone(), req)
            .await
            .unwrap();
        assert_eq!(stream.try_next().await.unwrap().unwrap(), bytes[..CHUNK]);
        // Rewritten after the first chunk left (a later chunk's bytes, unchanged length).
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[bytes[CHUNK + 1] ^ 1], CHUNK as u64 + 1)
            .unwrap();
        assert!(stream.try_next().await.unwrap().is_some());
        let err = stream.try_next().await.unwrap_err().to_string();
        assert!(err.contains("changed while it was being sent"), "{err}");
    }

    #[tokio::test]
    async fn a_range_of_an_unverified_blob_is_served_only_after_a_whole_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes, sha) = blob(&dir, 2 * CHUNK + 1);
        let size = bytes.len() as u64;
        let verified = Arc::new(VerifiedBlobs::default());
        let got = read_all(&verified, &path, &sha, size, 100..5000)
            .await
            .unwrap();
        assert_eq!(got, bytes[100..5000]);
        let identity = Identity::of_file(&std::fs::metadata(&path).unwrap());
        assert!(
            verified.is_verified(&sha, &identity),
            "the whole hash is remembered"
        );
    }

    #[tokio::test]
    async fn a_truncated_blob_is_an_error_not_a_short_image() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes, sha) = blob(&dir, CHUNK + 10);
        let size = bytes.len() as u64;
        std::fs::write(&path, &bytes[..CHUNK]).unwrap();
        let verified = Arc::new(VerifiedBlobs::default());
        assert!(read_all(&verified, &path, &sha, size, 0..size)
            .await
            .is_err());
        assert!(read_all(&verified, &path, &sha, size, 0..10).await.is_err());
    }

    #[test]
    fn the_memory_is_bounded() {
        let verified = VerifiedBlobs::default();
        let identity = |n: u64| Identity::Object {
            e_tag: format!("e{n}"),
            version: None,
            size: n,
            modified_ms: 0,
        };
        for n in 0..(VERIFIED_CAPACITY as u64 + 5) {
            verified.record(&format!("{n:064x}"), identity(n));
        }
        assert!(verified.seen.lock().unwrap().len() <= VERIFIED_CAPACITY);
        let last = VERIFIED_CAPACITY as u64 + 4;
        assert!(verified.is_verified(&format!("{last:064x}"), &identity(last)));
    }
}
