//! The request limits, enforced before any resolver runs and before async-graphql validates the
//! document: the text is scanned ([`cost::scan`]) before it is parsed, the parsed document weighed
//! ([`cost::weigh`]) before it is validated. Introspection is refused here too when it is off.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

use crate::cost::{self, LIMITS, Refusal};
use crate::errors::{QUERY_TOO_COMPLEX, request_error};

/// The error a refused document answers: `query-too-complex`, with the REST status 400.
pub fn refused(refusal: &Refusal) -> ServerError {
    tracing::info!(refusal = %refusal, "query refused as too complex");
    request_error(&refusal.to_string(), QUERY_TOO_COMPLEX, 400)
}

/// The weight and introspection checks, between parsing and validation.
pub struct Limits {
    pub introspection: bool,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitCheck {
            introspection: self.introspection,
        })
    }
}

struct LimitCheck {
    introspection: bool,
}

#[async_trait::async_trait]
impl Extension for LimitCheck {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let weight = cost::weigh(&document, variables).map_err(|refusal| refused(&refusal))?;
        weight.check(&LIMITS).map_err(|refusal| refused(&refusal))?;
        tracing::debug!(
            fields = weight.fields,
            storage_reads = weight.storage_reads(),
            writes = weight.writes,
            "query weighed"
        );
        if !self.introspection && asks_introspection(&document) {
            return Err(request_error(
                "Introspection is disabled on this deployment.",
                "forbidden",
                403,
            ));
        }
        Ok(document)
    }
}

/// Whether any selection of the document asks for `__schema` or `__type`.
fn asks_introspection(document: &ExecutableDocument) -> bool {
    let mut pending: Vec<&SelectionSet> = document
        .operations
        .iter()
        .map(|(_, operation)| &operation.node.selection_set.node)
        .collect();
    pending.extend(
        document
            .fragments
            .values()
            .map(|fragment| &fragment.node.selection_set.node),
    );
    while let Some(set) = pending.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    if matches!(field.node.name.node.as_str(), "__schema" | "__type") {
                        return true;
                    }
                    pending.push(&field.node.selection_set.node);
                }
                Selection::InlineFragment(fragment) => pending.push(&fragment.node.selection_set.node),
                // Named fragments are walked on their own above.
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    false
}
