//! The per-instance catalogue cache (docs/api.md "Caching"): product reads and listing pages kept for at
//! most a TTL, bounded in entries, in the memory of one warm instance. Only the read routes use it
//! (product pages, listings, the product names of order details); stock decisions read the table.
//!
//! A product changed by an admin can therefore be seen as it was for up to the TTL by an instance
//! that read it just before. That is the trade the `CatalogueCacheSeconds` parameter sets (0 = off).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use domain::{Product, ProductId};

use crate::products::{ProductCatalog, ProductCursor, ProductFilter};
use crate::{Page, StoreError};

/// Products kept per instance; a Lambda instance's memory is small and a catalogue page is ~1 KiB.
const MAX_PRODUCTS: u64 = 2_000;
/// Listing pages kept per instance (each holds up to 100 products).
const MAX_PAGES: u64 = 200;

type ProductPage = Page<Product, ProductCursor>;

/// Which listing page: its filters, where it resumes and how long it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    scope: String,
    after: Option<(i64, String)>,
    limit: usize,
}

/// Products by id and listing pages, each entry dropped `ttl` after it was read from the table.
pub struct CatalogueCache {
    products: Cache<ProductId, Product>,
    pages: Cache<PageKey, ProductPage>,
}

impl CatalogueCache {
    /// A cache whose entries live `ttl`; `None` when `ttl` is zero (caching off).
    pub fn new(ttl: Duration) -> Option<Arc<Self>> {
        if ttl.is_zero() {
            return None;
        }
        Some(Arc::new(Self {
            products: Cache::builder().max_capacity(MAX_PRODUCTS).time_to_live(ttl).build(),
            pages: Cache::builder().max_capacity(MAX_PAGES).time_to_live(ttl).build(),
        }))
    }

    pub fn product(&self, id: &ProductId) -> Option<Product> {
        self.products.get(id)
    }

    pub fn keep(&self, product: &Product) {
        self.products.insert(product.id.clone(), product.clone());
    }

    /// Splits `ids` into the products cached and the ids still to be read.
    pub fn split<'a>(&self, ids: impl IntoIterator<Item = &'a ProductId>) -> (Vec<Product>, Vec<ProductId>) {
        let mut hits = Vec::new();
        let mut misses = Vec::new();
        for id in ids {
            match self.product(id) {
                Some(product) => hits.push(product),
                None => misses.push(id.clone()),
            }
        }
        (hits, misses)
    }
}

/// A [`ProductCatalog`] served from a [`CatalogueCache`] where it can, from `inner` otherwise.
pub struct CachedCatalog {
    inner: Arc<dyn ProductCatalog>,
    cache: Arc<CatalogueCache>,
}

impl CachedCatalog {
    pub fn new(inner: Arc<dyn ProductCatalog>, cache: Arc<CatalogueCache>) -> Self {
        Self { inner, cache }
    }
}

