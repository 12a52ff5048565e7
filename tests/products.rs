//! End-to-end: the catalogue (`/api/products`): creating, reading, updating, listing and paging.
//! Every test puts its products in a category of its own, so listings see only that test's data.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use e2e::{Api, assert_field_error, assert_problem, products_path, unique_category, unknown_id};
use reqwest::Method;
use serde_json::{Value, json};

const PRODUCT_FIELDS: [&str; 9] = [
    "id",
    "name",
    "description",
    "category",
    "price",
    "currency",
    "stock_quantity",
    "created_at",
    "updated_at",
];

/// Query parameters of a listing.
type Query<'a> = &'a [(&'a str, &'a str)];

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

fn prices(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item["price"].as_i64().expect("price"))
        .collect()
}

/// Creates products with these prices (in this order) in `category`; returns them as created.
async fn create_priced(api: &Api, admin: &str, category: &str, price_list: &[i64]) -> Vec<Value> {
    let mut created = Vec::new();
    for (n, price) in price_list.iter().enumerate() {
        created.push(
            api.create_product(admin, &format!("E2E item {n}"), category, *price, 10)
                .await,
        );
    }
    created
}

/// One page of a listing: (items, next_cursor).
async fn page(api: &Api, query: &[(&str, &str)]) -> (Vec<Value>, Option<String>) {
    let reply = api.list_products(query).await;
    let body = reply.expect(200);
    let items = body["items"].as_array().expect("items is an array").clone();
    assert!(
        body.get("next_cursor").is_some(),
        "next_cursor is always present: {}",
        reply.text
    );
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(cursor) => Some(cursor.clone()),
        other => panic!("next_cursor must be a string or null, got {other}"),
    };
    (items, next)
}

// ---------------------------------------------------------------------- create and read

#[tokio::test]
async fn an_admin_creates_a_product_that_anyone_can_read() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();

    // When an admin creates a product without a currency
    let reply = api
        .post_json(
            "/api/products",
            Some(&admin),
            &json!({"name": "Enamel mug", "description": "Blue", "category": category, "price": 1299, "stock_quantity": 7}),
        )
        .await;

    // Then it is created as given, priced in USD by default
    let product = reply.expect(201).clone();
    for field in PRODUCT_FIELDS {
        assert!(product.get(field).is_some(), "product lacks {field}: {product}");
    }
    assert_eq!(product["name"], "Enamel mug");
    assert_eq!(product["description"], "Blue");
    assert_eq!(product["category"], category.as_str());
    assert_eq!(product["price"], 1299);
    assert_eq!(product["currency"], "USD");
    assert_eq!(product["stock_quantity"], 7);

    // And anyone, without a token, reads the same product by id
    let id = product["id"].as_str().expect("id");
    let read = api.get_product(id).await;
    assert_eq!(read.expect(200), &product);

    // And an explicit currency is kept
    let explicit = api
        .post_json(
            "/api/products",
            Some(&admin),
            &json!({"name": "Apron", "category": category, "price": 0, "currency": "USD", "stock_quantity": 0}),
        )
        .await;
    let explicit = explicit.expect(201);
    assert_eq!(explicit["currency"], "USD");
    assert_eq!(explicit["price"], 0);
    assert_eq!(explicit["stock_quantity"], 0);
}

#[tokio::test]
async fn a_customer_cannot_create_products() {
    let api = Api::from_env();
    let customer = api.customer().await;
    let category = unique_category();

    // When a customer tries to create a product
    let reply = api
        .post_json(
            "/api/products",
            Some(&customer.token),
            &json!({"name": "Sneaky", "category": category, "price": 1, "stock_quantity": 1}),
        )
        .await;

    // Then it is forbidden and nothing was created
    assert_problem(&reply, 403);
    assert!(api.category_items(&category, 0).await.is_empty());
}

#[tokio::test]
async fn creating_a_product_without_a_valid_token_is_unauthorized() {
    let api = Api::from_env();
    let category = unique_category();
    let body = json!({"name": "Anon", "category": category, "price": 1, "stock_quantity": 1});

    // When nobody, or a garbage token, tries to create a product
    assert_problem(&api.post_json("/api/products", None, &body).await, 401);
    assert_problem(&api.post_json("/api/products", Some("abc"), &body).await, 401);

    // Then nothing was created
    assert!(api.category_items(&category, 0).await.is_empty());
}

