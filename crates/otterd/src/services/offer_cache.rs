//! What check-ins are offered, answered from memory (issue 10).
//!
//! The rows that decide an offer and are the same for every device of a product (the product,
//! its live rollouts, the images rollouts deliver, a channel's candidate releases, a release or
//! rollout by id) are kept here, tagged with the database's offer generation
//! ([`Database::offer_generation`]). Triggers bump that generation at every change to
//! products, releases, rollouts and rollout stages, whichever code path or instance makes it.
//! Each check-in reads the generation first (one primary-key read) and drops everything when
//! it moved; rows loaded after that read are at least as new as it, so a change committed
//! before a check-in began is always seen by it, on this instance or any other sharing the
//! database. Per-device rows (deployments, tags) are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::db::rollouts::RolloutRow;
use crate::db::{Database, DbResult, ProductRow, ReleaseRow, Sha256};

/// Entries kept at most; past it the cache starts over (a bound on memory, not a policy).
const MAX_ENTRIES: usize = 4096;

/// The cache of one server.
#[derive(Debug, Default)]
pub struct OfferCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: Option<i64>,
    products: HashMap<String, Arc<ProductRow>>,
    live_rollouts: HashMap<i64, Arc<Vec<RolloutRow>>>,
    rolled_out: HashMap<i64, Arc<Vec<Sha256>>>,
    /// By (product, channel, minimum security counter); valid for the second `candidates_at`
    /// only, as expiry is judged against the time.
    candidates: HashMap<(i64, String, i64), Arc<Vec<ReleaseRow>>>,
    candidates_at: i64,
    releases: HashMap<String, Arc<ReleaseRow>>,
    rollouts: HashMap<String, Arc<RolloutRow>>,
}

impl Inner {
    fn len(&self) -> usize {
        self.products.len()
            + self.live_rollouts.len()
            + self.rolled_out.len()
            + self.candidates.len()
            + self.releases.len()
            + self.rollouts.len()
    }
}

/// The rollout states whose rollouts decide offers (`assignment::offer`, rule 3).
pub const LIVE: [&str; 3] = ["running", "paused", "completed"];

/// Reads of one check-in: from the cache when it holds them at the generation read when the
/// check-in began, else from the database (and then kept). Without a cache, all from the
/// database.
pub struct View<'a> {
    pub db: &'a dyn Database,
    cache: Option<(&'a OfferCache, i64)>,
}

// Rows are shared (`Arc`), not copied, with each check-in that reads them; the key is looked
// up borrowed (`$get`) and made owned (`$key`) only to keep a row.
macro_rules! cached {
    ($self:ident, $map:ident, $get:expr, $key:expr, $load:expr) => {{
        let Some((cache, generation)) = $self.cache else {
            return $load.await.map(Arc::new);
        };
        if let Some(v) = cache.lock().$map.get($get) {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new($load.await?);
        let mut inner = cache.lock();
        if inner.generation == Some(generation) {
            if inner.len() >= MAX_ENTRIES {
                inner.clear_rows();
            }
            inner.$map.insert($key, Arc::clone(&v));
        }
        Ok(v)
    }};
}

impl Inner {
    fn clear_rows(&mut self) {
        let generation = self.generation;
        *self = Inner {
            generation,
            ..Inner::default()
        };
    }
}

impl OfferCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A view for one check-in: reads the generation and drops what was kept at another.
    pub async fn view<'a>(&'a self, db: &'a dyn Database) -> DbResult<View<'a>> {
        let generation = db.offer_generation().await?;
        Ok(self.view_at(db, generation))
    }

    /// A view for one check-in at a generation it read itself (with its device, in one
    /// statement: [`crate::db::checkin`]).
    pub fn view_at<'a>(&'a self, db: &'a dyn Database, generation: i64) -> View<'a> {
        let mut inner = self.lock();
        if inner.generation != Some(generation) {
            *inner = Inner {
                generation: Some(generation),
                ..Inner::default()
            };
        }
        View {
            db,
            cache: Some((self, generation)),
        }
    }
}

impl<'a> View<'a> {
    /// Every read from the database.
    pub fn uncached(db: &'a dyn Database) -> Self {
        View { db, cache: None }
    }

    pub async fn product(&self, name: &str) -> DbResult<Arc<ProductRow>> {
        cached!(
            self,
            products,
            name,
            name.to_string(),
            self.db.get_product(name)
        )
    }

    /// The product's running, paused and completed rollouts, newest first.
    pub async fn live_rollouts(&self, product_id: i64) -> DbResult<Arc<Vec<RolloutRow>>> {
        cached!(
            self,
            live_rollouts,
            &product_id,
            product_id,
            self.db.rollouts_in_state(product_id, &LIVE)
        )
    }

    pub async fn rolled_out_images(&self, product_id: i64) -> DbResult<Arc<Vec<Sha256>>> {
        cached!(
            self,
            rolled_out,
            &product_id,
            product_id,
            self.db.rolled_out_images(product_id)
        )
    }

    pub async fn release(&self, id: &str) -> DbResult<Arc<ReleaseRow>> {
        cached!(self, releases, id, id.to_string(), self.db.get_release(id))
    }

    pub async fn rollout(&self, id: &str) -> DbResult<Arc<RolloutRow>> {
        cached!(self, rollouts, id, id.to_string(), self.db.get_rollout(id))
    }

    pub async fn release_candidates(
        &self,
        product_id: i64,
        channel: &str,
        min_security_counter: i64,
        now: i64,
    ) -> DbResult<Arc<Vec<ReleaseRow>>> {
        let load = self
            .db
            .release_candidates(product_id, channel, min_security_counter, now);
        let Some((cache, generation)) = self.cache else {
            return load.await.map(Arc::new);
        };
        let key = (product_id, channel.to_string(), min_security_counter);
        {
            let inner = cache.lock();
            if inner.candidates_at == now {
                if let Some(v) = inner.candidates.get(&key) {
                    return Ok(Arc::clone(v));
                }
            }
        }
        let v = Arc::new(load.await?);
        let mut inner = cache.lock();
        if inner.generation == Some(generation) {
            if inner.candidates_at != now {
                inner.candidates.clear();
                inner.candidates_at = now;
            }
            if inner.len() >= MAX_ENTRIES {
                inner.clear_rows();
                inner.candidates_at = now;
            }
            inner.candidates.insert(key, Arc::clone(&v));
        }
        Ok(v)
    }
}
