//! Hostile GraphQL documents against the limits (`graphql::cost`): each is refused before it is
//! validated, in well under the budget, and the worst document that still passes is measured, so a
//! change that lets it grow fails here.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use async_graphql::Variables;
use async_graphql::parser::parse_query;
use graphql::cost::{LIMITS, PRICED_FIELDS, Refusal, Weight, scan, weigh};
use serde_json::json;

/// How long refusing any document may take (the budget is 50 ms on the deployed function;
/// this runs unoptimised, beside other tests).
const REFUSAL_BUDGET: Duration = Duration::from_millis(50);

/// The document's verdict, from the scan, the parse, the weighing or the weight's check, and how long
/// it took (the fastest of three runs: the figure is the work's, not the scheduler's).
fn judge(document: &str, variables: serde_json::Value) -> (Result<Weight, Refusal>, Duration) {
    let variables = Variables::from_json(variables);
    let run = || {
        let started = Instant::now();
        let verdict = scan(document, &LIMITS).and_then(|()| {
            let parsed = parse_query(document).expect("the document parses");
            let weight = weigh(&parsed, &variables)?;
            weight.check(&LIMITS).map(|()| weight)
        });
        (verdict, started.elapsed())
    };
    let (verdict, first) = run();
    let fastest = (0..2).map(|_| run().1).fold(first, Duration::min);
    (verdict, fastest)
}

#[track_caller]
fn refused(document: &str) -> Refusal {
    let (verdict, took) = judge(document, json!({}));
    let refusal = verdict.expect_err("refused");
    println!("refused in {took:?} ({} bytes): {refusal}", document.len());
    assert!(took < REFUSAL_BUDGET, "refusing took {took:?}");
    refusal
}

#[track_caller]
fn over(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Over { what, .. } => what,
        other => panic!("refused for another reason: {other}"),
    }
}

/// Fragments each spreading the next one twice: `levels` of them expand to 2^levels fields.
fn fragment_chain(levels: usize) -> String {
    let mut document = String::from("query { products { items { ...F0 } } }\n");
    for level in 0..levels {
        document.push_str(&format!(
            "fragment F{level} on Product {{ ...F{next} ...F{next} }}\n",
            next = level + 1
        ));
    }
    document.push_str(&format!("fragment F{levels} on Product {{ id }}\n"));
    document
}

#[test]
fn a_fragment_chain_that_doubles_at_each_level_is_refused_in_linear_time() {
    // The 24-level chain (about 900 bytes) kept the function busy for its whole timeout before.
    for levels in [24, 60] {
        let document = fragment_chain(levels);
        assert!(document.len() < 3_000, "{} bytes", document.len());
        assert_eq!(over(refused(&document)), "fields", "{levels} levels");
    }
}

#[test]
fn fragments_that_spread_each_other_in_a_cycle_are_refused() {
    let document = "{ products { items { ...A } } } fragment A on Product { id ...B } fragment B on Product { ...A }";
    assert!(matches!(refused(document), Refusal::FragmentCycle(_)));
}

#[test]
fn every_alias_of_a_root_field_is_a_read_of_its_own() {
    // 999 aliased `me` (about 10 KB) do not even get parsed
    let aliases: String = (0..999).map(|i| format!("m{i}: me {{ id }} ")).collect();
    assert!(matches!(refused(&format!("{{ {aliases} }}")), Refusal::Bytes(_)));
    // 101 of them: 101 reads
    let aliases: String = (0..101).map(|i| format!("m{i}: me{{id}} ")).collect();
    assert_eq!(over(refused(&format!("{{ {aliases} }}"))), "aliases");
    // 40 listings of one product each: 40 reads, allowed; 101 of them are not
    let listings = |n: usize| -> String {
        let fields: String = (0..n)
            .map(|i| format!("p{i}: products(limit: 1, minPrice: {i}) {{ items {{ id }} }} "))
            .collect();
        format!("{{ {fields} }}")
    };
    let (allowed, _) = judge(&listings(40), json!({}));
    assert_eq!(allowed.expect("40 listings are allowed").storage_reads(), 40);
    let mut limits = LIMITS;
    limits.max_aliases = 1_000;
    let document = listings(101);
    let weight = weigh(&parse_query(&document).unwrap(), &Variables::default()).unwrap();
    assert_eq!(weight.storage_reads(), 101);
    assert!(matches!(
        weight.check(&limits),
        Err(Refusal::Over {
            what: "storage reads",
            ..
        })
    ));
}

