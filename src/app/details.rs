//! An event's details (a JSON object of ids, versions, reasons) as labelled fields, so a
//! reviewer reads "Rotation id: …" instead of a line of JSON running out of its card.

use leptos::prelude::*;
use serde_json::Value;

/// `rotation_id` → `Rotation id`.
pub fn label(key: &str) -> String {
    let words = key.replace('_', " ");
    let mut chars = words.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A value as one line of text: strings as they are, `yes`/`no`, `—` for null, and nested
/// objects or lists as `key: value` pairs.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            if items.is_empty() {
                "none".into()
            } else {
                items.iter().map(text).collect::<Vec<_>>().join(", ")
            }
        }
        Value::Object(map) => {
            map.iter().map(|(k, v)| format!("{}: {}", label(k), text(v))).collect::<Vec<_>>().join("; ")
        }
    }
}

/// The fields of `details`, one per row (`—` for none); anything but an object is shown as text.
#[component]
pub fn DetailFields(details: Value) -> impl IntoView {
    match details {
        Value::Object(map) if map.is_empty() => view! { <span class="muted">"—"</span> }.into_any(),
        Value::Object(map) => view! {
            <dl class="details" data-testid="details">
                {map.into_iter().map(|(k, v)| view! { <dt>{label(&k)}</dt><dd>{text(&v)}</dd> }).collect_view()}
            </dl>
        }
        .into_any(),
        other => view! { <span class="details-text">{text(&other)}</span> }.into_any(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_values_read_as_words() {
        assert_eq!(label("rotation_id"), "Rotation id");
        assert_eq!(label(""), "");
        assert_eq!(text(&serde_json::json!(null)), "—");
        assert_eq!(text(&serde_json::json!(true)), "yes");
        assert_eq!(text(&serde_json::json!(["a", 2])), "a, 2");
        assert_eq!(
            text(&serde_json::json!({"new_version": 3, "trigger": "manual"})),
            "New version: 3; Trigger: manual"
        );
    }
}
