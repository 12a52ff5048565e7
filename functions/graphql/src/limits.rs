//! The request limits, enforced before async-graphql sees the document: its own parse step walks
//! every fragment spread anew (its recursion-depth and directive checks), and its validation too, so
//! a few hundred bytes of fragments that each spread the next one twice would keep it busy for the
//! function's whole timeout. Here the text is scanned ([`cost::scan`]) before it is parsed, and the
//! parsed document weighed ([`cost::weigh`], linear) before it is handed on, already parsed.
//! Introspection is refused here too when it is off.

use async_graphql::ServerError;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

use crate::cost::{self, LIMITS, Refusal};
use crate::errors::{QUERY_TOO_COMPLEX, request_error};

/// The error a refused document answers: `query-too-complex`, with the REST status 400.
pub fn refused(refusal: &Refusal) -> ServerError {
    tracing::info!(refusal = %refusal, "query refused as too complex");
    request_error(&refusal.to_string(), QUERY_TOO_COMPLEX, 400)
}

/// Admits `request` to the schema, or says why not: too large or too complex (`query-too-complex`),
/// not a document (the parser's error, a `validation` error once coded), or introspection while it
/// is off (`forbidden`). An admitted request carries its parsed document.
pub fn admit(request: &mut async_graphql::Request, introspection: bool) -> Result<(), ServerError> {
    cost::scan(&request.query, &LIMITS).map_err(|refusal| refused(&refusal))?;
    let variables = request.variables.clone();
    let document = request.parsed_query()?;
    let weight = cost::weigh(document, &variables).map_err(|refusal| refused(&refusal))?;
    weight.check(&LIMITS).map_err(|refusal| refused(&refusal))?;
    tracing::debug!(
        selections = weight.fields,
        storage_reads = weight.storage_reads(),
        writes = weight.writes,
        "query weighed"
    );
    if !introspection && asks_introspection(document) {
        return Err(request_error(
            "Introspection is disabled on this deployment.",
            "forbidden",
            403,
        ));
    }
    Ok(())
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
