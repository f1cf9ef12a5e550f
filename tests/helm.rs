//! The Helm chart (deploy/helm/switchboard) cannot be installed on a machine
//! without a cluster, so the manifests it renders are checked here, as
//! tests/compose.rs checks compose.yaml: every `SB_*` variable a container
//! sets is one its binary reads and no required one is missing, the chart's
//! defaults are the binaries', probes name paths and ports the binaries
//! serve, an edge's pod name is its node id, edges get longer to stop than
//! their drain takes, and values.schema.json refuses misspelled values. The
//! Kubernetes schemas and the policy scan are scripts/helm.sh check's other
//! steps.
//!
//! Rendering needs helm (`scripts/helm.sh install`, or `SB_HELM`). Without
//! it, the tests that render print a line and pass, so `cargo test` works on
//! a fresh machine; `SB_HELM_REQUIRED=1` (set by scripts/helm.sh check) makes
//! that a failure.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use support::binaries::{EDGE_STOP_AFTER_DRAIN, TELEMETRY_ENV, command_env, duration, env_defaults};
use support::binaries::{long_flags, port_of, root};
use yaml_serde::Value;

/// Values files rendered, as an install would see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Values {
    Default,
    Production,
    /// ci/production-values.yaml as `helm upgrade` renders it (the setup
    /// hook may then go on past topics that differ).
    ProductionUpgrade,
}

const ALL: [Values; 3] = [Values::Default, Values::Production, Values::ProductionUpgrade];

fn chart() -> PathBuf {
    root().join("deploy/helm/switchboard")
}

fn helm() -> Option<PathBuf> {
    let path = match std::env::var_os("SB_HELM") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/switchboard/bin/helm"),
    };
    path.is_file().then_some(path)
}

/// The objects the chart renders for `values`, or `None` (with a printed
/// line) when helm is not installed and not required.
fn rendered(values: Values) -> Option<&'static [Value]> {
    static RENDERS: OnceLock<Option<BTreeMap<Values, Vec<Value>>>> = OnceLock::new();
    let renders = RENDERS.get_or_init(|| {
        let Some(helm) = helm() else {
            let required = std::env::var("SB_HELM_REQUIRED").is_ok_and(|v| v == "1");
            assert!(!required, "SB_HELM_REQUIRED=1 but there is no helm (scripts/helm.sh install)");
            println!("skipped: no helm at ~/.cache/switchboard/bin/helm or $SB_HELM (scripts/helm.sh install)");
            return None;
        };
        Some(ALL.into_iter().map(|values| (values, render(&helm, values))).collect())
    });
    renders.as_ref().map(|r| r[&values].as_slice())
}

fn render(helm: &PathBuf, values: Values) -> Vec<Value> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "sb"]).arg(chart()).args(["--namespace", "switchboard"]);
    if values != Values::Default {
        cmd.arg("-f").arg(chart().join("ci/production-values.yaml"));
    }
    if values == Values::ProductionUpgrade {
        cmd.arg("--is-upgrade");
    }
    let out = cmd.output().expect("helm runs");
    assert!(out.status.success(), "helm template ({values:?}) failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    text.split("\n---")
        .filter_map(|doc| {
            let value: Value = yaml_serde::from_str(doc).unwrap_or_else(|e| panic!("{values:?}: {e}\n{doc}"));
            value.is_mapping().then_some(value)
        })
        .collect()
}

fn kind_named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"].as_str() == Some(kind))
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("{value:?} is not a string"))
}

/// The pod spec of a workload (StatefulSet, Job) or a Pod.
fn pod_spec(object: &Value) -> &Value {
    match str_of(&object["kind"]) {
        "Pod" => &object["spec"],
        _ => &object["spec"]["template"]["spec"],
    }
}

/// Every container of every pod the chart makes, with the object's name.
fn containers(objects: &[Value]) -> Vec<(String, &Value)> {
    let mut all = Vec::new();
    for object in objects {
        if !["StatefulSet", "Job", "Pod", "Deployment"].contains(&str_of(&object["kind"])) {
            continue;
        }
        let spec = pod_spec(object);
        let name = str_of(&object["metadata"]["name"]);
        for c in seq(&spec["initContainers"]).iter().chain(seq(&spec["containers"])) {
            all.push((format!("{name}/{}", str_of(&c["name"])), c));
        }
    }
    all
}