#[tokio::test]
async fn unknown_and_malformed_product_ids_are_not_found() {
    let api = Api::from_env();
    for id in [unknown_id(), "not-an-id".to_owned()] {
        let reply = api.get_product(&id).await;
        assert_eq!(reply.status, 404, "GET /api/products/{id}: {}", reply.describe());
        assert_problem(&reply, 404);
    }
}

// ---------------------------------------------------------------------- update

#[tokio::test]
async fn an_admin_patch_changes_the_price_and_nothing_else() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    let original = api.create_product(&admin, "Teapot", &category, 2500, 12).await;
    let path = format!("/api/products/{}", original["id"].as_str().expect("id"));

    // When an admin changes only the price
    let reply = api.patch_json(&path, Some(&admin), &json!({"price": 1999})).await;

    // Then the price changed and everything else (stock above all) did not
    let updated = reply.expect(200).clone();
    assert_eq!(updated["price"], 1999);
    for field in [
        "id",
        "name",
        "description",
        "category",
        "currency",
        "stock_quantity",
        "created_at",
    ] {
        assert_eq!(updated[field], original[field], "{field} must not change");
    }
    assert!(
        updated["updated_at"].as_str().is_some_and(|at| !at.is_empty()),
        "{updated}"
    );
    // And a read shows the same
    assert_eq!(api.get(&path, None).await.expect(200), &updated);
}

#[tokio::test]
async fn stock_cannot_be_changed_through_patch() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    let original = api.create_product(&admin, "Kettle", &category, 4000, 5).await;
    let path = format!("/api/products/{}", original["id"].as_str().expect("id"));

    // When an admin sends stock_quantity, alone or with a price
    for body in [
        json!({"stock_quantity": 999}),
        json!({"price": 1, "stock_quantity": 999}),
    ] {
        let reply = api.patch_json(&path, Some(&admin), &body).await;
        // Then it is a 400 naming stock_quantity
        assert_field_error(&reply, "stock_quantity");
    }

    // And neither stock nor price changed
    let after = api.get(&path, None).await;
    let after = after.expect(200);
    assert_eq!(after["stock_quantity"], 5);
    assert_eq!(after["price"], 4000);
}

#[tokio::test]
async fn only_admins_may_patch_products() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let customer = api.customer().await;
    let category = unique_category();
    let original = api.create_product(&admin, "Whisk", &category, 800, 3).await;
    let path = format!("/api/products/{}", original["id"].as_str().expect("id"));

    // When a customer, or nobody, tries to change the price
    assert_problem(
        &api.patch_json(&path, Some(&customer.token), &json!({"price": 1})).await,
        403,
    );
    assert_problem(&api.patch_json(&path, None, &json!({"price": 1})).await, 401);

    // Then the product is unchanged
    assert_eq!(api.get(&path, None).await.expect(200), &original);
}

#[tokio::test]
async fn patching_an_unknown_product_is_not_found() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    for id in [unknown_id(), "not-an-id".to_owned()] {
        let reply = api
            .patch_json(&format!("/api/products/{id}"), Some(&admin), &json!({"price": 1}))
            .await;
        assert_eq!(reply.status, 404, "PATCH /api/products/{id}: {}", reply.describe());
        assert_problem(&reply, 404);
    }
    // And nothing was created by the attempt
    assert_problem(&api.get_product(&unknown_id()).await, 404);
}

// ---------------------------------------------------------------------- listing

#[tokio::test]
async fn listing_a_category_shows_exactly_its_products_cheapest_first_with_inclusive_price_filters() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    let created = create_priced(&api, &admin, &category, &[500, 100, 300, 200, 400]).await;
    let created_ids: HashSet<String> = ids(&created).into_iter().collect();

    // When anyone lists the category
    let items = api.category_items(&category, created.len()).await;

    // Then exactly those products come back, cheapest first
    assert_eq!(ids(&items).into_iter().collect::<HashSet<_>>(), created_ids);
    assert_eq!(items.len(), created.len(), "no duplicates");
    assert_eq!(prices(&items), [100, 200, 300, 400, 500]);
    assert!(items.iter().all(|item| item["category"] == category.as_str()));

    // And the price bounds are inclusive on both ends
    let cases: [(Query, &[i64]); 5] = [
        (&[("min_price", "200"), ("max_price", "400")], &[200, 300, 400]),
        (&[("min_price", "300"), ("max_price", "300")], &[300]),
        (&[("min_price", "400")], &[400, 500]),
        (&[("max_price", "200")], &[100, 200]),
        (&[("min_price", "501")], &[]),
    ];
    for (filters, expected) in cases {
        let mut query = vec![("category", category.as_str())];
        query.extend_from_slice(filters);
        let (items, next) = page(&api, &query).await;
        assert_eq!(prices(&items), expected, "filters {filters:?}");
        assert_eq!(next, None, "filters {filters:?}: a complete listing has no next page");
    }
}

