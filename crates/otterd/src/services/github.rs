//! GitHub Releases as a source (issue 13; docs/arduino.md, "Migrating from GitHub Releases"):
//! a product follows a repository; [`poll_all`] (a background job, `github_poll_interval_s`)
//! lists each followed repository's newest releases (`GET {github_api_url}/repos/{o}/{r}/releases`),
//! downloads every new asset whose name matches the follow's pattern itself (following GitHub's
//! redirect to its asset host, so devices never have to), and publishes it through
//! [`release::prepare`] and [`release::publish`], exactly as an upload: a `release.otter` bundle
//! signed in CI by one of the product's keys. Every asset looked at is recorded, imported or
//! refused with its reason, so each is fetched once; a refusal is logged and shown with the
//! follow. Failures that say nothing about the asset (GitHub unreachable, a timeout, the
//! database) record nothing for it, so the next poll tries again, and set the follow's
//! `last_error`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use otter_core::keys::PrivateKey;
use otter_core::manifest::{
    self, BundleHead, Envelope, Manifest, BUNDLE_HEAD_LEN, MAX_ENVELOPE_LEN,
};
use serde::Deserialize;

use crate::db::github::{GithubFollowRow, GithubImportRow};
use crate::services::release::{self, Outcome, PublishError};
use crate::{now, AppState};

/// Largest release list read from the API (100 releases with many assets stay far below).
const LIST_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A release as `GET /repos/{owner}/{repo}/releases` lists it (the fields Otter reads).
#[derive(Debug, Clone, Deserialize)]
pub struct GhRelease {
    pub id: i64,
    pub tag_name: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub assets: Vec<GhAsset>,
}

/// One asset of a release.
#[derive(Debug, Clone, Deserialize)]
pub struct GhAsset {
    pub id: i64,
    pub name: String,
    /// The API URL of the asset: with `Accept: application/octet-stream` it redirects to the
    /// bytes (and works for private repositories with a token).
    pub url: String,
    #[serde(default)]
    pub browser_download_url: String,
    pub size: u64,
    #[serde(default)]
    pub content_type: String,
}

/// `owner/name` as GitHub allows them.
pub fn check_repo(repo: &str) -> Result<(), String> {
    let ok = repo.split_once('/').is_some_and(|(o, n)| {
        (1..=39).contains(&o.len())
            && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && (1..=100).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && n != "."
            && n != ".."
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "repository {repo:?} must be owner/name (letters, digits, '-'; the name also '.', '_')"
        ))
    }
}

/// A glob over asset names: `*` any run, `?` one character; 1 to 100 printable characters.
pub fn check_pattern(p: &str) -> Result<(), String> {
    if (1..=100).contains(&p.len()) && p.chars().all(|c| !c.is_control()) {
        Ok(())
    } else {
        Err("asset pattern must be 1 to 100 printable characters (a glob: * and ?)".into())
    }
}

/// Whether `name` matches the glob `pattern` (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The HTTP client of the importer: `github_timeout_s` per request, at most 5 redirects.
pub fn client(state: &AppState) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(state.settings.github_timeout_s))
        .connect_timeout(Duration::from_secs(state.settings.github_timeout_s.min(30)))
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("otterd/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Polls every followed repository once. A follow's failure is recorded with it and does not
/// stop the others.
pub async fn poll_all(state: &AppState) -> anyhow::Result<()> {
    let follows = state.db.list_github_follows().await?;
    if follows.is_empty() {
        return Ok(());
    }
    let http = client(state)?;
    for f in follows {
        let error = match poll_one(state, &http, &f).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(product = %f.product, repo = %f.repo, error = %e, "GitHub follow: the poll failed; trying again at the next one");
                Some(e)
            }
        };
        state
            .db
            .record_github_poll(f.product_id, now(), error.as_deref())
            .await?;
    }
    Ok(())
}

