//! Publishing a release: the stage → verify → publish → insert protocol, with no HTTP in it
//! (issue 9). `routes::upload` parses a bundle head and hands the image stream here;
//! `routes::promote` reuses the checks. Handlers map [`PublishError`] to status codes.
//!
//! Order of checks (docs/api.md, "Release upload"): the signed head first, before a single
//! image byte is stored ([`prepare`]); then the image streams into `staging/` while it is hashed
//! and counted; then size, hash, image structure and chip; only then the blob goes to its
//! content address and the release row is inserted ([`publish`]). A refusal at any step
//! deletes what was staged and stores nothing. The same signed release again on its channel is
//! answered with the release that is there, after its image was read and matched; nothing is
//! stored.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::Md5;
use otter_core::keys::PublicKey;
use otter_core::manifest::{Envelope, Manifest};
use sha2::{Digest, Sha256};

use crate::auth::new_id;
use crate::blob::{BlobError, StagedBlob};
use crate::db::{DbError, PayloadKind, PayloadRow, ProductRow, ReleaseRow};
use crate::{now, AppState};

/// Why a publication was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The release breaks a rule (signature, expiry, counter, image, size against the manifest).
    #[error("{0}")]
    Refused(String),
    /// The image is larger than `max_upload_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// Another release of this version is on the channel.
    #[error("{0}")]
    Conflict(String),
    /// The image stream broke off (the client's connection, not the release).
    #[error("{0}")]
    Unreadable(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The blob store failed.
    #[error(transparent)]
    Storage(#[from] BlobError),
}

type Result<T, E = PublishError> = std::result::Result<T, E>;

/// What a publication did.
#[derive(Debug)]
pub enum Outcome {
    /// Published by this call.
    Published(ReleaseRow),
    /// This signed manifest was on the channel already: nothing changed.
    Existing(ReleaseRow),
}

/// A signed head that passed [`prepare`].
#[derive(Debug)]
pub struct Prepared {
    /// Key ids whose signatures verified.
    pub signed_by: Vec<String>,
    /// The identical release on the channel, when there is one.
    pub existing: Option<ReleaseRow>,
}

/// What [`publish`] stores, besides the image.
pub struct Publication<'a> {
    pub product: &'a ProductRow,
    pub channel: &'a str,
    pub envelope: &'a Envelope,
    /// The envelope exactly as signed and sent; stored and served verbatim.
    pub envelope_bytes: Vec<u8>,
    /// Name of the credential that publishes.
    pub published_by: &'a str,
}

/// Checks a signed head against the product and the channel, before any image byte is read:
/// signature, expiry, and either "this release is there already" or the publication rules, the
/// upload limit and the version's uniqueness on the channel.
pub async fn prepare(
    state: &AppState,
    product: &ProductRow,
    channel: &str,
    envelope: &Envelope,
    allow_lower_counter: bool,
) -> Result<Prepared> {
    let signed_by = check_envelope(state, product, envelope).await?;
    let manifest = envelope.manifest();
    let on_channel = state
        .db
        .find_release(product.id, channel, &manifest.version)
        .await?;
    if let Some(existing) = on_channel.as_ref().filter(|r| identical(r, envelope)) {
        return Ok(Prepared {
            signed_by,
            existing: Some(existing.clone()),
        });
    }
    check_publish_rules(state, product, channel, manifest, allow_lower_counter).await?;
    check_size(manifest, state.settings.max_upload_bytes)?;
    if let Some(other) = &on_channel {
        return Err(PublishError::Conflict(conflict_message(other, manifest)));
    }
    Ok(Prepared {
        signed_by,
        existing: None,
    })
}

