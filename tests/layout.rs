//! The three places that name functions and routes must agree one to one: the `functions/` crates,
//! template.yaml (functions and HttpApi routes) and the `cargo lambda watch` router in Cargo.toml.
//! Runs without an emulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Function crate name -> routes ("METHOD /path") declared for it in template.yaml.
fn template_functions() -> BTreeMap<String, BTreeSet<String>> {
    let template: serde_yaml::Value = serde_yaml::from_str(&read("template.yaml")).unwrap();
    let mut functions = BTreeMap::new();
    for (logical_id, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let properties = &resource["Properties"];
        let code_uri = properties["CodeUri"].as_str().unwrap();
        let crate_name = code_uri
            .strip_prefix("functions/")
            .unwrap_or_else(|| panic!("{logical_id:?}: CodeUri {code_uri}"));
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{crate_name}"
        );
        assert_eq!(
            resource["Metadata"]["BuildProperties"]["Binary"].as_str(),
            Some(crate_name),
            "{crate_name}"
        );
        let mut routes = BTreeSet::new();
        if let Some(events) = properties["Events"].as_mapping() {
            for event in events.values() {
                if event["Type"].as_str() == Some("HttpApi") {
                    let method = event["Properties"]["Method"].as_str().unwrap().to_uppercase();
                    let path = event["Properties"]["Path"].as_str().unwrap();
                    routes.insert(format!("{method} {path}"));
                }
            }
        }
        assert!(
            functions.insert(crate_name.to_owned(), routes).is_none(),
            "{crate_name} declared twice"
        );
    }
    functions
}

fn function_crates() -> BTreeSet<String> {
    std::fs::read_dir(root().join("functions"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Route -> function, from `[workspace.metadata.lambda.watch.router]`.
fn watch_router() -> BTreeMap<String, String> {
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let router = manifest["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .unwrap();
    let mut routes = BTreeMap::new();
    for (path, targets) in router {
        for target in targets.as_array().unwrap() {
            let route = format!("{} {path}", target["method"].as_str().unwrap().to_uppercase());
            let function = target["function"].as_str().unwrap().to_owned();
            assert!(routes.insert(route.clone(), function).is_none(), "{route} routed twice");
        }
    }
    routes
}

#[test]
fn every_function_crate_is_in_the_template_and_nothing_else_is() {
    let in_template: BTreeSet<String> = template_functions().into_keys().collect();
    assert_eq!(function_crates(), in_template);
}

#[test]
fn each_crate_is_named_after_its_folder() {
    for name in function_crates() {
        let manifest: toml::Value = toml::from_str(&read(&format!("functions/{name}/Cargo.toml"))).unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some(name.as_str()));
        assert!(
            root().join(format!("functions/{name}/src/main.rs")).exists(),
            "{name} has no main.rs"
        );
        assert!(
            root().join(format!("functions/{name}/src/lib.rs")).exists(),
            "{name} has no lib.rs"
        );
    }
}

#[test]
fn template_routes_and_the_watch_router_agree_one_to_one() {
    let from_template: BTreeMap<String, String> = template_functions()
        .into_iter()
        .flat_map(|(function, routes)| routes.into_iter().map(move |route| (route, function.clone())))
        .collect();
    assert_eq!(from_template, watch_router());
}

#[test]
fn every_function_has_a_sample_event() {
    let events: Vec<String> = std::fs::read_dir(root().join("events"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    for name in function_crates() {
        assert!(
            events.contains(&format!("{name}.json")),
            "events/{name}.json is missing"
        );
    }
}

#[test]
fn routed_sample_events_name_their_route() {
    for (function, routes) in template_functions() {
        let Some(route) = routes.iter().next() else { continue };
        let event: serde_json::Value = serde_json::from_str(&read(&format!("events/{function}.json"))).unwrap();
        assert!(
            routes.contains(event["routeKey"].as_str().unwrap()),
            "events/{function}.json routeKey vs {route}"
        );
    }
}

#[test]
fn the_openapi_document_describes_exactly_the_deployed_routes() {
    let document: serde_yaml::Value = serde_yaml::from_str(&read("openapi.yaml")).unwrap();
    let mut documented = BTreeSet::new();
    for (path, operations) in document["paths"].as_mapping().unwrap() {
        for (method, _) in operations.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if ["get", "post", "put", "patch", "delete"].contains(&method) {
                documented.insert(format!("{} {}", method.to_uppercase(), path.as_str().unwrap()));
            }
        }
    }
    let deployed: BTreeSet<String> = template_functions().into_values().flatten().collect();
    assert_eq!(documented, deployed);
}

#[test]
fn every_openapi_reference_resolves() {
    let text = read("openapi.yaml");
    let document: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for reference in text.split("$ref: \"#/").skip(1) {
        let pointer = reference.split('"').next().unwrap();
        let mut node = &document;
        for part in pointer.split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "unresolved reference #/{pointer}");
    }
}

/// The template resource of each function crate.
fn template_resources() -> BTreeMap<String, serde_yaml::Value> {
    let template: serde_yaml::Value = serde_yaml::from_str(&read("template.yaml")).unwrap();
    let mut resources = BTreeMap::new();
    for resource in template["Resources"].as_mapping().unwrap().values() {
        if let Some(binary) = resource["Metadata"]["BuildProperties"]["Binary"].as_str() {
            resources.insert(binary.to_owned(), resource.clone());
        }
    }
    resources
}

#[test]
fn every_route_but_health_is_served_behind_the_rate_limiter() {
    let resources = template_resources();
    for (function, routes) in template_functions() {
        if routes.is_empty() {
            continue;
        }
        let main = read(&format!("functions/{function}/src/main.rs"));
        let policies = serde_yaml::to_string(&resources[&function]["Properties"]["Policies"]).unwrap();
        if function == "health" {
            assert!(
                main.contains("shared::http::serve_unlimited("),
                "health is exempt (API.md)"
            );
            assert!(!policies.contains("GuardsTable"), "health needs no counters");
        } else {
            // One entry point does the limiting for everyone; a function cannot skip it by accident.
            assert!(
                main.contains("state.rate_limiter().await?") && main.contains("shared::http::serve(limiter,"),
                "{function} must serve through the rate limiter"
            );
            assert!(
                policies.contains("GuardsTable") && policies.contains("rate#*"),
                "{function} needs (only) its rate counters in the guards table"
            );
        }
    }
}
