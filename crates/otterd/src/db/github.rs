//! The storage seam of GitHub Releases as a source (issue 13): which products follow which
//! repository, and every asset the importer looked at.
//!
//! A separate trait from [`super::Database`] (which requires it), as [`super::fleet`] is.

use async_trait::async_trait;

use super::DbResult;

/// A product's follow of a GitHub repository's releases. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct GithubFollowRow {
    pub product_id: i64,
    /// The product's name (joined, not stored).
    pub product: String,
    /// `owner/name`.
    pub repo: String,
    /// Glob (`*`, `?`) over asset names; matching assets are imported.
    pub asset_pattern: String,
    /// Channel the imported releases are published to.
    pub channel: String,
    /// Token for the releases API (private repositories). Never returned by the API or logged.
    pub token: Option<String>,
    /// Assets that are not `release.otter` bundles are signed at import with the server's
    /// `github_import_key_file` (the weaker mode, docs/security.md).
    pub sign_on_import: bool,
    pub created_at: i64,
    pub created_by: String,
    /// When the last poll ended.
    pub last_poll_at: Option<i64>,
    /// Why the last poll failed as a whole (the API unreachable, a wrong token); `None`: it
    /// worked.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for GithubFollowRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubFollowRow")
            .field("product", &self.product)
            .field("repo", &self.repo)
            .field("asset_pattern", &self.asset_pattern)
            .field("channel", &self.channel)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("sign_on_import", &self.sign_on_import)
            .field("last_poll_at", &self.last_poll_at)
            .field("last_error", &self.last_error)
            .finish()
    }
}

/// An asset the importer looked at.
#[derive(Debug, Clone)]
pub struct GithubImportRow {
    pub product_id: i64,
    /// GitHub's id of the asset (a new upload of the same name gets a new id).
    pub asset_id: i64,
    pub tag_name: String,
    pub asset_name: String,
    /// Published (or found published already); `false`: refused, see `reason`.
    pub imported: bool,
    pub release_id: Option<String>,
    pub reason: Option<String>,
    pub at: i64,
}

/// Follows and imports.
#[async_trait]
pub trait GithubStore: Send + Sync {
    /// Creates or replaces a product's follow (its poll status starts empty again).
    async fn put_github_follow(&self, f: &GithubFollowRow) -> DbResult<()>;
    /// A product's follow; `NotFound` when it follows nothing.
    async fn get_github_follow(&self, product_id: i64) -> DbResult<GithubFollowRow>;
    /// Ends a product's follow; its import records stay (so an asset is never imported twice
    /// if the product follows the repository again). `NotFound` when it followed nothing.
    async fn delete_github_follow(&self, product_id: i64) -> DbResult<()>;
    /// Every follow, by product id.
    async fn list_github_follows(&self) -> DbResult<Vec<GithubFollowRow>>;
    /// Records the end of a poll.
    async fn record_github_poll(
        &self,
        product_id: i64,
        at: i64,
        error: Option<&str>,
    ) -> DbResult<()>;
    /// Whether the importer looked at this asset already.
    async fn github_asset_seen(&self, product_id: i64, asset_id: i64) -> DbResult<bool>;
    /// Records an asset the importer looked at (once: a second record of it is ignored).
    async fn record_github_import(&self, r: &GithubImportRow) -> DbResult<()>;
    /// A product's newest import records, newest first.
    async fn list_github_imports(
        &self,
        product_id: i64,
        limit: i64,
    ) -> DbResult<Vec<GithubImportRow>>;
}
