//! `/openapi.json` (generated from the handlers) and `/docs` (Swagger UI served by this server).

use serde_json::Value;

use super::support::{Backend, Response, TestApp, spawn_app};

/// Every path of the contract (design/API.md) with its methods.
const CONTRACT_PATHS: &[(&str, &[&str])] = &[
    ("/v1/events/{event_id}", &["get"]),
    ("/v1/events/{event_id}/registrations", &["get", "post"]),
    ("/v1/registrations/{registration_id}", &["delete", "get"]),
    ("/v1/events/{event_id}/stream", &["get"]),
    ("/v1/events", &["get", "post"]),
    ("/v1/events/{event_id}/categories/{code}", &["patch"]),
    ("/v1/registrations/{registration_id}/confirm", &["post"]),
    ("/v1/events/{event_id}/audit", &["get"]),
    ("/v1/admin/sessions", &["delete", "post"]),
    ("/v1/admin/dashboard/node", &["get"]),
    ("/v1/admin/dashboard/events", &["get"]),
    ("/admin", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/v1/status", &["get"]),
    ("/openapi.json", &["get"]),
    ("/docs", &["get"]),
    ("/v1/events/{event_id}/queue", &["post"]),
    ("/v1/queue/{ticket_id}", &["get"]),
    ("/v1/queue/{ticket_id}/stream", &["get"]),
    ("/v1/events/{event_id}/queue/draw", &["get"]),
    ("/v1/webhooks", &["get", "post"]),
    ("/v1/webhooks/{webhook_id}", &["delete", "get"]),
    ("/v1/webhooks/{webhook_id}/rotate", &["post"]),
    ("/v1/webhooks/{webhook_id}/replay", &["post"]),
];

/// The statuses the contract names for each operation.
const CONTRACT_STATUSES: &[(&str, &str, &[&str])] = &[
    ("get", "/v1/events/{event_id}", &["200", "304", "404"]),
    (
        "post",
        "/v1/events/{event_id}/registrations",
        &["201", "202", "400", "403", "409", "413", "415", "422", "429", "503"],
    ),
    (
        "post",
        "/v1/events/{event_id}/queue",
        &["200", "202", "400", "404", "409", "413", "415", "422", "429", "503"],
    ),
    ("get", "/v1/queue/{ticket_id}", &["200", "401", "404"]),
    ("get", "/v1/queue/{ticket_id}/stream", &["200", "204", "307", "401", "404"]),
    ("get", "/v1/events/{event_id}/queue/draw", &["200", "404", "409"]),
    ("get", "/v1/registrations/{registration_id}", &["200", "401", "404"]),
    ("delete", "/v1/registrations/{registration_id}", &["200", "401", "404"]),
    ("get", "/v1/events/{event_id}/stream", &["200"]),
    ("post", "/v1/events", &["201", "401", "409", "422"]),
    ("get", "/v1/events", &["200", "401", "422"]),
    ("patch", "/v1/events/{event_id}/categories/{code}", &["200", "401", "409"]),
    ("post", "/v1/registrations/{registration_id}/confirm", &["200", "401", "410"]),
    ("get", "/v1/events/{event_id}/registrations", &["200", "401", "422"]),
    ("get", "/v1/events/{event_id}/audit", &["200", "401"]),
    ("post", "/v1/admin/sessions", &["201", "401"]),
    ("delete", "/v1/admin/sessions", &["204"]),
    ("get", "/readyz", &["200", "503"]),
    ("post", "/v1/webhooks", &["201", "401", "422"]),
    ("get", "/v1/webhooks", &["200", "401"]),
    ("get", "/v1/webhooks/{webhook_id}", &["200", "401", "404"]),
    ("delete", "/v1/webhooks/{webhook_id}", &["204", "401", "404"]),
    ("post", "/v1/webhooks/{webhook_id}/rotate", &["200", "401", "404"]),
    ("post", "/v1/webhooks/{webhook_id}/replay", &["202", "401", "404"]),
];

async fn document(app: &TestApp) -> Value {
    let response = app.get("/openapi.json", &[]).await;
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").is_some_and(|value| value.starts_with("application/json")));
    response.json()
}

/// Follows a local `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("references are local");
            document.pointer(pointer).unwrap_or_else(|| panic!("{reference} resolves"))
        }
        None => value,
    }
}

#[actix_rt::test]
async fn the_openapi_document_is_openapi_3_1_and_has_every_path_of_the_contract_with_its_methods() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = document(&app).await;
    let version = document["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1."), "openapi is {version}");
    let paths = document["paths"].as_object().expect("paths");
    for (path, methods) in CONTRACT_PATHS {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} is not documented"));
        let mut documented: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        documented.retain(|key| ["get", "post", "put", "patch", "delete"].contains(key));
        documented.sort_unstable();
        assert_eq!(&documented, methods, "methods of {path}");
    }
    let mut extra: Vec<&String> =
        paths.keys().filter(|path| !CONTRACT_PATHS.iter().any(|(known, _)| known == path)).collect();
    extra.sort_unstable();
    assert!(extra.is_empty(), "documented but not in the contract table: {extra:?}");
}

