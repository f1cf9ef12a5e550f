//! compose.yaml cannot be started on a machine without a container engine,
//! so its structure is checked here: the services, their healthchecks and
//! `depends_on` conditions, the published ports, the Kafka listeners, and
//! that every `SB_*` variable a service sets is one its binary accepts (read
//! from the binaries' own clap definitions, in tests/support/binaries.rs,
//! which tests/helm.rs holds the Helm chart to as well), and that edges get
//! longer to stop than their drain takes.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::binaries::{BINARIES, EDGE_STOP_AFTER_DRAIN, binary_env, duration, env_defaults, root};
use yaml_serde::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("compose.yaml")).expect("compose.yaml at the root");
    let mut value: Value = yaml_serde::from_str(&text).expect("compose.yaml parses");
    value.apply_merge().expect("merge keys resolve");
    value
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("services is a mapping")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn str_list(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| s.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    let Some(env) = service["environment"].as_mapping() else { return BTreeMap::new() };
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("environment value {other:?} is not a scalar"),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// Which of our binaries a service runs (`command`, or the words of a `bash -c` line).
fn binaries_of(service: &Value) -> Vec<String> {
    let command = str_list(&service["command"]);
    let words: Vec<String> = match command.first().map(String::as_str) {
        Some("bash") | Some("sh") => command.last().unwrap().split_whitespace().map(str::to_owned).collect(),
        _ => command,
    };
    words.into_iter().filter(|w| BINARIES.contains(&w.as_str())).collect()
}

#[test]
fn every_component_is_a_service() {
    let services = services(&compose());
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for wanted in ["kafka", "postgres", "setup", "edge-1", "edge-2", "persister", "router", "lb"] {
        assert!(names.contains(wanted), "compose.yaml has no {wanted} service; it has {names:?}");
    }
    assert!(services["kafka"]["image"].as_str().unwrap().starts_with("apache/kafka:4."));
    assert!(services["postgres"]["image"].as_str().unwrap().starts_with("postgres:"));
    assert!(services["lb"]["image"].as_str().unwrap().starts_with("nginx:"));
    assert_eq!(binaries_of(&services["setup"]), ["sbctl", "sbctl"], "setup runs `sbctl topics` and `sbctl migrate`");
    assert_eq!(services["setup"]["restart"].as_str(), Some("no"), "setup is one-shot");
}

#[test]
fn long_running_services_have_healthchecks_and_dependencies_wait_for_them() {
    let services = services(&compose());
    for name in ["kafka", "postgres", "edge-1", "edge-2", "lb"] {
        let test = str_list(&services[name]["healthcheck"]["test"]);
        assert!(test.first().is_some_and(|t| t == "CMD" || t == "CMD-SHELL"), "{name} has no healthcheck");
    }
    for (name, service) in &services {
        let Some(deps) = service["depends_on"].as_mapping() else { continue };
        for (dep, spec) in deps {
            let dep = dep.as_str().unwrap();
            let target = services.get(dep).unwrap_or_else(|| panic!("{name} depends on unknown {dep}"));
            let condition = spec["condition"].as_str().unwrap_or_else(|| panic!("{name} -> {dep} has no condition"));
            match condition {
                "service_healthy" => {
                    assert!(
                        !target["healthcheck"].is_null(),
                        "{name} waits for {dep} to be healthy, which has no check"
                    )
                }
                "service_completed_successfully" => {
                    assert_eq!(target["restart"].as_str(), Some("no"), "{name} waits for {dep} to complete, a one-shot")
                }
                other => panic!("{name} -> {dep}: condition {other} does not wait for readiness"),
            }
        }
    }
    let waits_for = |name: &str, dep: &str, condition: &str| {
        assert_eq!(services[name]["depends_on"][dep]["condition"].as_str(), Some(condition), "{name} -> {dep}");
    };
    waits_for("setup", "kafka", "service_healthy");
    waits_for("setup", "postgres", "service_healthy");
    for name in ["persister", "router", "edge-1", "edge-2"] {
        waits_for(name, "setup", "service_completed_successfully");
    }
    waits_for("lb", "edge-1", "service_healthy");
    waits_for("lb", "edge-2", "service_healthy");
}

#[test]
fn switchboard_services_set_only_variables_their_binaries_accept() {
    let services = services(&compose());
    for (name, service) in &services {
        let binaries = binaries_of(service);
        let Some(binary) = binaries.first() else { continue };
        let accepted = binary_env(binary);
        let set = environment(service);
        for key in set.keys().filter(|k| k.starts_with("SB_")) {
            assert!(accepted.contains_key(key), "{name} sets {key}, which {binary} does not read");
        }
        if binary != "sbctl" {
            for (key, required) in &accepted {
                assert!(!required || set.contains_key(key), "{name} runs {binary} without the required {key}");
            }
        }
    }
    // The names the services use for each other match the network's.
    let edge = environment(&services["edge-1"]);
    assert_eq!(edge["SB_KAFKA_BROKERS"], "kafka:9092");
    assert!(edge["SB_DATABASE_URL"].contains("@postgres:5432/"));
    assert_ne!(edge["SB_NODE_ID"], environment(&services["edge-2"])["SB_NODE_ID"], "edges need distinct node ids");
}

#[test]
fn kafka_listens_for_containers_and_the_host() {
    let services = services(&compose());
    let kafka = environment(&services["kafka"]);
    assert_eq!(kafka["KAFKA_PROCESS_ROLES"], "broker,controller");
    let advertised = &kafka["KAFKA_ADVERTISED_LISTENERS"];
    assert!(advertised.contains("://kafka:9092"), "containers reach kafka:9092: {advertised}");
    let host = advertised.split(',').find(|l| l.contains("localhost:")).expect("a listener for the host");
    let host_port = host.rsplit(':').next().unwrap();
    let published = str_list(&services["kafka"]["ports"]);
    assert!(published.iter().any(|p| p == &format!("{host_port}:{host_port}")), "{host_port} published: {published:?}");
    for listener in advertised.split(',') {
        let name = listener.split("://").next().unwrap();
        assert!(kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].contains(&format!("{name}:")), "{name} has a protocol");
        assert!(kafka["KAFKA_LISTENERS"].contains(&format!("{name}://")), "{name} is listened on");
    }
    assert_eq!(kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"], "false", "topics come from sbctl");
}

#[test]
fn the_load_balancer_fronts_both_edges_with_websocket_settings() {
    let services = services(&compose());
    assert!(str_list(&services["lb"]["ports"]).iter().any(|p| p.ends_with(":80")), "lb publishes port 80");
    let conf = std::fs::read_to_string(root().join("deploy/nginx/nginx.conf")).unwrap();
    for edge in ["edge-1", "edge-2"] {
        let listen = &environment(&services[edge])["SB_LISTEN"];
        let port = listen.rsplit(':').next().unwrap();
        assert!(conf.contains(&format!("server {edge}:{port}")), "nginx forwards to {edge}:{port}");
    }
    for needed in ["proxy_set_header Upgrade $http_upgrade", "proxy_http_version 1.1", "proxy_read_timeout"] {
        assert!(conf.contains(needed), "nginx.conf lacks {needed:?}");
    }
    // nginx must outwait the edges' idle timeout, or it cuts healthy quiet clients.
    let read_timeout: u64 = conf
        .split("proxy_read_timeout")
        .nth(1)
        .and_then(|rest| rest.trim_start().split('s').next())
        .and_then(|n| n.parse().ok())
        .expect("proxy_read_timeout in seconds");
    let idle = duration(&env_defaults(&["edge"])["SB_IDLE_TIMEOUT"]).as_secs();
    assert!(read_timeout > idle, "proxy_read_timeout {read_timeout}s must exceed the edge idle timeout {idle}s");
}

#[test]
fn the_image_holds_every_binary_compose_runs() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile at the root");
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage build");
    let services = services(&compose());
    for (name, service) in &services {
        for binary in binaries_of(service) {
            assert!(dockerfile.contains(&format!("target/release/{binary}")), "{name} runs {binary}, not in the image");
        }
    }
}

#[test]
fn edges_get_longer_to_stop_than_their_drain_takes() {
    let services = services(&compose());
    for name in ["edge-1", "edge-2"] {
        let grace = environment(&services[name])
            .get("SB_DRAIN_GRACE")
            .cloned()
            .unwrap_or_else(|| env_defaults(&["edge"])["SB_DRAIN_GRACE"].clone());
        let needed = duration(&grace) + EDGE_STOP_AFTER_DRAIN;
        let stop = duration(services[name]["stop_grace_period"].as_str().expect("edges set stop_grace_period"));
        assert!(
            stop > needed,
            "{name}: stop_grace_period {stop:?} must exceed the drain grace + {EDGE_STOP_AFTER_DRAIN:?}"
        );
    }
}
