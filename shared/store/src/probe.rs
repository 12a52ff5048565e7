//! Delivery probes: items and messages that exist only to show that an event source mapping
//! delivers (the local tooling writes them after every emulator start, see docs/local-aws.md). Every
//! stream reader and queue consumer lets them pass without acting on them, and says so in its log.
//!
//! A probe item carries `entity = "probe"` beside the table's key (`probe#<who>`), and its name in
//! `probe`; a probe message carries its name in the message attribute [`PROBE_ATTRIBUTE`]. Readers
//! log the name of each probe they pass: the tooling waits for that line, so it knows this very probe,
//! and with it everything before it in the stream, was delivered. Nothing a client sends can become either: items
//! are written by the functions' own adapters, and the queues accept messages from the events topic
//! and the account only.

/// The `entity` of a probe item.
pub const PROBE_ENTITY: &str = "probe";
/// The message attribute that marks a probe message.
pub const PROBE_ATTRIBUTE: &str = "shop_probe";

/// The attribute of a probe item that names it.
pub const PROBE_NAME: &str = "probe";

/// Whether a stream image is a probe item.
pub fn is_probe(image: &serde_dynamo::Item) -> bool {
    matches!(image.get("entity"), Some(serde_dynamo::AttributeValue::S(entity)) if entity == PROBE_ENTITY)
}

/// Whether a stream record (its two images) is a probe's write or removal; logs the probe's name when
/// it is, for the stream reader that lets it pass.
pub fn passes(old_image: &serde_dynamo::Item, new_image: &serde_dynamo::Item) -> bool {
    let image = if new_image.is_empty() { old_image } else { new_image };
    if !is_probe(image) {
        return false;
    }
    let name = match image.get(PROBE_NAME) {
        Some(serde_dynamo::AttributeValue::S(name)) => name.as_str(),
        _ => "",
    };
    tracing::info!(probe = name, "delivery probe passed");
    true
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

    #[test]
    fn a_probes_write_and_its_removal_pass_and_an_order_does_not() {
        let empty = serde_dynamo::Item::default();
        let probe = serde_dynamo::Item::from(std::collections::HashMap::from([
            ("id".to_string(), serde_dynamo::AttributeValue::S("probe#local".into())),
            (
                "entity".to_string(),
                serde_dynamo::AttributeValue::S(PROBE_ENTITY.into()),
            ),
            (
                PROBE_NAME.to_string(),
                serde_dynamo::AttributeValue::S("probe#local#1".into()),
            ),
        ]));
        let order = serde_dynamo::Item::from(std::collections::HashMap::from([(
            "id".to_string(),
            serde_dynamo::AttributeValue::S("01a25269-12fa-72db-9bd0-fb9592849c5d".into()),
        )]));
        assert!(passes(&empty, &probe));
        assert!(passes(&probe, &empty));
        assert!(!passes(&empty, &order));
        assert!(!passes(&order, &order));
    }
}