/// Polls one product's follow now (after it was set, so the operator does not wait for the
/// next interval). A poll running alongside is harmless: publishing the same bundle twice
/// changes nothing and an asset is recorded once.
pub async fn poll_product(state: &AppState, product_id: i64) -> anyhow::Result<()> {
    let f = state.db.get_github_follow(product_id).await?;
    let http = client(state)?;
    let error = poll_one(state, &http, &f).await.err();
    if let Some(e) = &error {
        tracing::warn!(product = %f.product, repo = %f.repo, error = %e, "GitHub follow: the poll failed; trying again at the next one");
    }
    state
        .db
        .record_github_poll(f.product_id, now(), error.as_deref())
        .await?;
    Ok(())
}

/// Reads a response body of at most `max` bytes.
async fn read_bounded(resp: reqwest::Response, max: usize, what: &str) -> Result<Bytes, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("{what} is larger than {max} bytes"));
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading {what} failed: {e}"))?;
        if buf.len() + chunk.len() > max {
            return Err(format!("{what} is larger than {max} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn authorised(req: reqwest::RequestBuilder, f: &GithubFollowRow) -> reqwest::RequestBuilder {
    let req = req
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28");
    match &f.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// The newest releases of the follow's repository, newest first as GitHub lists them.
pub async fn list_releases(
    state: &AppState,
    http: &reqwest::Client,
    f: &GithubFollowRow,
) -> Result<Vec<GhRelease>, String> {
    let url = format!(
        "{}/repos/{}/releases?per_page={}",
        state.settings.github_api_url.trim_end_matches('/'),
        f.repo,
        state.settings.github_releases_per_poll
    );
    let resp = authorised(http.get(&url), f)
        .send()
        .await
        .map_err(|e| format!("listing the releases of {} failed: {e}", f.repo))?;
    let status = resp.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 => ": the token is not valid",
            403 | 429 => ": refused or rate-limited by GitHub (a token raises the limit)",
            404 => ": no such repository, or a private one (set a token with read access)",
            _ => "",
        };
        return Err(format!(
            "GitHub answered {status} for the releases of {}{hint}",
            f.repo
        ));
    }
    let body = read_bounded(resp, LIST_MAX_BYTES, "the release list").await?;
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "the release list of {} is not what GitHub sends: {e}",
            f.repo
        )
    })
}