/// Reads the image and publishes the release [`prepare`] accepted. For a release that is
/// there already the image is read and must match; nothing is stored.
pub async fn publish<S, E>(
    state: &AppState,
    p: Publication<'_>,
    prepared: Prepared,
    mut image: S,
) -> Result<Outcome>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let manifest = p.envelope.manifest();
    let expected_size = manifest.image_size as u64;
    if let Some(existing) = prepared.existing {
        check_size(manifest, state.settings.max_upload_bytes)?;
        let (digest, _) = stage_image(&mut image, None, expected_size).await?;
        check_digest(&digest, manifest)?;
        tracing::info!(release = %existing.id, product = %existing.product, version = %existing.version, channel = %existing.channel, by = %p.published_by, "release pushed again: published already");
        return Ok(Outcome::Existing(existing));
    }

    let mut staged = state.blobs.stage();
    let (digest, md5) = match stage_image(&mut image, Some(&mut staged), expected_size).await {
        Ok(d) => d,
        Err(e) => {
            staged.abort().await;
            return Err(e);
        }
    };
    let staged = staged.complete().await?;
    if let Err(e) = check_digest(&digest, manifest) {
        state.blobs.discard(staged).await;
        return Err(e);
    }
    let bytes = match state.blobs.read_staged(&staged).await {
        Ok(b) => b,
        Err(e) => {
            state.blobs.discard(staged).await;
            return Err(e.into());
        }
    };
    let (project_name, idf_version) = match check_image(&bytes, p.product) {
        Ok(v) => v,
        Err(e) => {
            state.blobs.discard(staged).await;
            return Err(e);
        }
    };
    drop(bytes);

    let sha_hex = manifest.image_sha256_hex();
    // Until the release row is in, the blob collector keeps off (crate::blob_gc explains why).
    let _publishing = state.blobs.publishing().await;
    let placed = state.blobs.publish(staged, &sha_hex).await?;
    let row = ReleaseRow {
        id: new_id("rel_"),
        product_id: p.product.id,
        product: p.product.name.clone(),
        channel: p.channel.to_string(),
        version: manifest.version.clone(),
        chip: manifest.chip,
        security_counter: manifest.security_counter as i64,
        size: manifest.image_size as i64,
        sha256: crate::db::Sha256::from_digest(manifest.image_sha256),
        manifest_created_at: manifest.created_at as i64,
        expires_at: manifest.expires_at.map(|e| e as i64),
        envelope: p.envelope_bytes,
        signed_by: prepared.signed_by.join(","),
        project_name,
        idf_version,
        published_at: now(),
        published_by: p.published_by.to_string(),
    };
    // The blob is in place; the release becomes visible with this one insert. A crash before
    // it leaves an unreferenced blob that no route serves (the collector removes it).
    // The full image is the release's first payload; its MD5 (for stock Arduino clients) comes
    // from the same verified bytes.
    let payloads = [PayloadRow {
        release_id: row.id.clone(),
        position: 0,
        kind: PayloadKind::Full,
        size: row.size,
        sha256: row.sha256.clone(),
        md5: Some(hex::encode(md5)),
    }];
    let inserted = state.db.insert_release_with_payloads(&row, &payloads).await;
    // Committed or refused, the blob must be at its address (a lost race references it too).
    state.blobs.settle(placed).await?;
    match inserted {
        Ok(()) => {}
        // The same push ran alongside this one and won: its answer is this one's too.
        Err(DbError::Conflict(_)) => return lost_race(state, &row, p.envelope).await,
        Err(e) => return Err(e.into()),
    }
    metrics::counter!("otter_releases_published_total").increment(1);
    tracing::info!(release = %row.id, product = %row.product, version = %row.version, channel = %row.channel, by = %p.published_by, "release published");
    Ok(Outcome::Published(row))
}

/// After an insert that a unique constraint refused: a request alongside this one published
/// the same version first. The same manifest: that release (nothing changed); another: the
/// conflict.
pub async fn lost_race(state: &AppState, row: &ReleaseRow, envelope: &Envelope) -> Result<Outcome> {
    match state
        .db
        .find_release(row.product_id, &row.channel, &row.version)
        .await?
    {
        Some(other) if identical(&other, envelope) => Ok(Outcome::Existing(other)),
        Some(other) => Err(PublishError::Conflict(conflict_message(
            &other,
            envelope.manifest(),
        ))),
        None => Err(PublishError::Conflict(format!(
            "{} {} is published on channel {:?} already",
            row.product, row.version, row.channel
        ))),
    }
}

/// Whether a stored release is the same release as `envelope`'s manifest: every signed field
/// equal but the creation time. A CI job that runs again for the same tag signs the same image
/// again, which changes only `created_at` (and the signatures); that is no new release, and the
/// stored one, as first signed, stays what devices get.
pub fn identical(r: &ReleaseRow, envelope: &Envelope) -> bool {
    let theirs = envelope.manifest();
    Envelope::decode(&r.envelope).is_ok_and(|stored| {
        Manifest {
            created_at: theirs.created_at,
            ..stored.manifest().clone()
        } == *theirs
    })
}

/// Why a release whose version is on the channel already with another manifest is refused.
pub fn conflict_message(existing: &ReleaseRow, m: &Manifest) -> String {
    let why = if existing.sha256.to_bytes() == m.image_sha256 {
        "with the same image but another signed manifest (another security counter or expiry); \
         give the release a new version"
    } else {
        "with another image; give this release a new version"
    };
    format!(
        "{} {} is published on channel {:?} already as {}, {why}",
        existing.product, existing.version, existing.channel, existing.id
    )
}

