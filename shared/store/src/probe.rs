//! Delivery probes: items and messages that exist only to show that an event source mapping
//! delivers (the local tooling writes them after every emulator start, see docs/local-aws.md). Every
//! stream reader and queue consumer lets them pass without acting on them, and says so in its log.
//!
//! A probe item carries `entity = "probe"` beside the table's key (`probe#<who>`); a probe message
//! carries the message attribute [`PROBE_ATTRIBUTE`]. Nothing a client sends can become either: items
//! are written by the functions' own adapters, and the queues accept messages from the events topic
//! and the account only.

/// The `entity` of a probe item.
pub const PROBE_ENTITY: &str = "probe";
/// The message attribute that marks a probe message.
pub const PROBE_ATTRIBUTE: &str = "shop_probe";

/// Whether a stream image is a probe item.
pub fn is_probe(image: &serde_dynamo::Item) -> bool {
    matches!(image.get("entity"), Some(serde_dynamo::AttributeValue::S(entity)) if entity == PROBE_ENTITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_told_apart_by_its_entity() {
        let mut item = serde_dynamo::Item::from(std::collections::HashMap::from([(
            "id".to_string(),
            serde_dynamo::AttributeValue::S("probe#local".into()),
        )]));
        assert!(!is_probe(&item));
        item.insert("entity".into(), serde_dynamo::AttributeValue::S(PROBE_ENTITY.into()));
        assert!(is_probe(&item));
    }
}