#[actix_rt::test]
async fn every_operation_has_an_operation_id_of_its_own() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = document(&app).await;
    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has none"));
            if let Some(other) = seen.insert(id.to_string(), format!("{method} {path}")) {
                panic!("{method} {path} and {other} share the operationId {id}");
            }
        }
    }
}

#[actix_rt::test]
async fn every_status_of_the_contract_is_documented_and_every_error_is_a_problem_document() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = document(&app).await;
    for (method, path, statuses) in CONTRACT_STATUSES {
        let responses = &document["paths"][path][method]["responses"];
        for status in *statuses {
            assert!(responses.get(status).is_some(), "{method} {path} does not document {status}");
        }
    }
    let problem = &document["components"]["schemas"]["Problem"];
    for member in ["type", "title", "status", "detail", "code", "errors"] {
        assert!(problem["properties"].get(member).is_some(), "Problem has no `{member}`");
    }
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                // Readiness answers 503 with its own body, which names the failing parts.
                let is_error = status.starts_with('4') || status.starts_with('5');
                if !is_error || (path == "/readyz" && status == "503") {
                    continue;
                }
                let response = resolve(&document, response);
                let schema = &response["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status} is not a problem document: {response}"
                );
            }
        }
    }
}

#[actix_rt::test]
async fn the_openapi_document_declares_the_three_credentials_and_operations_use_only_those() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = document(&app).await;
    let schemes = &document["components"]["securitySchemes"];
    for bearer in ["admin_token", "registrant_token"] {
        assert_eq!(schemes[bearer]["type"], "http", "{bearer}");
        assert_eq!(schemes[bearer]["scheme"], "bearer", "{bearer}");
    }
    assert_eq!(schemes["admin_session"]["type"], "apiKey");
    assert_eq!(schemes["admin_session"]["in"], "cookie");
    assert_eq!(schemes["admin_session"]["name"], "kuota_session");
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let requirements = operation["security"].as_array().cloned().unwrap_or_default();
            let names: Vec<String> = requirements
                .iter()
                .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
                .collect();
            for name in &names {
                assert!(schemes.get(name).is_some(), "{method} {path} uses the undeclared scheme {name}");
            }
            let is_admin = operation["tags"].as_array().is_some_and(|tags| tags.contains(&"admin".into()));
            let opens_a_session = path == "/v1/admin/sessions";
            if is_admin && !opens_a_session {
                assert!(
                    names.contains(&"admin_token".to_string())
                        && names.contains(&"admin_session".to_string()),
                    "{method} {path} does not name the admin credentials: {names:?}"
                );
            }
        }
    }
    let registration = &document["paths"]["/v1/registrations/{registration_id}"]["get"]["security"];
    assert!(registration.to_string().contains("registrant_token"), "{registration}");
}

#[actix_rt::test]
async fn the_documented_field_limits_are_the_limits_the_server_enforces() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = document(&app).await;
    let schemas = &document["components"]["schemas"];
    let registration = &schemas["NewRegistration"]["properties"];
    let phone_length_max = kuota_api::domain::PHONE_LENGTH_MAX as u64;
    assert_eq!(registration["full_name"]["maxLength"], kuota_api::domain::FULL_NAME_LENGTH_MAX as u64);
    assert_eq!(registration["email"]["maxLength"], kuota_engine::limits::EMAIL_LENGTH_MAX as u64);
    assert_eq!(registration["category"]["maxLength"], kuota_engine::limits::CATEGORY_CODE_LENGTH_MAX as u64);
    assert!(registration["phone"].to_string().contains(&format!("\"maxLength\":{phone_length_max}")));
    let event = &schemas["NewEvent"]["properties"];
    assert_eq!(event["id"]["maxLength"], kuota_engine::limits::EVENT_ID_LENGTH_MAX as u64);
    assert_eq!(event["categories"]["maxItems"], kuota_engine::limits::CATEGORIES_MAX as u64);
    assert_eq!(event["hold_ttl_seconds"]["maximum"], kuota_api::domain::HOLD_TTL_SECONDS_MAX);
    let capacity_max = kuota_engine::limits::CATEGORY_CAPACITY_MAX;
    assert_eq!(schemas["NewCategory"]["properties"]["capacity"]["maximum"], capacity_max);
    assert_eq!(schemas["CapacityChange"]["properties"]["capacity"]["maximum"], capacity_max);
    let list = &document["paths"]["/v1/events/{event_id}/registrations"]["get"]["parameters"];
    let limit = list.as_array().unwrap().iter().find(|parameter| parameter["name"] == "limit").unwrap();
    assert!(limit.to_string().contains(&format!("\"maximum\":{}", kuota_api::http::PAGE_LIMIT_MAX)));
}