/// A container's command words (our image runs a binary directly, no shell).
fn words(container: &Value) -> Vec<&str> {
    seq(&container["command"]).iter().map(str_of).collect()
}

/// The binary and subcommand a container runs (`["sbctl", "topics"]`).
fn invocation(container: &Value) -> Vec<&str> {
    let words = words(container);
    match words.first() {
        Some(&"sbctl") => words.iter().take(2).copied().collect(),
        Some(&binary) => vec![binary],
        None => panic!("container {:?} has no command", container["name"]),
    }
}

/// Env entries: name, then the literal value or `None` for `valueFrom`.
fn env(container: &Value) -> BTreeMap<&str, Option<&str>> {
    seq(&container["env"]).iter().map(|e| (str_of(&e["name"]), e["value"].as_str())).collect()
}

#[test]
fn containers_set_only_variables_their_binaries_read_and_every_required_one() {
    let Some(objects) = rendered(Values::Default) else { return };
    for values in ALL {
        let objects = if values == Values::Default { objects } else { rendered(values).unwrap() };
        for (name, container) in containers(objects) {
            let invocation = invocation(container);
            let reads = command_env(&invocation);
            let set = env(container);
            for key in set.keys() {
                let telemetry = TELEMETRY_ENV.contains(key) && invocation[0] != "sbctl";
                assert!(
                    reads.contains_key(*key) || telemetry,
                    "{values:?}: {name} sets {key}, which `{}` does not read",
                    invocation.join(" ")
                );
            }
            for (key, required) in &reads {
                assert!(!required || set.contains_key(key.as_str()), "{values:?}: {name} lacks the required {key}");
            }
        }
    }
    // The telemetry variables are the ones core reads.
    let telemetry = std::fs::read_to_string(root().join("core/src/telemetry.rs")).unwrap()
        + &std::fs::read_to_string(root().join("core/src/traces.rs")).unwrap();
    for key in TELEMETRY_ENV {
        assert!(telemetry.contains(key), "core no longer reads {key}");
    }
}

#[test]
fn flags_the_chart_passes_are_flags_of_the_binaries() {
    let Some(_) = rendered(Values::Default) else { return };
    for values in ALL {
        for (name, container) in containers(rendered(values).unwrap()) {
            let invocation = invocation(container);
            let accepted = long_flags(&invocation);
            for flag in words(container).into_iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    accepted.contains(flag),
                    "{values:?}: {name} passes {flag}, which `{}` does not accept",
                    invocation.join(" ")
                );
            }
        }
    }
}

/// values.yaml: each component's `config`, keyed by variable name.
fn values_yaml() -> Value {
    let text = std::fs::read_to_string(chart().join("values.yaml")).expect("the chart's values.yaml");
    yaml_serde::from_str(&text).expect("values.yaml parses")
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Sequence(items) => Some(items.iter().filter_map(scalar).collect::<Vec<_>>().join(",")),
        other => panic!("{other:?} is not a setting"),
    }
}

