//! Events, published without kube-runtime's `Recorder`. The Recorder keeps every Event it
//! published for six minutes (to count repeats into a series) and scans that cache on each
//! publish; with one Event per site reaching Ready, 10,000 sites meant 10,000 cached Events and a
//! quadratic scan. This operator emits Events on transitions only, so there is nothing to count:
//! each Event is created and forgotten.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
pub use kube::runtime::events::EventType;

/// The API server refuses an Event whose note exceeds 1 kB.
const MAX_NOTE_BYTES: usize = 1024;

/// Creates `events.k8s.io/v1` Events as this controller and replica.
#[derive(Clone)]
pub struct EventSink {
    client: kube::Client,
    controller: String,
    instance: String,
}

impl EventSink {
    pub fn new(client: kube::Client, instance: impl Into<String>) -> EventSink {
        EventSink { client, controller: super::MANAGER.into(), instance: instance.into() }
    }

    /// One Event about `regarding` (a cluster-scoped object's Events go to `default`).
    pub async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        note: &str,
        regarding: ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let name =
            format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&self.controller), now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Reconcile".into()),
            reason: Some(reason.into()),
            note: Some(truncated(note).into()),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }
}

/// `note` cut to what the API server accepts, on a character boundary.
fn truncated(note: &str) -> &str {
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    let mut end = MAX_NOTE_BYTES;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    &note[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_note_is_cut_on_a_character_boundary() {
        let note = "é".repeat(600);
        let cut = super::truncated(&note);
        assert!(cut.len() <= 1024 && cut.len() >= 1023);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(super::truncated("short"), "short");
    }
}