/// Every `src` and `href` attribute value of an HTML page.
fn linked_addresses(html: &str) -> Vec<String> {
    let mut addresses = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (start, _) in html.match_indices(attribute) {
            let rest = &html[start + attribute.len()..];
            let end = rest.find('"').expect("attribute values are quoted");
            addresses.push(rest[..end].to_string());
        }
    }
    addresses
}

fn text(response: &Response) -> String {
    String::from_utf8(response.body.clone()).expect("the body is UTF-8")
}

#[actix_rt::test]
async fn the_docs_page_is_html_whose_every_asset_comes_from_this_server() {
    let app = spawn_app(Backend::Sqlite).await;
    let page = app.get("/docs", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|value| value.starts_with("text/html")));
    let html = text(&page);
    assert!(html.contains("id=\"swagger-ui\""), "{html}");
    assert!(html.contains("<base href=\"/docs/\">"), "relative links would leave /docs/:\n{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "an absolute URL in:\n{html}");
    let addresses = linked_addresses(&html);
    assert!(addresses.iter().any(|address| address.ends_with("swagger-ui-bundle.js")), "{addresses:?}");
    for address in &addresses {
        assert!(!address.starts_with("//") && !address.contains(':'), "{address} leaves the server");
        // The page sets `<base href="/docs/">`, so relative links resolve under /docs/.
        let path = if address.starts_with('/') {
            address.clone()
        } else {
            format!("/docs/{}", address.trim_start_matches("./"))
        };
        let asset = app.get(&path, &[]).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(!asset.body.is_empty(), "{path} is empty");
    }
    let initializer = text(&app.get("/docs/swagger-initializer.js", &[]).await);
    assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
    assert!(initializer.contains("\"validatorUrl\": \"none\""), "{initializer}");
    assert!(!initializer.contains("http://") && !initializer.contains("https://"), "{initializer}");
    let with_slash = app.get("/docs/", &[]).await;
    assert_eq!(with_slash.status, 200);
    assert!(text(&with_slash).contains("id=\"swagger-ui\""));
}

#[actix_rt::test]
async fn a_method_a_resource_does_not_answer_is_a_405_problem_with_the_documented_allow() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = document(&app).await;
    for (method, path, pattern) in [
        ("DELETE", "/v1/events", "/v1/events"),
        ("PUT", "/v1/events/race", "/v1/events/{event_id}"),
        ("POST", "/healthz", "/healthz"),
        ("TRACE", "/docs", "/docs"),
        ("POST", "/openapi.json", "/openapi.json"),
        ("PATCH", "/v1/webhooks", "/v1/webhooks"),
    ] {
        let response = app.request(method, path, &[], None).await;
        assert_eq!(response.status, 405, "{method} {path}: {}", text(&response));
        assert_eq!(response.code_if_problem(), "method_not_allowed", "{method} {path}");
        assert!(
            response
                .header("content-type")
                .is_some_and(|value| value.starts_with("application/problem+json")),
            "{method} {path}"
        );
        let mut documented: Vec<String> = document["paths"][pattern]
            .as_object()
            .unwrap_or_else(|| panic!("{pattern} is documented"))
            .keys()
            .map(|method| method.to_ascii_uppercase())
            .collect();
        let mut allowed: Vec<String> = response
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path} names Allow"))
            .split(", ")
            .map(str::to_owned)
            .collect();
        documented.sort();
        allowed.sort();
        assert_eq!(allowed, documented, "{method} {path}");
    }
}

#[actix_rt::test]
async fn closed_request_bodies_say_so_and_the_stream_names_its_event_data() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = document(&app).await;
    let schemas = &document["components"]["schemas"];
    for closed in ["NewEvent", "NewRegistration", "NewTicket", "CapacityChange"] {
        assert_eq!(
            schemas[closed]["additionalProperties"],
            Value::Bool(false),
            "{closed}: {}",
            schemas[closed]
        );
    }
    // The server refuses what the schema says it refuses.
    let unknown =
        serde_json::json!({ "category": "10K", "email": "a@example.org", "full_name": "A", "x": 1 });
    app.create_event(super::support::race("race", 5, 0)).await;
    let refused = app.register("race", "k1", &unknown).await;
    assert_eq!((refused.status, refused.code_if_problem().as_str()), (422, "validation_failed"));
    let availability = &schemas["Availability"]["properties"];
    for member in ["event_id", "status", "categories"] {
        assert!(availability[member].is_object(), "Availability.{member}: {}", schemas["Availability"]);
    }
    let stream = &document["paths"]["/v1/events/{event_id}/stream"]["get"];
    assert!(stream["description"].as_str().is_some_and(|text| text.contains("`Availability`")), "{stream}");
}
