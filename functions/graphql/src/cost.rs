//! What a GraphQL document may cost, measured before async-graphql validates it (its validation
//! expands every fragment spread anew, so a few hundred bytes of fragments that each spread the next
//! twice would keep it busy for seconds).
//!
//! - [`scan`] reads the text once: tokens and bracket nesting, bounded before the parser (a recursive
//!   descent over pest) sees it.
//! - [`weigh`] walks the parsed document once: each fragment is weighed once and its weight reused
//!   at every spread (memoised), so the walk is linear in the text however the fragments multiply.
//!   The weight counts the fields, aliases and directives once every fragment is expanded, the
//!   deepest nesting, and what the storage would be asked: every root field reads once per alias,
//!   related users and products are read in batches of at most [`MAX_BATCH`] keys, and a list
//!   multiplies the keys under it by its largest size.

use std::collections::HashMap;

use async_graphql::Name;
use async_graphql::Variables;
use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql_value::{ConstValue, Value};

use crate::loader::MAX_BATCH;

/// Bounds of one request's document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_tokens: u64,
    /// Brackets (`{`, `[`, `(`) open at once.
    pub max_nesting: u64,
    /// Selections (fields, fragment spreads, inline fragments) once every fragment is expanded.
    pub max_fields: u64,
    pub max_aliases: u64,
    pub max_directives: u64,
    /// Field nesting (`{ a { b } }` is 2).
    pub max_depth: u64,
    /// DynamoDB reads (requests) the request may cause.
    pub max_reads: u64,
    /// DynamoDB writes the request may cause.
    pub max_writes: u64,
    /// `placeOrder`s in one request: one, as `POST /api/orders` places one, so that each placement
    /// is one request to the per-client rate limit and the route's throttle.
    pub max_placements: u64,
}

/// The deployed limits.
pub const LIMITS: Limits = Limits {
    max_bytes: 8 * 1024,
    max_tokens: 2_000,
    max_nesting: 32,
    max_fields: 2_000,
    max_aliases: 50,
    max_directives: 50,
    max_depth: 12,
    max_reads: 100,
    max_writes: 4,
    max_placements: 1,
};

/// Why a document is refused, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("The query is too large: {0} bytes (at most {max}).", max = LIMITS.max_bytes)]
    Bytes(usize),
    #[error("The query has too many tokens: more than {0}.")]
    Tokens(u64),
    #[error("The query nests brackets too deep: more than {0} levels.")]
    Nesting(u64),
    #[error("The query is too complex: {what} {found} (at most {max}).")]
    Over { what: &'static str, found: u64, max: u64 },
    #[error("The query's fragments spread each other in a cycle ({0}).")]
    FragmentCycle(String),
}