#[tokio::test]
async fn paging_with_limit_2_walks_every_product_exactly_once() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    // Equal prices too: the order must still be total, or pages would skip or repeat products
    let created = create_priced(&api, &admin, &category, &[300, 100, 300, 200, 300]).await;
    let created_ids: HashSet<String> = ids(&created).into_iter().collect();
    api.category_items(&category, created.len()).await;

    // When a client walks the category two at a time
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("category", category.as_str()), ("limit", "2")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.as_str()));
        }
        let (items, next) = page(&api, &query).await;
        pages += 1;
        assert!(items.len() <= 2, "page {pages} holds {} items", items.len());
        seen.extend(items);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }

    // Then three pages hold every product exactly once, cheapest first, the last with no next cursor
    assert_eq!(pages, 3, "5 products at 2 per page");
    let seen_ids = ids(&seen);
    assert_eq!(seen_ids.len(), created.len(), "no product repeated: {seen_ids:?}");
    assert_eq!(seen_ids.into_iter().collect::<HashSet<_>>(), created_ids);
    assert_eq!(prices(&seen), [100, 200, 300, 300, 300]);
}

#[tokio::test]
async fn invalid_listing_queries_are_refused() {
    let api = Api::from_env();
    let category = unique_category();

    let cases: [(&str, Query, &str); 9] = [
        ("limit 0", &[("limit", "0")], "limit"),
        ("limit 101", &[("limit", "101")], "limit"),
        ("limit not a number", &[("limit", "abc")], "limit"),
        ("negative min_price", &[("min_price", "-1")], "min_price"),
        ("max_price not a number", &[("max_price", "ten")], "max_price"),
        (
            "min_price above max_price",
            &[("min_price", "500"), ("max_price", "100")],
            "min_price",
        ),
        ("forged cursor", &[("cursor", "abc")], "cursor"),
        ("unknown parameter", &[("sort", "price")], "sort"),
        ("invalid category", &[("category", "Not A Slug!")], "category"),
    ];
    for (what, filters, field) in cases {
        let mut query = vec![("category", category.as_str())];
        query.retain(|(name, _)| !filters.iter().any(|(other, _)| other == name));
        query.extend_from_slice(filters);
        // When the listing is asked for this way
        let reply = api.list_products(&query).await;
        // Then it is a 400 naming the offending parameter
        assert_eq!(
            reply.status,
            400,
            "{what} ({}): {}",
            products_path(&query),
            reply.describe()
        );
        assert_field_error(&reply, field);
    }
}

#[tokio::test]
async fn a_cursor_only_works_for_the_listing_that_issued_it() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let (category, other_category) = (unique_category(), unique_category());
    let (category, other_category) = (category.as_str(), other_category.as_str());
    create_priced(&api, &admin, category, &[100, 200, 300]).await;
    api.category_items(category, 3).await;
    let (_, cursor) = page(&api, &[("category", category), ("limit", "2")]).await;
    let cursor = cursor.expect("a second page exists");

    // Control: the cursor resumes its own listing (with another page size too)
    let (rest, _) = page(&api, &[("category", category), ("limit", "5"), ("cursor", &cursor)]).await;
    assert_eq!(prices(&rest), [300]);

    // When it is used with another filter, another category, no filter, or altered
    // One character in the middle of the signature part, so the decoded bytes really change
    let (payload, tag) = cursor.split_once('.').expect("cursor is <payload>.<tag>");
    let mut tag: Vec<char> = tag.chars().collect();
    let at = tag.len() / 2;
    tag[at] = if tag[at] == 'A' { 'B' } else { 'A' };
    let altered = format!("{payload}.{}", tag.into_iter().collect::<String>());
    let misuses: [(&str, Vec<(&str, &str)>); 5] = [
        (
            "with a price filter",
            vec![("category", category), ("min_price", "0"), ("cursor", &cursor)],
        ),
        (
            "in another category",
            vec![("category", other_category), ("cursor", &cursor)],
        ),
        ("without the category", vec![("cursor", &cursor)]),
        (
            "with one char changed",
            vec![("category", category), ("cursor", &altered)],
        ),
        (
            "truncated",
            vec![("category", category), ("cursor", &cursor[..cursor.len() / 2])],
        ),
    ];
    for (what, query) in misuses {
        let reply = api.list_products(&query).await;
        // Then it is refused as a 400 on the cursor
        assert_eq!(reply.status, 400, "cursor {what}: {}", reply.describe());
        assert_field_error(&reply, "cursor");
    }
}