#[async_trait]
impl ProductCatalog for CachedCatalog {
    async fn get(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        if let Some(product) = self.cache.product(id) {
            return Ok(Some(product));
        }
        // A miss is not remembered: a product created a moment later must be readable at once.
        let product = self.inner.get(id).await?;
        if let Some(product) = &product {
            self.cache.keep(product);
        }
        Ok(product)
    }

    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        let (mut found, misses) = self.cache.split(ids);
        if !misses.is_empty() {
            let read = self.inner.get_many(&misses).await?;
            read.iter().for_each(|product| self.cache.keep(product));
            found.extend(read);
        }
        Ok(found)
    }

    async fn list(
        &self,
        filter: &ProductFilter,
        after: Option<&ProductCursor>,
        limit: usize,
    ) -> Result<ProductPage, StoreError> {
        let key = PageKey {
            scope: filter.scope(),
            after: after.map(|cursor| (cursor.price, cursor.id.clone())),
            limit,
        };
        if let Some(page) = self.cache.pages.get(&key) {
            return Ok(page);
        }
        let page = self.inner.list(filter, after, limit).await?;
        self.cache.pages.insert(key, page.clone());
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryProducts;
    use crate::products::ProductEditor as _;
    use domain::NewProduct;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the reads that reach the table.
    #[derive(Default)]
    struct CountingCatalog {
        products: InMemoryProducts,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl ProductCatalog for CountingCatalog {
        async fn get(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.products.get(id).await
        }
        async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.products.get_many(ids).await
        }
        async fn list(
            &self,
            filter: &ProductFilter,
            after: Option<&ProductCursor>,
            limit: usize,
        ) -> Result<ProductPage, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.products.list(filter, after, limit).await
        }
    }

    fn product(name: &str, price: i64) -> Product {
        NewProduct::parse(name, None, "kitchen", price, None, 5)
            .unwrap()
            .into_product(ProductId::generate(), "2026-01-01T00:00:00Z".into())
    }

    async fn catalogue_of(count: i64, ttl: Duration) -> (CachedCatalog, Arc<CountingCatalog>, Vec<Product>) {
        let table = Arc::new(CountingCatalog::default());
        let mut products = Vec::new();
        for n in 0..count {
            let product = product(&format!("Mug {n}"), 1000 + n);
            table.products.create(&product).await.unwrap();
            products.push(product);
        }
        let cache = CatalogueCache::new(ttl).unwrap();
        (CachedCatalog::new(table.clone(), cache), table, products)
    }

    #[tokio::test]
    async fn hot_products_are_read_from_the_table_once_per_ttl() {
        // Given five products behind a cache of one minute
        let (catalog, table, products) = catalogue_of(5, Duration::from_secs(60)).await;

        // When each is read twenty times
        for _ in 0..20 {
            for product in &products {
                assert_eq!(catalog.get(&product.id).await.unwrap().as_ref(), Some(product));
            }
        }

        // Then the table saw one read per product
        assert_eq!(table.reads.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let (catalog, table, products) = catalogue_of(1, Duration::from_millis(200)).await;
        catalog.get(&products[0].id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        catalog.get(&products[0].id).await.unwrap();
        assert_eq!(table.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unknown_product_is_not_remembered() {
        let (catalog, table, _) = catalogue_of(0, Duration::from_secs(60)).await;
        let late = product("Late", 100);
        assert_eq!(catalog.get(&late.id).await.unwrap(), None);

        // When the product is created after the miss, it is readable at once
        table.products.create(&late).await.unwrap();
        assert_eq!(catalog.get(&late.id).await.unwrap(), Some(late));
    }

    #[tokio::test]
    async fn listing_pages_are_cached_per_filter_cursor_and_limit() {
        let (catalog, table, _) = catalogue_of(3, Duration::from_secs(60)).await;
        let all = ProductFilter::default();
        let first = catalog.list(&all, None, 2).await.unwrap();
        assert_eq!(catalog.list(&all, None, 2).await.unwrap(), first);
        assert_eq!(table.reads.load(Ordering::SeqCst), 1);

        // Another limit, or the next page, is another entry
        catalog.list(&all, None, 3).await.unwrap();
        catalog.list(&all, first.next.as_ref(), 2).await.unwrap();
        assert_eq!(table.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_batch_reads_only_what_is_not_cached() {
        let (catalog, table, products) = catalogue_of(3, Duration::from_secs(60)).await;
        catalog.get(&products[0].id).await.unwrap();
        let ids: Vec<ProductId> = products.iter().map(|p| p.id.clone()).collect();
        assert_eq!(catalog.get_many(&ids).await.unwrap().len(), 3);
        assert_eq!(catalog.get_many(&ids).await.unwrap().len(), 3);
        // One single read, one batch for the two misses, then nothing
        assert_eq!(table.reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_zero_ttl_turns_caching_off() {
        assert!(CatalogueCache::new(Duration::ZERO).is_none());
    }
}