#[test]
fn values_expose_every_setting_with_the_binaries_defaults() {
    let values = values_yaml();
    // What the chart sets itself instead of exposing in `config`.
    let derived = |extra: &[&'static str]| -> BTreeSet<&'static str> {
        [
            "SB_KAFKA_BROKERS",
            "SB_TOPIC_PREFIX",
            "SB_KAFKA_OPTIONS",
            // From kafka.tls, kafka.sasl and the Secret.
            "SB_KAFKA_SECURITY_PROTOCOL",
            "SB_KAFKA_SASL_MECHANISM",
            "SB_KAFKA_SASL_USERNAME",
            "SB_KAFKA_SASL_PASSWORD",
            "SB_KAFKA_CA_LOCATION",
            "SB_DATABASE_URL",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect()
    };
    // Deliberate differences from the binaries, each for a reason given in values.yaml.
    let differs: BTreeMap<&str, &str> = [("SB_MIGRATE", "false")].into();
    let components: [(&str, &[&str], BTreeSet<&str>); 5] = [
        ("edge", &["edge"], derived(&["SB_NODE_ID", "SB_LISTEN", "SB_JWT_SECRET"])),
        ("persister", &["persister"], derived(&["SB_PERSISTER_INSTANCE_ID", "SB_OPS_LISTEN"])),
        ("router", &["router"], derived(&["SB_ROUTER_INSTANCE_ID", "SB_OPS_LISTEN"])),
        (
            "notifier",
            &["notifier"],
            derived(&["SB_NOTIFIER_INSTANCE_ID", "SB_OPS_LISTEN", "SB_WEBHOOK_URL", "SB_WEBHOOK_SECRET"]),
        ),
        // Batching produces means nothing to a command that only creates topics.
        ("setup", &["sbctl", "topics"], derived(&["SB_KAFKA_LINGER"])),
    ];
    for (component, invocation, derived) in components {
        let config = values[component]["config"].as_mapping().unwrap_or_else(|| panic!("{component}.config"));
        let config: BTreeMap<&str, Option<String>> =
            config.iter().map(|(k, v)| (k.as_str().unwrap(), scalar(v))).collect();
        let reads = command_env(invocation);
        let defaults = env_defaults(invocation);
        for key in reads.keys() {
            assert!(
                config.contains_key(key.as_str()) || derived.contains(key.as_str()),
                "{key}, read by `{}`, is not in {component}.config",
                invocation.join(" ")
            );
        }
        for (key, value) in &config {
            assert!(reads.contains_key(*key), "{component}.config.{key} is not read by `{}`", invocation.join(" "));
            assert!(!derived.contains(key), "{component}.config.{key} is set by the chart itself");
            let Some(value) = value else {
                assert!(!defaults.contains_key(*key), "{component}.config.{key} is null, the binary defaults it");
                continue;
            };
            if let Some(wanted) = differs.get(key) {
                assert_eq!(value, wanted, "{component}.config.{key}");
                continue;
            }
            let default = defaults.get(*key).unwrap_or_else(|| panic!("{component}.config.{key}: no binary default"));
            let same = value == default
                || humantime::parse_duration(value).ok().is_some_and(|d| humantime::parse_duration(default) == Ok(d));
            assert!(same, "{component}.config.{key} is {value}, the binary's default is {default}");
        }
    }
}

/// The container of a workload named `<release>-<component>`.
fn workload_container<'a>(objects: &'a [Value], kind: &str, component: &str) -> &'a Value {
    let workload = kind_named(objects, kind, &format!("sb-switchboard-{component}"));
    &seq(&pod_spec(workload)["containers"])[0]
}

/// The port number a probe names, through the container's named ports.
fn probe_port(container: &Value, probe: &Value) -> u16 {
    let port = &probe["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = str_of(port);
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("probe port {name} is not a container port")) as u16
}

#[tokio::test]
async fn probes_name_paths_and_ports_the_binaries_serve() {
    let Some(_) = rendered(Values::Default) else { return };
    // Where each binary serves its probes: the variable naming the listener.
    let listeners = [
        ("edge", "SB_LISTEN"),
        ("persister", "SB_OPS_LISTEN"),
        ("router", "SB_OPS_LISTEN"),
        ("notifier", "SB_OPS_LISTEN"),
    ];
    let mut paths: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for values in ALL {
        let objects = rendered(values).unwrap();
        for (component, listen_var) in listeners {
            if component == "notifier" && values == Values::Default {
                continue; // off by default; the production values turn it on
            }
            let container = workload_container(objects, "StatefulSet", component);
            let listen = env(container)[listen_var].expect("a literal listen address");
            assert!(
                !listen.starts_with("127."),
                "{values:?}: {component} listens on {listen}: kubelet cannot reach it"
            );
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let probe = &container[probe];
                assert!(probe.is_mapping(), "{values:?}: {component} has no {probe:?}");
                assert_eq!(
                    probe_port(container, probe),
                    port_of(listen),
                    "{values:?}: {component} probes another port"
                );
                paths.entry(component).or_default().insert(str_of(&probe["httpGet"]["path"]).to_owned());
            }
            assert_eq!(str_of(&container["readinessProbe"]["httpGet"]["path"]), "/readyz");
            assert_eq!(str_of(&container["livenessProbe"]["httpGet"]["path"]), "/healthz");
        }
    }

    // The workers' ops listener (core::ops) answers those paths when ready.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = listener.local_addr().unwrap();
    let ready = switchboard_core::ops::Readiness::default();
    ready.set(true);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let metrics = switchboard_core::metrics::Metrics::default();
    let server = tokio::spawn(switchboard_core::ops::serve(listener, metrics, ready, shutdown.clone()));
    for worker in ["persister", "router", "notifier"] {
        for path in &paths[worker] {
            let (status, body) = support::http(ops, "GET", path, &[], "").await;
            assert_eq!(status, 200, "{worker}'s ops listener: GET {path}: {body}");
        }
    }
    shutdown.cancel();
    let _ = server.await;

    // An edge answers them on its client port.
    let harness = support::start().await;
    for path in &paths["edge"] {
        let (status, body) = support::http(harness.edge(0), "GET", path, &[], "").await;
        assert_eq!(status, 200, "edge: GET {path}: {body}");
    }
    harness.stop().await;
}