// ---------------------------------------------------------------------- bad bodies

/// (what, raw body, content type, expected status, field named in errors)
type BadBody = (&'static str, String, &'static str, u16, Option<&'static str>);

#[track_caller]
fn assert_refused(what: &str, reply: &e2e::Reply, status: u16, field: Option<&str>) {
    assert_eq!(reply.status, status, "{what}: {}", reply.describe());
    match field {
        Some(field) => assert_field_error(reply, field),
        None => {
            assert_problem(reply, status);
        }
    }
}

#[tokio::test]
async fn bad_product_creation_bodies_are_refused_and_create_nothing() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    let valid = json!({"name": "Valid", "category": category, "price": 1000, "stock_quantity": 2});
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().expect("object").remove(field);
        body.to_string()
    };

    let cases: Vec<BadBody> = vec![
        (
            "malformed JSON",
            format!(r#"{{"name":"Broken","category":"{category}","price":"#),
            "application/json",
            400,
            Some("body"),
        ),
        ("empty body", String::new(), "application/json", 400, Some("body")),
        (
            "missing price",
            without("price"),
            "application/json",
            400,
            Some("price"),
        ),
        ("missing name", without("name"), "application/json", 400, Some("name")),
        (
            "price as a string",
            with("price", json!("10.00")),
            "application/json",
            400,
            Some("price"),
        ),
        (
            "negative price",
            with("price", json!(-1)),
            "application/json",
            400,
            Some("price"),
        ),
        (
            "unknown field",
            with("discount", json!(5)),
            "application/json",
            400,
            Some("discount"),
        ),
        (
            "an id of its own",
            with("id", json!(unknown_id())),
            "application/json",
            400,
            Some("id"),
        ),
        (
            "unsupported currency",
            with("currency", json!("EUR")),
            "application/json",
            400,
            Some("currency"),
        ),
        (
            "70 000-byte name",
            with("name", json!("n".repeat(70_000))),
            "application/json",
            413,
            None,
        ),
        ("valid body as text/plain", valid.to_string(), "text/plain", 415, None),
    ];
    for (what, body, content_type, status, field) in cases {
        // When an admin sends a product body that is bad in this way
        let reply = api
            .send_raw(Method::POST, "/api/products", Some(&admin), content_type, body)
            .await;
        // Then it is refused with the right problem
        assert_refused(what, &reply, status, field);
    }

    // And nothing was created in the category
    assert!(
        api.category_items(&category, 0).await.is_empty(),
        "refused bodies created products"
    );
    // While the same valid body sent as JSON is accepted (so the refusals were about the body alone)
    let reply = api
        .send_raw(
            Method::POST,
            "/api/products",
            Some(&admin),
            "application/json",
            valid.to_string(),
        )
        .await;
    reply.expect(201);
    assert_eq!(api.category_items(&category, 1).await.len(), 1);
}