/// Reads the text once: refuses it when it is too long, has too many tokens or nests brackets too
/// deep. Strings, block strings and comments are skipped as GraphQL's lexer skips them.
pub fn scan(text: &str, limits: &Limits) -> Result<(), Refusal> {
    if text.len() > limits.max_bytes {
        return Err(Refusal::Bytes(text.len()));
    }
    let bytes = text.as_bytes();
    let (mut tokens, mut nesting, mut at) = (0u64, 0u64, 0usize);
    let mut word = false;
    while let Some(&byte) = bytes.get(at) {
        let mut ends_word = true;
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {}
            b'#' => {
                while bytes.get(at).is_some_and(|&b| b != b'\n') {
                    at += 1;
                }
            }
            b'"' if bytes.get(at..at + 3) == Some(b"\"\"\"") => {
                tokens += 1;
                at += 3;
                while at < bytes.len() && bytes.get(at..at + 3) != Some(b"\"\"\"") {
                    at += if bytes.get(at..at + 4) == Some(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                at += 2;
            }
            b'"' => {
                tokens += 1;
                at += 1;
                while bytes.get(at).is_some_and(|&b| b != b'"' && b != b'\n') {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                tokens += 1;
                nesting += 1;
                if nesting > limits.max_nesting {
                    return Err(Refusal::Nesting(limits.max_nesting));
                }
            }
            b'}' | b']' | b')' => {
                tokens += 1;
                nesting = nesting.saturating_sub(1);
            }
            b'.' if bytes.get(at..at + 3) == Some(b"...") => {
                tokens += 1;
                at += 2;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'+' | b'.' => {
                // Names and numbers: one token per run of their characters.
                tokens += u64::from(!word);
                ends_word = false;
            }
            _ => tokens += 1,
        }
        word = !ends_word;
        if tokens > limits.max_tokens {
            return Err(Refusal::Tokens(limits.max_tokens));
        }
        at += 1;
    }
    Ok(())
}

/// What a selection asks for once expanded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Weight {
    pub fields: u64,
    pub aliases: u64,
    pub directives: u64,
    pub depth: u64,
    /// Reads made once whatever the lists' sizes: root fields, and one batch per related field.
    pub reads: u64,
    /// Related keys (users, products) to load, before batching.
    pub keys: u64,
    pub writes: u64,
    pub placements: u64,
}

impl Weight {
    /// Storage reads: the fixed ones, and the related keys in batches.
    pub fn storage_reads(&self) -> u64 {
        self.reads.saturating_add(self.keys.div_ceil(MAX_BATCH as u64))
    }

    fn and(self, other: Weight) -> Weight {
        Weight {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
            directives: self.directives.saturating_add(other.directives),
            depth: self.depth.max(other.depth),
            reads: self.reads.saturating_add(other.reads),
            keys: self.keys.saturating_add(other.keys),
            writes: self.writes.saturating_add(other.writes),
            placements: self.placements.saturating_add(other.placements),
        }
    }

    /// The larger of each count of two weights (of two operations: one of them runs).
    fn max(self, other: Weight) -> Weight {
        Weight {
            fields: self.fields.max(other.fields),
            aliases: self.aliases.max(other.aliases),
            directives: self.directives.max(other.directives),
            depth: self.depth.max(other.depth),
            reads: self.reads.max(other.reads),
            keys: self.keys.max(other.keys),
            writes: self.writes.max(other.writes),
            placements: self.placements.max(other.placements),
        }
    }

    /// The weight of a selection made for each of at most `size` items: the related keys it loads
    /// multiply, and with `resolved` its fields too (a page's items; an order's lines are resolved
    /// from the order already read, a few fields each).
    fn times(self, size: u64, resolved: bool) -> Weight {
        Weight {
            fields: if resolved {
                self.fields.saturating_mul(size)
            } else {
                self.fields
            },
            keys: self.keys.saturating_mul(size),
            ..self
        }
    }

    /// Checks the expanded weight against `limits`.
    pub fn check(&self, limits: &Limits) -> Result<(), Refusal> {
        let over = |what, found, max| (found > max).then_some(Refusal::Over { what, found, max });
        [
            over("depth", self.depth, limits.max_depth),
            over("fields", self.fields, limits.max_fields),
            over("aliases", self.aliases, limits.max_aliases),
            over("directives", self.directives, limits.max_directives),
            over("storage reads", self.storage_reads(), limits.max_reads),
            over("storage writes", self.writes, limits.max_writes),
            over("placements", self.placements, limits.max_placements),
        ]
        .into_iter()
        .flatten()
        .next()
        .map_or(Ok(()), Err)
    }
}

/// The largest page a listing serves, and the size it serves without `limit`
/// (`api::listing::limit_of`).
const MAX_PAGE: u64 = 100;
const DEFAULT_PAGE: u64 = 20;

/// What a field of the schema does to the weight, and the type it leads to.
enum FieldKind {
    /// A root read (`product`, `me`, `order`): one read.
    Read(&'static str),
    /// A root listing: one read, its page's `items` as many as its `limit`.
    Listing(&'static str),
    /// A page's `items`, as many as the listing's `limit`.
    PageItems(&'static str),
    /// A list of at most this many items.
    List(&'static str, u64),
    /// A related record loaded in batches: one key per occurrence.
    Related(&'static str),
    /// A mutation: its reads and writes.
    Mutation(&'static str, u64, u64),
    /// `placeOrder`: a mutation that places an order.
    Placement(&'static str, u64, u64),
    /// Anything else (scalars, `__typename`, introspection): no storage.
    Plain,
}

/// The schema's fields that read or write storage or lead to lists, by (type, field). A field not
/// here costs nothing but itself (the schema test keeps this table and `schema.graphql` in step).
fn kind(parent: &str, field: &str) -> FieldKind {
    use FieldKind::*;
    match (parent, field) {
        ("Query", "products") => Listing("ProductPage"),
        ("Query", "orders") => Listing("OrderPage"),
        ("Query", "product") => Read("Product"),
        ("Query", "me") => Read("User"),
        ("Query", "order") => Read("Order"),
        // The placement reads the catalogue (one batch), claims the idempotency key and commits the
        // order with its stock in one transaction; a cancellation reads the order and commits.
        ("Mutation", "placeOrder") => Placement("Order", 1, 2),
        ("Mutation", "cancelOrder") => Mutation("Order", 1, 1),
        ("ProductPage", "items") => PageItems("Product"),
        ("OrderPage", "items") => PageItems("Order"),
        ("Order", "items") => List("OrderLine", domain::NewOrder::MAX_LINES as u64),
        ("Order", "user") => Related("OrderUser"),
        ("OrderLine", "product") => Related("Product"),
        _ => Plain,
    }
}

/// The types whose fields [`kind`] knows, and the fields it gives a cost.
pub const PRICED_FIELDS: &[(&str, &str)] = &[
    ("Query", "products"),
    ("Query", "orders"),
    ("Query", "product"),
    ("Query", "me"),
    ("Query", "order"),
    ("Mutation", "placeOrder"),
    ("Mutation", "cancelOrder"),
    ("ProductPage", "items"),
    ("OrderPage", "items"),
    ("Order", "items"),
    ("Order", "user"),
    ("OrderLine", "product"),
];

/// Weighs every operation of `document` (the one asked for, whichever, must fit) with `variables`
/// for arguments given as variables.
pub fn weigh(document: &ExecutableDocument, variables: &Variables) -> Result<Weight, Refusal> {
    let mut walk = Walk {
        document,
        variables,
        fragments: HashMap::new(),
    };
    let mut heaviest = Weight::default();
    for (_, operation) in document.operations.iter() {
        let root = match operation.node.ty {
            async_graphql::parser::types::OperationType::Query => "Query",
            async_graphql::parser::types::OperationType::Mutation => "Mutation",
            async_graphql::parser::types::OperationType::Subscription => "Subscription",
        };
        let directives = operation.node.directives.len() as u64;
        let weight = walk.selection_set(&operation.node.selection_set.node, Some(root), DEFAULT_PAGE)?;
        let weight = weight.and(Weight {
            directives,
            ..Weight::default()
        });
        heaviest = heaviest.max(weight);
    }
    Ok(heaviest)
}

enum Memo {
    InProgress,
    Done(Weight),
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    fragments: HashMap<&'a Name, Memo>,
}

impl<'a> Walk<'a> {
    /// `set` under a value of type `parent` (`None` when not known: costs only itself), inside a
    /// listing whose page size is `page`.
    fn selection_set(&mut self, set: &'a SelectionSet, parent: Option<&str>, page: u64) -> Result<Weight, Refusal> {
        let mut total = Weight::default();
        for selection in &set.items {
            let weight = match &selection.node {
                Selection::Field(field) => self.field(&field.node, parent, page)?,
                // A fragment counts as a selection of its own too: async-graphql's checks visit each.
                Selection::InlineFragment(fragment) => {
                    let on = fragment.node.type_condition.as_ref().map(|c| c.node.on.node.as_str());
                    let inner = self.selection_set(&fragment.node.selection_set.node, on.or(parent), page)?;
                    inner.and(Weight {
                        fields: 1,
                        directives: fragment.node.directives.len() as u64,
                        ..Weight::default()
                    })
                }
                Selection::FragmentSpread(spread) => {
                    let inner = self.fragment(&spread.node.fragment_name.node)?;
                    inner.and(Weight {
                        fields: 1,
                        directives: spread.node.directives.len() as u64,
                        ..Weight::default()
                    })
                }
            };
            total = total.and(weight);
        }
        Ok(total)
    }

    /// A named fragment's weight, weighed once. Its weight depends on the page size only through its
    /// page `items`, so fragments are weighed at the largest page (an upper bound).
    fn fragment(&mut self, name: &'a Name) -> Result<Weight, Refusal> {
        match self.fragments.get(name) {
            Some(Memo::Done(weight)) => return Ok(*weight),
            Some(Memo::InProgress) => return Err(Refusal::FragmentCycle(name.to_string())),
            None => {}
        }
        // A spread of an unknown fragment is left to validation, which refuses it.
        let Some(definition) = self.document.fragments.get(name) else {
            return Ok(Weight::default());
        };
        self.fragments.insert(name, Memo::InProgress);
        let on = definition.node.type_condition.node.on.node.as_str();
        let weight = self
            .selection_set(&definition.node.selection_set.node, Some(on), MAX_PAGE)?
            .and(Weight {
                directives: definition.node.directives.len() as u64,
                ..Weight::default()
            });
        self.fragments.insert(name, Memo::Done(weight));
        Ok(weight)
    }

    fn field(&mut self, field: &'a Field, parent: Option<&str>, page: u64) -> Result<Weight, Refusal> {
        let own = Weight {
            fields: 1,
            aliases: u64::from(field.alias.is_some()),
            directives: field.directives.len() as u64,
            ..Weight::default()
        };
        let kind = parent.map_or(FieldKind::Plain, |parent| kind(parent, field.name.node.as_str()));
        let set = &field.selection_set.node;
        let (inner, own) = match kind {
            FieldKind::Plain => (self.selection_set(set, None, page)?, own),
            FieldKind::Read(child) => (self.selection_set(set, Some(child), page)?, Weight { reads: 1, ..own }),
            FieldKind::Listing(child) => {
                let size = self.page_size(field);
                (self.selection_set(set, Some(child), size)?, Weight { reads: 1, ..own })
            }
            FieldKind::PageItems(child) => (self.selection_set(set, Some(child), page)?.times(page, true), own),
            FieldKind::List(child, size) => (self.selection_set(set, Some(child), page)?.times(size, false), own),
            FieldKind::Related(child) => (
                self.selection_set(set, Some(child), page)?,
                Weight {
                    reads: 1,
                    keys: 1,
                    ..own
                },
            ),
            FieldKind::Mutation(child, reads, writes) => (
                self.selection_set(set, Some(child), page)?,
                Weight { reads, writes, ..own },
            ),
            FieldKind::Placement(child, reads, writes) => (
                self.selection_set(set, Some(child), page)?,
                Weight {
                    reads,
                    writes,
                    placements: 1,
                    ..own
                },
            ),
        };
        Ok(own.and(Weight {
            depth: inner.depth + 1,
            ..inner
        }))
    }

    /// The page size a listing will serve: its `limit` (a literal or a variable), clamped as the
    /// listing clamps it; the largest page when it cannot be told here.
    fn page_size(&self, field: &Field) -> u64 {
        let Some(limit) = field.get_argument("limit") else {
            return DEFAULT_PAGE;
        };
        let number = match &limit.node {
            Value::Number(number) => number.as_u64(),
            Value::Variable(name) => match self.variables.get(name) {
                Some(ConstValue::Number(number)) => number.as_u64(),
                Some(ConstValue::Null) => Some(DEFAULT_PAGE),
                // Not given: the variable's default applies, which may be anything.
                _ => None,
            },
            Value::Null => Some(DEFAULT_PAGE),
            _ => None,
        };
        number.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE)
    }
}
