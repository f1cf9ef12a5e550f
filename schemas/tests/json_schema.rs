//! The JSON Schema files in `schemas/json/` are generated from the Rust types.
//! This test fails when a checked-in file is stale; run it with
//! `SB_BLESS=1` to rewrite them.

use std::path::PathBuf;

use schemars::{JsonSchema, schema_for};
use switchboard_schemas::envelope::{Event, InboundSend};
use switchboard_schemas::notification::Notification;
use switchboard_schemas::protocol::{ClientFrame, ServerFrame};
use switchboard_schemas::read_marker::ReadMarker;
use switchboard_schemas::room_command::RoomCommand;
use switchboard_schemas::routing::{NodeRecord, RouteRecord};

fn render<T: JsonSchema>() -> String {
    let mut text = serde_json::to_string_pretty(&schema_for!(T)).unwrap();
    text.push('\n');
    text
}

#[test]
fn checked_in_schemas_are_fresh() {
    let files = [
        ("client-frame.json", render::<ClientFrame>()),
        ("server-frame.json", render::<ServerFrame>()),
        ("inbound-send.json", render::<InboundSend>()),
        ("room-command.json", render::<RoomCommand>()),
        ("read-marker.json", render::<ReadMarker>()),
        ("event.json", render::<Event>()),
        ("route-record.json", render::<RouteRecord>()),
        ("node-record.json", render::<NodeRecord>()),
        ("notification.json", render::<Notification>()),
    ];
    // Read at run time: a test binary reused from another checkout (a shared
    // target directory) would otherwise compare against that checkout's files.
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("json");
    let bless = std::env::var_os("SB_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, generated) in files {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != generated {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schema files {stale:?}; regenerate with `SB_BLESS=1 cargo test -p switchboard-schemas`"
    );
}