#[test]
fn aliases_directives_tokens_and_nesting_are_bounded() {
    let typenames: String = (0..51).map(|i| format!("t{i}: __typename ")).collect();
    assert_eq!(over(refused(&format!("{{ {typenames} }}"))), "aliases");
    let directives: String = (0..51).map(|_| "__typename @include(if: true) ").collect();
    assert_eq!(over(refused(&format!("{{ {directives} }}"))), "directives");
    let names: String = (0..2_001).map(|_| "a ").collect();
    assert!(matches!(refused(&format!("{{ {names} }}")), Refusal::Tokens(_)));
    let nested = format!("{}{}", "{ a ".repeat(40), "}".repeat(40));
    assert!(matches!(refused(&nested), Refusal::Nesting(_)));
    let deep = format!("{{ me {}id{} }}", "{ a ".repeat(12), " }".repeat(12));
    assert_eq!(over(refused(&deep)), "depth");
    // Strings and comments are one token, or none: their brackets do not nest
    let quoted = format!(
        "{{ products(category: \"{}\") {{ items {{ id }} }} }} # {}",
        "{".repeat(500),
        "[".repeat(500)
    );
    let (verdict, _) = judge(&quoted, json!({}));
    assert!(verdict.is_ok(), "{verdict:?}");
}

#[test]
fn one_request_places_at_most_one_order_and_writes_at_most_four_times() {
    let place = |alias: &str| format!("{alias}: placeOrder(items: [{{productId: \"p\", quantity: 1}}]) {{ id }}");
    let one = format!("mutation {{ {} }}", place("a"));
    let (verdict, _) = judge(&one, json!({}));
    assert_eq!(verdict.expect("one placement").writes, 2);
    assert_eq!(
        over(refused(&format!("mutation {{ {} {} }}", place("a"), place("b")))),
        "placements"
    );
    let cancels: String = (0..5)
        .map(|i| format!("c{i}: cancelOrder(id: \"o\") {{ id }} "))
        .collect();
    assert_eq!(over(refused(&format!("mutation {{ {cancels} }}"))), "storage writes");
}

#[test]
fn a_listings_page_size_comes_from_its_limit_or_its_variable() {
    let document = "query($n: Int) { orders(limit: $n) { items { items { product { id } } } } }";
    // 1 listing read, 1 related batch per occurrence, and 100 orders x 50 lines of product keys
    let (largest, _) = judge(document, json!({"n": 100}));
    assert_eq!(largest.unwrap().storage_reads(), 1 + 1 + 50);
    let (small, _) = judge(document, json!({"n": 2}));
    assert_eq!(small.unwrap().storage_reads(), 1 + 1 + 1);
    // Not given: its default may be anything, so the largest page is assumed
    let (unknown, _) = judge(document, json!({}));
    assert_eq!(unknown.unwrap().storage_reads(), 1 + 1 + 50);
}

#[test]
fn the_heaviest_useful_query_fits_and_its_measure_is_pinned() {
    // A client's dashboard: its account, a full page of orders with buyers and products, and the
    // cheapest page of the catalogue.
    let document = "{ me { id name } \
        orders(limit: 100) { items { id status user { name } items { quantity product { name price } } } nextCursor } \
        products(limit: 100) { items { id name price } } }";
    let (verdict, _) = judge(document, json!({}));
    let weight = verdict.expect("allowed");
    // 3 root reads, 2 related batches, 100 x (1 user + 50 products) keys in 51 batches
    assert_eq!(weight.storage_reads(), 3 + 2 + 51, "{weight:?}");
    assert!(weight.storage_reads() <= LIMITS.max_reads);
    assert_eq!(weight.writes, 0);
}

#[test]
fn every_root_field_and_relation_of_the_schema_is_priced() {
    let sdl = async_graphql::parser::parse_schema(graphql::sdl()).expect("the schema parses");
    let mut fields = Vec::new();
    for definition in &sdl.definitions {
        if let async_graphql::parser::types::TypeSystemDefinition::Type(ty) = definition
            && let async_graphql::parser::types::TypeKind::Object(object) = &ty.node.kind
        {
            for field in &object.fields {
                fields.push((ty.node.name.node.to_string(), field.node.name.node.to_string()));
            }
        }
    }
    for (ty, field) in PRICED_FIELDS {
        assert!(
            fields.iter().any(|(t, f)| t == ty && f == field),
            "{ty}.{field} is priced but not in the schema"
        );
    }
    // Every root field, and every field that loads a related record, must have a price
    for (ty, field) in &fields {
        let must_be_priced = matches!(ty.as_str(), "Query" | "Mutation")
            || (ty == "Order" && field == "user")
            || (ty == "OrderLine" && field == "product");
        if must_be_priced {
            assert!(
                PRICED_FIELDS.contains(&(ty.as_str(), field.as_str())),
                "{ty}.{field} reads storage but has no price in graphql::cost"
            );
        }
    }
}