/// Checks the signed head against the product, before any image byte is accepted (and a stored
/// envelope again when it is promoted: keys may have been removed, or it may have expired).
/// Returns the key ids whose signatures verified.
pub async fn check_envelope(
    state: &AppState,
    product: &ProductRow,
    envelope: &Envelope,
) -> Result<Vec<String>> {
    let m = envelope.manifest();
    if m.product != product.name {
        return Err(PublishError::Refused(format!(
            "the manifest is signed for product {:?}, not {:?}",
            m.product, product.name
        )));
    }
    if m.chip != product.chip {
        return Err(PublishError::Refused(format!(
            "the manifest targets {}, but product {:?} is for {}",
            m.chip, product.name, product.chip
        )));
    }
    let keys: Vec<PublicKey> = state
        .db
        .list_keys(product.id)
        .await?
        .iter()
        .filter_map(|k| PublicKey::from_pem(&k.public_key_pem).ok())
        .collect();
    if keys.is_empty() {
        return Err(PublishError::Refused(format!(
            "product {:?} has no release keys yet; register one with `otter product key add {} --pub release.pub.pem`",
            product.name, product.name
        )));
    }
    let signed_by = envelope
        .verify(&keys, 1)
        .map_err(|e| PublishError::Refused(format!("signature check failed: {e}")))?;
    if m.expires_at.is_some_and(|e| e as i64 <= now()) {
        return Err(PublishError::Refused(
            "the manifest has expired already; sign it again".into(),
        ));
    }
    Ok(signed_by.iter().map(|k| k.to_string()).collect())
}

/// Refuses what no device can install, a counter below the channel's highest (unless
/// `allow_lower`) and a creation time ahead of the server's clock (otter_core::publish).
pub async fn check_publish_rules(
    state: &AppState,
    product: &ProductRow,
    channel: &str,
    m: &Manifest,
    allow_lower: bool,
) -> Result<()> {
    use otter_core::publish;
    publish::check_installable(m).map_err(|e| PublishError::Refused(e.to_string()))?;
    publish::check_created_at(
        m.created_at,
        now().max(0) as u64,
        state.settings.manifest_max_future_s,
    )
    .map_err(|e| PublishError::Refused(e.to_string()))?;
    let highest = state
        .db
        .highest_counter_release(product.id, channel)
        .await?
        .map(|r| publish::HighestCounter {
            version: r.version,
            security_counter: r.security_counter.clamp(0, u32::MAX as i64) as u32,
        });
    publish::check_counter(channel, m.security_counter, highest.as_ref(), allow_lower)
        .map_err(|e| PublishError::Refused(e.to_string()))?;
    if allow_lower && highest.is_some_and(|h| m.security_counter < h.security_counter) {
        tracing::warn!(product = %product.name, %channel, version = %m.version, counter = m.security_counter, "publishing a security counter below the channel's highest, as the publisher asked");
    }
    Ok(())
}

/// Refuses an image larger than `max_upload_bytes` before a byte of it is read.
pub fn check_size(manifest: &Manifest, limit: u64) -> Result<()> {
    if manifest.image_size as u64 > limit {
        return Err(PublishError::TooLarge(format!(
            "the image has {} bytes; this server accepts at most {limit} (max_upload_bytes)",
            manifest.image_size
        )));
    }
    Ok(())
}

fn check_digest(digest: &[u8; 32], manifest: &Manifest) -> Result<()> {
    if *digest != manifest.image_sha256 {
        return Err(PublishError::Refused(format!(
            "the image's SHA-256 is {}, but the manifest signs {}",
            hex::encode(digest),
            manifest.image_sha256_hex()
        )));
    }
    Ok(())
}

/// Streams the image into staging (or nowhere, for a release that exists already), hashing
/// (SHA-256 and MD5) and counting; refuses too many or too few bytes.
async fn stage_image<S, E>(
    stream: &mut S,
    mut staged: Option<&mut StagedBlob>,
    expected_size: u64,
) -> Result<([u8; 32], [u8; 16])>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (mut hasher, mut md5) = (Sha256::new(), Md5::new());
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| PublishError::Unreadable(format!("reading the upload failed: {e}")))?;
        received += chunk.len() as u64;
        if received > expected_size {
            return Err(PublishError::Refused(format!(
                "the image is longer than the {expected_size} bytes the manifest signs"
            )));
        }
        hasher.update(&chunk);
        md5.update(&chunk);
        if let Some(staged) = staged.as_deref_mut() {
            staged.write(&chunk).await?;
        }
    }
    if received < expected_size {
        return Err(PublishError::Refused(format!(
            "the image has {received} bytes, but the manifest signs {expected_size}"
        )));
    }
    Ok((hasher.finalize().into(), md5.finalize().into()))
}

/// Parses the staged image and checks it against the product's chip; returns the project
/// name and IDF version it declares.
fn check_image(bytes: &[u8], product: &ProductRow) -> Result<(Option<String>, Option<String>)> {
    let info = otter_core::image::parse(bytes)
        .map_err(|e| PublishError::Refused(format!("not a valid firmware image: {e}")))?;
    if info.chip != product.chip {
        return Err(PublishError::Refused(format!(
            "the image is built for {}, but product {:?} is for {}",
            info.chip, product.name, product.chip
        )));
    }
    Ok(match &info.app {
        Some(app) => (Some(app.project_name.clone()), Some(app.idf_ver.clone())),
        None => (None, None),
    })
}
