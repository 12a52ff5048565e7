//! The three places that name functions and routes must agree one to one: the `functions/` crates,
//! template.yaml (functions and HttpApi routes) and the `cargo lambda watch` router in Cargo.toml.
//! And the library's layers stay layers: each crate under `shared/` depends only on the layers below
//! it, no module cycle hides inside a crate, the domain links no AWS, HTTP or async crate, and no
//! worker links the HTTP, token or password stack. Runs without an emulator.

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
        // Exempt: /health (docs/api.md "Rate limits"), and Stripe's webhook, which comes from a few
        // Stripe addresses and refuses anything unsigned before doing any work.
        if function == "health" || function == "payments-webhook" {
            assert!(
                main.contains("api::run_api_unlimited("),
                "{function} is exempt from the per-client limiter"
            );
            assert!(!policies.contains("GuardsTable"), "{function} needs no counters");
        } else {
            // One entry point does the limiting for everyone; a function cannot skip it by accident.
            assert!(
                main.contains("api::run_api(") || main.contains("api::run_api_refusing_with("),
                "{function} must serve through the rate limiter (api::run_api)"
            );
            assert!(
                policies.contains("GuardsTable") && policies.contains("rate#*"),
                "{function} needs (only) its rate counters in the guards table"
            );
        }
    }
}

/// The library crates, bottom layer first, and the library crates each may depend on.
const LAYERS: &[(&str, &[&str])] = &[
    ("domain", &[]),
    // Stripe's REST API and webhook signatures: knows nothing of the shop.
    ("stripe", &[]),
    ("store", &["domain"]),
    ("wiring", &["domain", "store"]),
    ("api", &["domain", "store", "wiring"]),
    ("worker", &["domain", "store", "wiring"]),
];

