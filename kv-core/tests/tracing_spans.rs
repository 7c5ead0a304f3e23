//! Each call through the checking layer is one `kv` span with backend, op and key, and ends
//! with an event carrying its outcome and latency. Alone in its binary: tracing caches
//! callsite interest process-wide, so tests without a subscriber must not race this one.

mod common;

use std::sync::{Arc, Mutex};

use common::store;
use kv_core::{PutOptions, Store};

/// A subscriber that records span names with their fields and event fields.
#[derive(Default, Clone)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = format!("span {}", span.metadata().name());
        span.record(&mut Fields(&mut line));
        let mut v = self.0.lock().unwrap();
        v.push(line);
        tracing::span::Id::from_u64(v.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = "event".to_string();
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn each_call_is_one_span_with_its_outcome() {
    let capture = Capture::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        rt.block_on(async {
            let s = store();
            s.put("a/b", b"v", PutOptions::default()).await.unwrap();
            let _ = s.get("a/b").await;
        })
    });
    let lines = capture.0.lock().unwrap().clone();
    let text = lines.join("\n");
    assert!(
        text.contains("span kv backend=\"rec\" op=\"put\" key=\"a/b\""),
        "{text}"
    );
    assert!(
        text.contains("span kv backend=\"rec\" op=\"get\" key=\"a/b\""),
        "{text}"
    );
    assert!(text.contains("outcome=\"ok\""), "{text}");
    assert!(text.contains("outcome=\"not_found\""), "{text}");
    assert!(text.contains("elapsed="), "{text}");
}