#[test]
fn services_and_scrapes_reach_named_container_ports() {
    let Some(_) = rendered(Values::Default) else { return };
    for values in ALL {
        let objects = rendered(values).unwrap();
        let pods: Vec<(&Value, &Value)> = of_kind(objects, "StatefulSet")
            .map(|s| (&s["spec"]["template"]["metadata"]["labels"], &s["spec"]["template"]["spec"]))
            .collect();
        for service in of_kind(objects, "Service") {
            let name = str_of(&service["metadata"]["name"]);
            let selector = service["spec"]["selector"].as_mapping().expect("a selector");
            let (_, spec) = pods
                .iter()
                .find(|(labels, _)| selector.iter().all(|(k, v)| labels[k.as_str().unwrap()] == *v))
                .unwrap_or_else(|| panic!("{values:?}: Service {name} selects no workload"));
            let names: BTreeSet<&str> =
                seq(&spec["containers"]).iter().flat_map(|c| seq(&c["ports"])).map(|p| str_of(&p["name"])).collect();
            for port in seq(&service["spec"]["ports"]) {
                let target = str_of(&port["targetPort"]);
                assert!(names.contains(target), "{values:?}: Service {name} targets {target}, not a container port");
            }
        }
        // Each ServiceMonitor endpoint is a port of some scraped Service.
        let scraped: BTreeSet<&str> = of_kind(objects, "Service")
            .filter(|s| s["metadata"]["labels"]["switchboard.io/metrics"].as_str() == Some("true"))
            .flat_map(|s| seq(&s["spec"]["ports"]))
            .map(|p| str_of(&p["name"]))
            .collect();
        for monitor in of_kind(objects, "ServiceMonitor") {
            for endpoint in seq(&monitor["spec"]["endpoints"]) {
                assert!(scraped.contains(str_of(&endpoint["port"])), "{values:?}: scrape port {:?}", endpoint["port"]);
                assert_eq!(str_of(&endpoint["path"]), "/metrics");
            }
        }
    }
}