/// The names of the crates `package` links in a normal build (`cargo tree`, so transitive ones too).
fn linked_crates(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The crates `[dependencies]` of a manifest names directly.
fn direct_dependencies(manifest: &str) -> BTreeSet<String> {
    let manifest: toml::Value = toml::from_str(&read(manifest)).unwrap();
    manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|table| table.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn each_library_crate_depends_only_on_the_layers_below_it() {
    let library: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("shared"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(on_disk, library.iter().map(|name| (*name).to_owned()).collect());
    for (name, allowed) in LAYERS {
        let uses: BTreeSet<String> = direct_dependencies(&format!("shared/{name}/Cargo.toml"))
            .into_iter()
            .filter(|dependency| library.contains(dependency.as_str()))
            .collect();
        let allowed: BTreeSet<String> = allowed.iter().map(|name| (*name).to_owned()).collect();
        assert!(uses.is_subset(&allowed), "{name} uses {uses:?}, may use {allowed:?}");
    }
}

/// The functions behind the WebSocket API's routes (`AWS::ApiGatewayV2::Integration`s that invoke them).
fn socket_functions() -> BTreeSet<String> {
    let template: serde_yaml::Value = serde_yaml::from_str(&read("template.yaml")).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let integrations: Vec<String> = resources
        .values()
        .filter(|resource| resource["Type"].as_str() == Some("AWS::ApiGatewayV2::Integration"))
        .map(|resource| serde_yaml::to_string(&resource["Properties"]["IntegrationUri"]).unwrap())
        .collect();
    resources
        .iter()
        .filter(|(logical_id, _)| {
            let arn = format!("${{{}.Arn}}", logical_id.as_str().unwrap());
            integrations.iter().any(|uri| uri.contains(&arn))
        })
        .map(|(_, resource)| {
            resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn functions_use_the_edge_of_their_kind() {
    let sockets = socket_functions();
    assert_eq!(
        sockets,
        ["ws-connect", "ws-default", "ws-disconnect"].map(String::from).into(),
        "the WebSocket routes' functions"
    );
    for (function, routes) in template_functions() {
        let uses = direct_dependencies(&format!("functions/{function}/Cargo.toml"));
        if sockets.contains(&function) {
            // A WebSocket route: the API edge (tokens, problems) without an HTTP route of its own.
            assert!(
                routes.is_empty(),
                "{function} serves a WebSocket route: no HttpApi event"
            );
            assert!(
                !uses.contains("worker"),
                "{function} serves a WebSocket route: it is no event consumer"
            );
            let main = read(&format!("functions/{function}/src/main.rs"));
            assert!(
                main.contains("api::run_socket("),
                "{function} must serve through api::run_socket"
            );
        } else if routes.is_empty() {
            assert!(!uses.contains("api"), "{function} is a worker: it has no HTTP edge");
        } else {
            assert!(
                !uses.contains("worker"),
                "{function} serves HTTP: it is no event consumer"
            );
        }
    }
}

#[test]
fn the_domain_links_no_aws_http_or_async_crate() {
    let linked = linked_crates("domain");
    let forbidden = |name: &str| {
        [
            "aws-", "lambda", "hyper", "http", "reqwest", "tokio", "futures", "async-", "tower", "mio",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
    };
    let offending: Vec<&String> = linked.iter().filter(|name| forbidden(name)).collect();
    assert!(offending.is_empty(), "the domain links {offending:?}");
}

#[test]
fn no_worker_links_the_http_token_or_password_stack() {
    let sockets = socket_functions();
    let workers: Vec<String> = template_functions()
        .into_iter()
        .filter(|(function, routes)| routes.is_empty() && !sockets.contains(function))
        .map(|(function, _)| function)
        .collect();
    assert!(workers.len() >= 4, "{workers:?}");
    for worker in workers {
        let linked = linked_crates(&worker);
        for forbidden in ["lambda_http", "jsonwebtoken", "argon2", "aws-sdk-secretsmanager"] {
            // The one secret a worker holds: the payment provider's key (Stripe), read at init.
            let allowed = worker == "payments-worker" && forbidden == "aws-sdk-secretsmanager";
            assert!(allowed || !linked.contains(forbidden), "{worker} links {forbidden}");
        }
    }
}

/// Module -> the modules of the same crate it names (`crate::module`, or an item the crate root
/// re-exports from `module`).
fn module_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join(format!("shared/{krate}/src"));
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "lib")
        .collect();
    // `pub use module::{A, B};` in lib.rs: A and B come from `module`.
    let mut reexported: BTreeMap<String, String> = BTreeMap::new();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for statement in lib.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            reexported.insert(item.trim().to_owned(), module.to_owned());
        }
    }
    let identifiers = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|word| !word.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut graph = BTreeMap::new();
    for module in &modules {
        let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
        // Tests may reach anywhere in their crate; only the code itself must be layered.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let mut uses = BTreeSet::new();
        for (index, _) in code.match_indices("crate::") {
            let rest = &code[index + "crate::".len()..];
            let named = if rest.starts_with('{') {
                let end = rest.find('}').unwrap_or(rest.len());
                identifiers(&rest[..end])
            } else {
                identifiers(rest).into_iter().take(1).collect()
            };
            for name in named {
                if modules.contains(&name) {
                    uses.insert(name);
                } else if let Some(owner) = reexported.get(&name) {
                    uses.insert(owner.clone());
                }
            }
        }
        uses.remove(module);
        graph.insert(module.clone(), uses);
    }
    graph
}

#[test]
fn no_library_crate_hides_a_module_cycle() {
    for (krate, _) in LAYERS {
        let graph = module_graph(krate);
        // Depth-first search; a module met again while still on the path closes a cycle.
        fn visit(
            module: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(start) = path.iter().position(|on_path| on_path == module) {
                let mut cycle = path[start..].to_vec();
                cycle.push(module.to_owned());
                return Some(cycle);
            }
            if done.contains(module) {
                return None;
            }
            path.push(module.to_owned());
            for next in graph.get(module).into_iter().flatten() {
                if let Some(cycle) = visit(next, graph, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(module.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
                panic!("{krate} has a module cycle: {}", cycle.join(" -> "));
            }
        }
    }
}
