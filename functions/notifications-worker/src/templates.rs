//! Message texts live in `templates/<event type>.<channel>.txt` and are rendered with minijinja.
//! An email template's first line is `Subject: ...`. No template for a channel means the event is not
//! sent on that channel.

use domain::events::EventType;
use minijinja::Environment;
use serde::Serialize;
use store::notifications::Channel;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "user.registered.email",
        include_str!("../templates/user.registered.email.txt"),
    ),
    (
        "order.created.email",
        include_str!("../templates/order.created.email.txt"),
    ),
    ("order.created.sms", include_str!("../templates/order.created.sms.txt")),
    (
        "order.confirmed.email",
        include_str!("../templates/order.confirmed.email.txt"),
    ),
    (
        "order.shipped.email",
        include_str!("../templates/order.shipped.email.txt"),
    ),
    ("order.shipped.sms", include_str!("../templates/order.shipped.sms.txt")),
    (
        "order.cancelled.email",
        include_str!("../templates/order.cancelled.email.txt"),
    ),
    (
        "order.cancelled.sms",
        include_str!("../templates/order.cancelled.sms.txt"),
    ),
    (
        "inventory.low_stock.email",
        include_str!("../templates/inventory.low_stock.email.txt"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("template {name}: {source}")]
pub struct TemplateError {
    name: String,
    #[source]
    source: minijinja::Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub body: String,
}

pub struct Templates {
    env: Environment<'static>,
}

fn template_name(event_type: EventType, channel: Channel) -> String {
    format!("{}.{}", event_type.as_str(), channel.as_str())
}

impl Templates {
    /// Loads (and so checks) every template at init.
    pub fn load() -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).map_err(|source| TemplateError {
                name: (*name).to_owned(),
                source,
            })?;
        }
        Ok(Self { env })
    }

    pub fn has(&self, event_type: EventType, channel: Channel) -> bool {
        self.env.get_template(&template_name(event_type, channel)).is_ok()
    }

    pub fn render(
        &self,
        event_type: EventType,
        channel: Channel,
        context: &impl Serialize,
    ) -> Result<Rendered, TemplateError> {
        let name = template_name(event_type, channel);
        let error = |source| TemplateError {
            name: name.clone(),
            source,
        };
        let text = self
            .env
            .get_template(&name)
            .and_then(|t| t.render(context))
            .map_err(error)?;
        let text = text.trim().to_owned();
        Ok(match (channel, text.strip_prefix("Subject: ")) {
            (Channel::Email, Some(rest)) => {
                let (subject, body) = rest.split_once('\n').unwrap_or((rest, ""));
                Rendered {
                    subject: Some(subject.trim().to_owned()),
                    body: body.trim().to_owned(),
                }
            }
            _ => Rendered {
                subject: None,
                body: text,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_emails_have_subjects() {
        let templates = Templates::load().unwrap();
        for event_type in EventType::ALL {
            if templates.has(event_type, Channel::Email) {
                let source = TEMPLATES
                    .iter()
                    .find(|(n, _)| *n == template_name(event_type, Channel::Email))
                    .unwrap();
                assert!(source.1.starts_with("Subject: "), "{}", source.0);
            }
        }
    }

    #[test]
    fn every_event_type_has_an_email() {
        let templates = Templates::load().unwrap();
        for event_type in EventType::ALL {
            assert!(templates.has(event_type, Channel::Email), "{}", event_type.as_str());
        }
    }

    #[test]
    fn a_low_stock_alert_names_the_product_and_its_level() {
        let context = serde_json::json!({
            "name": "Ops",
            "product": {"id": "p-1", "name": "Mug", "stock_quantity": 3, "low_stock_threshold": 5},
        });
        let rendered = Templates::load()
            .unwrap()
            .render(EventType::InventoryLowStock, Channel::Email, &context)
            .unwrap();
        assert_eq!(rendered.subject.as_deref(), Some("Low stock: Mug has 3 left"));
        assert!(rendered.body.contains("threshold of 5"));
    }

    #[test]
    fn an_order_email_lists_its_lines_and_total() {
        let context = serde_json::json!({
            "name": "Bea",
            "order_id": "o-1",
            "total": "$25.98",
            "items": [{"product_name": "Mug", "quantity": 2, "price": "$12.99"}],
            "cancel_reason": null,
        });
        let rendered = Templates::load()
            .unwrap()
            .render(EventType::OrderCreated, Channel::Email, &context)
            .unwrap();
        assert_eq!(rendered.subject.as_deref(), Some("We received your order o-1"));
        assert!(rendered.body.contains("2 x Mug at $12.99"));
        assert!(rendered.body.contains("Total: $25.98"));
        assert!(rendered.body.starts_with("Hello Bea"));
    }

    #[test]
    fn a_declined_payment_is_explained() {
        let context = serde_json::json!({
            "name": "Bea", "order_id": "o-1", "total": "$1.00", "items": [], "cancel_reason": "payment_declined",
        });
        let rendered = Templates::load()
            .unwrap()
            .render(EventType::OrderCancelled, Channel::Email, &context)
            .unwrap();
        assert!(rendered.body.contains("payment was declined"));
    }

    #[test]
    fn a_missing_value_is_an_error_not_a_blank() {
        let context = serde_json::json!({"order_id": "o-1"});
        assert!(
            Templates::load()
                .unwrap()
                .render(EventType::OrderCreated, Channel::Sms, &context)
                .is_err()
        );
    }

    #[test]
    fn sms_texts_have_no_subject() {
        let context = serde_json::json!({"name": "Bea", "order_id": "o-1", "total": "$1.00"});
        let rendered = Templates::load()
            .unwrap()
            .render(EventType::OrderCreated, Channel::Sms, &context)
            .unwrap();
        assert_eq!(rendered.subject, None);
        assert!(rendered.body.starts_with("Shop: order o-1"));
    }
}