#[tokio::test]
async fn bad_product_patch_bodies_are_refused_and_change_nothing() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let category = unique_category();
    let original = api.create_product(&admin, "Ladle", &category, 1500, 4).await;
    let path = format!("/api/products/{}", original["id"].as_str().expect("id"));

    let cases: Vec<BadBody> = vec![
        (
            "malformed JSON",
            r#"{"price":"#.to_owned(),
            "application/json",
            400,
            Some("body"),
        ),
        ("empty body", String::new(), "application/json", 400, Some("body")),
        (
            "no change at all",
            "{}".to_owned(),
            "application/json",
            400,
            Some("body"),
        ),
        (
            "price as a string",
            json!({"price": "10.00"}).to_string(),
            "application/json",
            400,
            Some("price"),
        ),
        (
            "negative price",
            json!({"price": -5}).to_string(),
            "application/json",
            400,
            Some("price"),
        ),
        (
            "unknown field",
            json!({"price": 1, "discount": 5}).to_string(),
            "application/json",
            400,
            Some("discount"),
        ),
        (
            "changing the id",
            json!({"price": 1, "id": unknown_id()}).to_string(),
            "application/json",
            400,
            Some("id"),
        ),
        (
            "70 000-byte name",
            json!({"name": "n".repeat(70_000)}).to_string(),
            "application/json",
            413,
            None,
        ),
        (
            "valid body as text/plain",
            json!({"price": 1}).to_string(),
            "text/plain",
            415,
            None,
        ),
    ];
    for (what, body, content_type, status, field) in cases {
        // When an admin sends a patch that is bad in this way
        let reply = api
            .send_raw(Method::PATCH, &path, Some(&admin), content_type, body)
            .await;
        // Then it is refused with the right problem
        assert_refused(what, &reply, status, field);
    }

    // And the product is exactly as it was
    assert_eq!(api.get(&path, None).await.expect(200), &original);
}

// ---------------------------------------------------------------------- HTTP caching

/// `public, max-age=N, stale-while-revalidate=N` (docs/api.md "Caching"), whatever N the stack was deployed with.
fn assert_public(reply: &e2e::Reply) {
    let cache_control = reply.header("cache-control").unwrap_or_default();
    let parts: Vec<&str> = cache_control.split(", ").collect();
    let seconds = |prefix: &str| {
        parts
            .iter()
            .find_map(|part| part.strip_prefix(prefix))
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(parts.first(), Some(&"public"), "{}", reply.describe());
    assert!(seconds("max-age=").is_some(), "{}", reply.describe());
    assert_eq!(
        seconds("max-age="),
        seconds("stale-while-revalidate="),
        "{}",
        reply.describe()
    );
}

#[tokio::test]
async fn a_product_page_is_revalidated_with_its_etag() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let product = api
        .create_product(&admin, "Cached mug", &unique_category(), 1500, 4)
        .await;
    let path = format!("/api/products/{}", product["id"].as_str().expect("id"));

    // Given a product page read without a token: public, with a strong ETag
    let first = api.get(&path, None).await;
    first.expect(200);
    assert_public(&first);
    let etag = first.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "a strong ETag: {etag}"
    );

    // When the client revalidates with it, the answer is 304 without a body
    let revalidated = api.get_with(&path, None, &[("if-none-match", &etag)]).await;
    assert_eq!(revalidated.status, 304, "{}", revalidated.describe());
    assert!(revalidated.text.is_empty(), "{}", revalidated.describe());
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));

    // And a tag of another representation gets the product again
    let other = api
        .get_with(&path, None, &[("if-none-match", "\"not-this-one\"")])
        .await;
    assert_eq!(other.expect(200), first.expect(200));
}

#[tokio::test]
async fn listings_are_public_and_everything_personal_is_private() {
    let api = Api::from_env();
    let customer = api.customer().await;
    let category = unique_category();

    // A listing without a token is public and can be revalidated
    let listing = api.list_products(&[("category", &category)]).await;
    listing.expect(200);
    assert_public(&listing);
    let etag = listing.header("etag").expect("an ETag").to_owned();
    let path = products_path(&[("category", &category)]);
    assert_eq!(api.get_with(&path, None, &[("if-none-match", &etag)]).await.status, 304);

    // The same listing sent with a token, and every personal or failed answer, is private
    let private = [
        api.get(&path, Some(&customer.token)).await,
        api.get("/api/users/me", Some(&customer.token)).await,
        api.get("/api/orders", Some(&customer.token)).await,
        api.get("/api/notifications/history", Some(&customer.token)).await,
        api.get(&format!("/api/products/{}", unknown_id()), None).await,
    ];
    for reply in private {
        assert_eq!(
            reply.header("cache-control"),
            Some("private, no-store"),
            "{}",
            reply.describe()
        );
    }
}