#[test]
fn pod_names_are_the_node_and_instance_ids() {
    let Some(_) = rendered(Values::Default) else { return };
    for values in ALL {
        let objects = rendered(values).unwrap();
        for (component, var) in [
            ("edge", "SB_NODE_ID"),
            ("persister", "SB_PERSISTER_INSTANCE_ID"),
            ("router", "SB_ROUTER_INSTANCE_ID"),
            ("notifier", "SB_NOTIFIER_INSTANCE_ID"),
        ] {
            if component == "notifier" && values == Values::Default {
                assert!(
                    of_kind(objects, "StatefulSet").all(|s| !str_of(&s["metadata"]["name"]).ends_with("-notifier")),
                    "the notifier is off by default"
                );
                continue;
            }
            let set = kind_named(objects, "StatefulSet", &format!("sb-switchboard-{component}"));
            let container = &seq(&pod_spec(set)["containers"])[0];
            let entry = seq(&container["env"]).iter().find(|e| e["name"].as_str() == Some(var));
            let entry = entry.unwrap_or_else(|| panic!("{values:?}: {component} does not set {var}"));
            assert_eq!(
                entry["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
                Some("metadata.name"),
                "{component} {var}"
            );
            // The StatefulSet's pod names (<name>-<ordinal>) are valid ids, and
            // its governing Service is headless, so each pod keeps its DNS name.
            let name = str_of(&set["metadata"]["name"]);
            for ordinal in [0, 99] {
                let pod = format!("{name}-{ordinal}");
                switchboard_schemas::ids::validate_id(&pod).unwrap_or_else(|e| panic!("{pod} is no node id: {e:?}"));
                assert!(pod.len() <= 63, "{pod} is longer than a pod hostname may be");
            }
            let governing = kind_named(objects, "Service", str_of(&set["spec"]["serviceName"]));
            assert_eq!(governing["spec"]["clusterIP"].as_str(), Some("None"), "{component}'s Service is headless");
        }
    }
}

fn seconds(value: &Value) -> Duration {
    Duration::from_secs(value.as_u64().unwrap_or_else(|| panic!("{value:?} is not whole seconds")))
}

#[test]
fn edges_get_longer_to_stop_than_their_drain_takes() {
    let Some(_) = rendered(Values::Default) else { return };
    for values in ALL {
        let objects = rendered(values).unwrap();
        let edge = kind_named(objects, "StatefulSet", "sb-switchboard-edge");
        let container = workload_container(objects, "StatefulSet", "edge");
        let drain = env(container)
            .get("SB_DRAIN_GRACE")
            .copied()
            .flatten()
            .map(str::to_owned)
            .unwrap_or_else(|| env_defaults(&["edge"])["SB_DRAIN_GRACE"].clone());
        let pre_stop = seq(&container["lifecycle"]["preStop"]["exec"]["command"]);
        assert_eq!(pre_stop.first().and_then(Value::as_str), Some("sleep"), "{values:?}: the preStop hook sleeps");
        let pre_stop = Duration::from_secs(str_of(&pre_stop[1]).parse().expect("sleep in whole seconds"));
        assert!(pre_stop > Duration::ZERO, "{values:?}: a preStop sleep lets endpoints update before the drain");
        let grace = seconds(&pod_spec(edge)["terminationGracePeriodSeconds"]);
        let needed = pre_stop + duration(&drain) + EDGE_STOP_AFTER_DRAIN;
        assert!(grace > needed, "{values:?}: terminationGracePeriodSeconds {grace:?} must exceed {needed:?}");
    }
}

/// Annotations of an object as a map.
fn annotations(object: &Value) -> BTreeMap<&str, &str> {
    let Some(map) = object["metadata"]["annotations"].as_mapping() else { return BTreeMap::new() };
    map.iter().map(|(k, v)| (k.as_str().unwrap(), str_of(v))).collect()
}

#[test]
fn the_setup_hook_provisions_before_the_release_and_reads_secrets_that_exist() {
    let Some(_) = rendered(Values::Default) else { return };
    for values in ALL {
        let objects = rendered(values).unwrap();
        let job = kind_named(objects, "Job", "sb-switchboard-setup");
        let hook = annotations(job);
        assert_eq!(hook["helm.sh/hook"], "pre-install,pre-upgrade");
        assert!(hook.contains_key("helm.sh/hook-delete-policy"), "{values:?}: the setup Job has a delete policy");
        let spec = pod_spec(job);
        let steps: Vec<Vec<&str>> =
            seq(&spec["initContainers"]).iter().chain(seq(&spec["containers"])).map(words).collect();
        assert_eq!(steps.len(), 2, "{values:?}: topics, then migrate");
        assert_eq!(&steps[0][..2], ["sbctl", "topics"]);
        assert_eq!(steps[1], ["sbctl", "migrate"]);
        let allows = steps[0].contains(&"--allow-differences");
        assert_eq!(allows, values == Values::ProductionUpgrade, "{values:?}: differing topics go on only at upgrade");
        // The Secret the Job reads exists before it: an existing one, or the
        // chart's own, as a hook weighted before the Job.
        let secret_names: BTreeSet<&str> = containers(std::slice::from_ref(job))
            .into_iter()
            .flat_map(|(_, c)| seq(&c["env"]))
            .filter_map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
            .collect();
        for name in secret_names {
            let chart_secret = of_kind(objects, "Secret").find(|s| s["metadata"]["name"].as_str() == Some(name));
            match (values, chart_secret) {
                (Values::Default, Some(secret)) => {
                    let secret_hook = annotations(secret);
                    assert_eq!(secret_hook["helm.sh/hook"], "pre-install,pre-upgrade");
                    let weight = |a: &BTreeMap<&str, &str>| a["helm.sh/hook-weight"].parse::<i32>().unwrap();
                    assert!(weight(&secret_hook) < weight(&hook), "the Secret is created before the Job");
                }
                (Values::Default, None) => panic!("the default values read a Secret the chart does not make"),
                (_, secret) => {
                    assert!(secret.is_none(), "{values:?}: existingSecret, and no chart Secret");
                    assert_eq!(name, "switchboard-credentials", "{values:?}: the Job reads the existing Secret");
                }
            }
        }
    }
}

#[test]
fn credentials_come_from_secrets_only() {
    let Some(_) = rendered(Values::Default) else { return };
    let credentials =
        ["SB_JWT_SECRET", "SB_DATABASE_URL", "SB_KAFKA_SASL_USERNAME", "SB_KAFKA_SASL_PASSWORD", "SB_WEBHOOK_SECRET"];
    for values in ALL {
        let objects = rendered(values).unwrap();
        for (name, container) in containers(objects) {
            for entry in seq(&container["env"]) {
                let key = str_of(&entry["name"]);
                if credentials.contains(&key) {
                    assert!(
                        entry["valueFrom"]["secretKeyRef"].is_mapping(),
                        "{values:?}: {name} {key} not from a Secret"
                    );
                }
                if key == "SB_KAFKA_OPTIONS" {
                    let options = str_of(&entry["value"]);
                    assert!(!options.contains("sasl.password"), "{values:?}: {name} spells out a password: {options}");
                    // Every value as librdkafka reads it: no float notation.
                    for option in options.split(',') {
                        let value = option.split_once('=').map_or("", |(_, v)| v);
                        assert!(!value.contains("e+"), "{values:?}: {name} passes {option}");
                    }
                }
            }
        }
        for map in of_kind(objects, "ConfigMap") {
            let keys: Vec<_> = map["data"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
            assert_eq!(keys, ["switchboard.json"], "{values:?}: the dashboard is the one ConfigMap");
        }
    }
}

#[test]
fn the_dashboard_config_map_is_the_grafana_dashboard() {
    let Some(objects) = rendered(Values::Production) else { return };
    let map = kind_named(objects, "ConfigMap", "sb-switchboard-dashboard");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"].as_str(), Some("1"), "the sidecar's label");
    let dashboard = std::fs::read_to_string(root().join("deploy/grafana/switchboard.json")).unwrap();
    assert_eq!(str_of(&map["data"]["switchboard.json"]), dashboard.trim_end(), "the chart ships deploy/grafana's file");
}

#[test]
fn the_ingress_outwaits_the_edge_idle_timeout() {
    let Some(objects) = rendered(Values::Production) else { return };
    let ingress = kind_named(objects, "Ingress", "sb-switchboard-edge");
    let idle = env(workload_container(objects, "StatefulSet", "edge"))["SB_IDLE_TIMEOUT"].map(duration).unwrap();
    let notes = annotations(ingress);
    for timeout in ["nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"]
    {
        let secs: u64 = notes[timeout].parse().expect("whole seconds");
        assert!(Duration::from_secs(secs) > idle, "{timeout} {secs}s must exceed the idle timeout {idle:?}");
    }
    for rule in seq(&ingress["spec"]["rules"]) {
        for path in seq(&rule["http"]["paths"]) {
            assert_eq!(str_of(&path["path"]), "/ws", "only the WebSocket endpoint is public");
            assert_eq!(str_of(&path["backend"]["service"]["name"]), "sb-switchboard-edge");
        }
    }
}

#[test]
fn the_values_schema_rejects_misspelled_and_mistyped_values() {
    let Some(_) = rendered(Values::Default) else { return };
    let helm = helm().unwrap();
    let refused = |set: &str, says: &str| {
        let out = Command::new(&helm).args(["template", "sb"]).arg(chart()).args(["--set", set]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(says), "--set {set}: {stderr}");
    };
    refused("edge.confg.SB_IDLE_TIMEOUT=1s", "additional properties 'confg' not allowed");
    refused("edge.config.SB_IDLE_TIMOUT=1s", "additional properties 'SB_IDLE_TIMOUT' not allowed");
    refused("persister.config.SB_NODE_ID=x", "additional properties 'SB_NODE_ID' not allowed");
    refused("edge.replicas=two", "want integer");
    refused("edge.config.SB_IDLE_TIMEOUT=soon", "does not match pattern");
    refused("kafka.options.sasl\\.password=hunter2", "invalid propertyName 'sasl.password'");
    // The chart's own guard: an edge killed mid-drain would drop its routes' tombstones.
    refused("edge.terminationGracePeriodSeconds=15", "must exceed preStopSleepSeconds + SB_DRAIN_GRACE");
    refused("notifier.enabled=true", "notifier.webhookUrl is required when notifier.enabled");
    refused("notifier.webhookUrl=ftp://push", "does not match pattern");
}