/// One poll of one follow: imports the new matching assets of its newest published releases,
/// oldest release first (so versions and security counters arrive in their order).
async fn poll_one(
    state: &AppState,
    http: &reqwest::Client,
    f: &GithubFollowRow,
) -> Result<(), String> {
    let releases = list_releases(state, http, f).await?;
    let product = state
        .db
        .get_product(&f.product)
        .await
        .map_err(|e| e.to_string())?;
    for rel in releases
        .iter()
        .take(state.settings.github_releases_per_poll as usize)
        .rev()
        .filter(|r| !r.draft && !r.prerelease)
    {
        for asset in rel
            .assets
            .iter()
            .filter(|a| glob_match(&f.asset_pattern, &a.name))
        {
            if state
                .db
                .github_asset_seen(f.product_id, asset.id)
                .await
                .map_err(|e| e.to_string())?
            {
                continue;
            }
            let result = import_asset(state, http, f, &product, &rel.tag_name, asset).await?;
            let (imported, release_id, reason) = match result {
                Ok(id) => (true, Some(id), None),
                Err(reason) => {
                    metrics::counter!("otter_github_assets_refused_total").increment(1);
                    tracing::warn!(product = %f.product, repo = %f.repo, tag = %rel.tag_name, asset = %asset.name, reason = %reason, "GitHub follow: asset refused, not imported");
                    (false, None, Some(reason))
                }
            };
            state
                .db
                .record_github_import(&GithubImportRow {
                    product_id: f.product_id,
                    asset_id: asset.id,
                    tag_name: rel.tag_name.clone(),
                    asset_name: asset.name.clone(),
                    imported,
                    release_id,
                    reason,
                    at: now(),
                })
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Downloads one asset and publishes it. `Ok(Ok(release id))`: published (or published
/// already); `Ok(Err(reason))`: the asset is refused for good; `Err`: a failure to try again.
async fn import_asset(
    state: &AppState,
    http: &reqwest::Client,
    f: &GithubFollowRow,
    product: &crate::db::ProductRow,
    tag: &str,
    asset: &GhAsset,
) -> Result<Result<String, String>, String> {
    let max = state.settings.max_upload_bytes as usize + BUNDLE_HEAD_LEN + MAX_ENVELOPE_LEN;
    if asset.size > max as u64 {
        return Ok(Err(format!(
            "the asset is {} bytes, more than a release may be (max_upload_bytes {})",
            asset.size, state.settings.max_upload_bytes
        )));
    }
    let req = match &f.token {
        Some(t) => http.get(&asset.url).bearer_auth(t),
        None => http.get(&asset.url),
    };
    // reqwest drops the Authorization header when a redirect leaves the API's host.
    let resp = req
        .header("Accept", "application/octet-stream")
        .send()
        .await
        .map_err(|e| format!("downloading {} failed: {e}", asset.name))?;
    if !resp.status().is_success() {
        return Err(format!(
            "downloading {} failed: GitHub answered {}",
            asset.name,
            resp.status()
        ));
    }
    let bytes = match read_bounded(resp, max, &asset.name).await {
        Ok(b) => b,
        Err(e) if e.contains("larger than") => return Ok(Err(e)),
        Err(e) => return Err(e),
    };
    let is_bundle = bytes.len() >= BUNDLE_HEAD_LEN && {
        let fixed: [u8; BUNDLE_HEAD_LEN] =
            bytes[..BUNDLE_HEAD_LEN].try_into().expect("length checked");
        BundleHead::envelope_len(&fixed).is_ok()
    };
    if !is_bundle && f.sign_on_import {
        return sign_at_import(state, f, product, tag, bytes).await;
    }
    publish_bundle(state, f, product, bytes).await
}

/// The weaker mode (docs/security.md): signs a plain firmware image with the server's
/// `github_import_key_file` and publishes it. Its version is the image's own
/// (`esp_app_desc_t`), else the release's tag without a leading `v`.
async fn sign_at_import(
    state: &AppState,
    f: &GithubFollowRow,
    product: &crate::db::ProductRow,
    tag: &str,
    image: Bytes,
) -> Result<Result<String, String>, String> {
    // A missing or unreadable key is the server's configuration, not the asset's fault: the
    // asset is tried again once it is fixed.
    let path =
        state.settings.github_import_key_file.as_ref().ok_or(
            "the follow signs assets at import, but the server has no github_import_key_file",
        )?;
    let pem = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read github_import_key_file {}: {e}", path.display()))?;
    let key = PrivateKey::from_pem(&pem)
        .map_err(|e| format!("github_import_key_file {}: {e}", path.display()))?;
    let info = match otter_core::image::parse(&image) {
        Ok(i) => i,
        Err(e) => return Ok(Err(format!("not a valid firmware image: {e}"))),
    };
    let version = info
        .app
        .as_ref()
        .map(|a| a.version.clone())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| tag.strip_prefix(['v', 'V']).unwrap_or(tag).to_string());
    if let Err(e) = manifest::check_version(&version) {
        return Ok(Err(format!(
            "version {version:?} (from the image or the tag): {e}"
        )));
    }
    let Some(size) = u32::try_from(image.len())
        .ok()
        .filter(|s| *s <= manifest::MAX_IMAGE_SIZE)
    else {
        return Ok(Err("the image is larger than a release may be".into()));
    };
    let m = Manifest {
        product: product.name.clone(),
        chip: info.chip,
        version,
        security_counter: 0,
        image_size: size,
        image_sha256: info.sha256,
        created_at: now().max(0) as u64,
        expires_at: None,
        delta_base_sha256: None,
    };
    let envelope = match Envelope::sign(&m, &[&key]) {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("cannot sign: {e}"))),
    };
    let envelope_bytes = envelope.encode();
    let by = format!("github:{} (signed at import)", f.repo);
    publish_envelope(state, f, product, &envelope, envelope_bytes, image, &by).await
}

/// Publishes a downloaded `release.otter` bundle as an upload would be.
async fn publish_bundle(
    state: &AppState,
    f: &GithubFollowRow,
    product: &crate::db::ProductRow,
    bytes: Bytes,
) -> Result<Result<String, String>, String> {
    let not_bundle = |e: String| {
        Ok(Err(format!(
            "not a release.otter bundle signed for Otter ({e}); sign the firmware with `otter sign` in CI and attach the bundle"
        )))
    };
    if bytes.len() < BUNDLE_HEAD_LEN {
        return not_bundle(format!("only {} bytes", bytes.len()));
    }
    let fixed: [u8; BUNDLE_HEAD_LEN] = bytes[..BUNDLE_HEAD_LEN].try_into().expect("length checked");
    let env_len = match BundleHead::envelope_len(&fixed) {
        Ok(n) => n,
        Err(e) => return not_bundle(e.to_string()),
    };
    if bytes.len() < BUNDLE_HEAD_LEN + env_len {
        return not_bundle("it ends inside its head".into());
    }
    let head = match BundleHead::decode(&bytes) {
        Ok(h) => h,
        Err(e) => return not_bundle(e.to_string()),
    };
    let envelope_bytes = bytes[BUNDLE_HEAD_LEN..head.head_len].to_vec();
    let image = bytes.slice(head.head_len..);
    let by = format!("github:{}", f.repo);
    publish_envelope(
        state,
        f,
        product,
        &head.envelope,
        envelope_bytes,
        image,
        &by,
    )
    .await
}

/// Publishes a signed envelope and its image exactly as an upload: [`release::prepare`], then
/// [`release::publish`]. Refusals are `Ok(Err(reason))`; storage failures `Err`.
async fn publish_envelope(
    state: &AppState,
    f: &GithubFollowRow,
    product: &crate::db::ProductRow,
    envelope: &Envelope,
    envelope_bytes: Vec<u8>,
    image: Bytes,
    published_by: &str,
) -> Result<Result<String, String>, String> {
    let refused = |e: PublishError| -> Result<Result<String, String>, String> {
        match e {
            PublishError::Refused(m)
            | PublishError::TooLarge(m)
            | PublishError::Conflict(m)
            | PublishError::Unreadable(m) => Ok(Err(m)),
            PublishError::Db(e) => Err(e.to_string()),
            PublishError::Storage(e) => Err(e.to_string()),
        }
    };
    let prepared = match release::prepare(state, product, &f.channel, envelope, false).await {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let publication = release::Publication {
        product,
        channel: &f.channel,
        envelope,
        envelope_bytes,
        published_by,
    };
    let stream = futures::stream::iter([Ok::<Bytes, std::io::Error>(image)]);
    match release::publish(state, publication, prepared, stream).await {
        Ok(Outcome::Published(row)) => {
            tracing::info!(product = %f.product, repo = %f.repo, release = %row.id, version = %row.version, by = %published_by, "GitHub follow: release imported");
            Ok(Ok(row.id))
        }
        Ok(Outcome::Existing(row)) => Ok(Ok(row.id)),
        Err(e) => refused(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("*.otter", "release.otter"));
        assert!(glob_match("*.otter", ".otter"));
        assert!(!glob_match("*.otter", "release.otter.sig"));
        assert!(glob_match("fw-?.*", "fw-1.bin"));
        assert!(!glob_match("fw-?.*", "fw-12.bin"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact.bin", "exact.bin"));
    }

    #[test]
    fn repositories_are_owner_slash_name() {
        assert!(check_repo("otter-dev/thermo.fw").is_ok());
        for bad in ["thermo", "a/b/c", "/x", "x/", "o/..", "o w/n", "o/n?x"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_release_list_parses_from_githubs_shape() {
        let json = r#"[{"url":"https://api.github.com/repos/o/r/releases/1","id":1,
            "tag_name":"v1.0.0","name":"1.0.0","draft":false,"prerelease":false,
            "created_at":"2026-01-01T00:00:00Z","published_at":"2026-01-01T00:00:00Z",
            "assets":[{"url":"https://api.github.com/repos/o/r/releases/assets/9","id":9,
            "name":"release.otter","label":null,"content_type":"application/octet-stream",
            "state":"uploaded","size":1234,"download_count":0,
            "browser_download_url":"https://github.com/o/r/releases/download/v1.0.0/release.otter"}]}]"#;
        let list: Vec<GhRelease> = serde_json::from_str(json).unwrap();
        assert_eq!(list[0].assets[0].id, 9);
        assert_eq!(list[0].assets[0].size, 1234);
    }
}
