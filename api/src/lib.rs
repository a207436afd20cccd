//! SIGMA's HTTP API. Each plane is a module returning its router; the API only starts, updates and
//! queries workflows and reads the Postgres projection the activities write.

pub mod auth;
pub mod core;
pub mod dev;
pub mod error;
pub mod input;
pub mod operator;
pub mod paging;
pub mod public;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::Request;
use sigma_shared::Settings;
use sigma_shared::blob::BlobStore;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub temporal: temporalio_client::Client,
    pub blob: BlobStore,
    /// For outbound reads on behalf of clients (SKILL.md from GitHub); bounded by a timeout.
    pub http: reqwest::Client,
    /// Login codes are emailed from the request itself: the code must never rest in a queue.
    pub mailer: sigma_shared::email::Mailer,
    pub public: Arc<public::PublicState>,
    pub settings: Arc<Settings>,
}

impl AppState {
    /// The task queue SIGMA's workflows run on, under the deployment's prefix.
    pub fn workflow_queue(&self) -> String {
        sigma_activities::queues::QueueNames::new(self.settings.temporal.task_queue_prefix.clone())
            .ops()
    }

    pub fn new(
        db: PgPool,
        temporal: temporalio_client::Client,
        settings: Arc<Settings>,
    ) -> anyhow::Result<Self> {
        // The API publishes the keys; it never needs the private halves beyond deriving them.
        let keys = sigma_activities::load_keyring(&settings.signing)?
            .key_set()
            .clone();
        Ok(Self {
            blob: BlobStore::new(&settings.blob),
            mailer: sigma_shared::email::Mailer::new(&settings.smtp)?,
            http: reqwest::Client::builder()
                .user_agent("sigma-api/0.1")
                .timeout(std::time::Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()?,
            public: Arc::new(public::PublicState {
                cache: Arc::new(public::cache::CertificateCache::new(
                    db.clone(),
                    settings.public.cache_capacity,
                )),
                limits: Arc::new(public::limits::Limits::new(
                    &settings.public,
                    &settings.portal,
                )),
                keys,
            }),
            db,
            temporal,
            settings,
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "SIGMA", description = "Verification and certificates for AI agent skills."),
    modifiers(&SecuritySchemes),
    tags(
        (name = "developer", description = "Developer plane: email login, drafts, quotes, credits, submissions, support (portal session `sigma_portal_…` as bearer or cookie, or an API token `sigma_dev_…`)"),
        (name = "operator", description = "Operator plane: decisions, retries, catalog, credits, support (console session `sigma_console_…` as bearer or cookie, or an automation token `sigma_op_…`)"),
        (name = "public", description = "Public plane: certificate verification, no authentication"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;
impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in [
            "developer_token",
            "developer_session",
            "operator_token",
            "operator_session",
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1/sigma/dev", dev::router())
        .nest("/api/v1/sigma/operator", operator::router())
        .nest("/api/v1/public", public::router())
        .merge(public::site_router())
}

/// The OpenAPI document, as committed in `openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().split_for_parts().1;
    shared_error_responses(&mut doc);
    declare_text_rule(&mut doc);
    doc
}

/// The operations of one path, whichever methods it has.
fn operations_mut(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

/// An operation that takes an `Idempotency-Key` says what `core::idempotency` accepts (1 to 200
/// visible ASCII characters) and that reusing a key for another request is a 409.
fn declare_idempotency_key(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{Ref, RefOr};
    let Some(header) = operation.parameters.iter_mut().flatten().find(|p| {
        p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case("Idempotency-Key")
    }) else {
        return;
    };
    header.schema = Some(RefOr::T(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(200))
            .pattern(Some("^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$"))
            .into(),
    ));
    operation
        .responses
        .responses
        .entry("409".to_owned())
        .or_insert_with(|| RefOr::Ref(Ref::new("#/components/responses/Error")));
}

/// The longest path or query parameter the document promises to read: a few of them, even
/// percent-encoded, stay within [`MAX_URI_BYTES`].
pub const MAX_PARAMETER_CHARS: usize = 200;

/// Says in the document what `ApiJson` and `ApiQuery` enforce on every string a client sends
/// (see `error::text_ok`): no NUL, and at most `MAX_JSON_TEXT_CHARS` unless the field's own
/// schema allows less. Applied to every schema reachable from a request body and to string
/// parameters; enums and formats with their own grammar (binary, dates, uuids) are left as
/// they are.
fn declare_text_rule(doc: &mut utoipa::openapi::OpenApi) {
    use std::collections::{BTreeMap, BTreeSet};
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayItems, KnownFormat, Schema, SchemaFormat, SchemaType, Type,
    };

    type Schemas = BTreeMap<String, RefOr<Schema>>;

    fn is_text(schema_type: &SchemaType) -> bool {
        match schema_type {
            SchemaType::Type(t) => *t == Type::String,
            SchemaType::Array(types) => types.contains(&Type::String),
            SchemaType::AnyValue => false,
        }
    }

    fn constrain(
        node: &mut RefOr<Schema>,
        cap: usize,
        components: &mut Schemas,
        seen: &mut BTreeSet<String>,
    ) {
        let schema = match node {
            RefOr::Ref(reference) => {
                if let Some(name) = reference.ref_location.strip_prefix("#/components/schemas/")
                    && seen.insert(name.to_owned())
                    && let Some(mut target) = components.remove(name)
                {
                    constrain(&mut target, cap, components, seen);
                    components.insert(name.to_owned(), target);
                }
                return;
            }
            RefOr::T(schema) => schema,
        };
        match schema {
            Schema::Object(object) => {
                let own_grammar = object.enum_values.is_some()
                    || matches!(
                        object.format,
                        Some(SchemaFormat::KnownFormat(
                            KnownFormat::Binary
                                | KnownFormat::Byte
                                | KnownFormat::DateTime
                                | KnownFormat::Date
                                | KnownFormat::Uuid
                        ))
                    );
                if is_text(&object.schema_type) && !own_grammar {
                    object.max_length.get_or_insert(cap);
                    object
                        .pattern
                        .get_or_insert_with(|| "^[^\\u0000]*$".to_owned());
                }
                for property in object.properties.values_mut() {
                    constrain(property, cap, components, seen);
                }
                if let Some(extra) = object.additional_properties.as_deref_mut()
                    && let AdditionalProperties::RefOr(extra) = extra
                {
                    constrain(extra, cap, components, seen);
                }
            }
            Schema::Array(array) => {
                if let ArrayItems::RefOrSchema(items) = &mut array.items {
                    constrain(items, cap, components, seen);
                }
            }
            Schema::OneOf(one) => {
                for item in &mut one.items {
                    constrain(item, cap, components, seen);
                }
            }
            Schema::AllOf(all) => {
                for item in &mut all.items {
                    constrain(item, cap, components, seen);
                }
            }
            Schema::AnyOf(any) => {
                for item in &mut any.items {
                    constrain(item, cap, components, seen);
                }
            }
            _ => {}
        }
    }

    let mut components: Schemas = doc
        .components
        .as_mut()
        .map(|c| std::mem::take(&mut c.schemas))
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            declare_idempotency_key(operation);
            for content in operation
                .request_body
                .iter_mut()
                .flat_map(|body| body.content.values_mut())
            {
                if let Some(schema) = &mut content.schema {
                    constrain(
                        schema,
                        error::MAX_JSON_TEXT_CHARS,
                        &mut components,
                        &mut seen,
                    );
                }
            }
            for parameter in operation.parameters.iter_mut().flatten() {
                if let Some(schema) = &mut parameter.schema {
                    constrain(schema, MAX_PARAMETER_CHARS, &mut components, &mut seen);
                }
            }
        }
    }
    if let Some(c) = doc.components.as_mut() {
        c.schemas = components;
    }
}

/// Declares on every operation the errors the shared layers can answer, as references to one
/// `Error` response, unless the operation documents that status itself: 400 (a malformed query
/// or header), 405, 414, 500, and 503 everywhere; 401 and 403 where a credential is required; 413,
/// 415 and 422 where there is a request body; 429 on the rate-limited public plane and logins.
fn shared_error_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let components = doc.components.get_or_insert_with(Default::default);
    components.responses.insert(
        "Error".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description("An error, as `{code, detail}`")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let limited = path.starts_with("/api/v1/public") || path.contains("/auth/");
        for operation in operations_mut(item) {
            let mut statuses = vec!["400", "405", "414", "500", "503"];
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                statuses.extend(["401", "403"]);
            }
            if operation.request_body.is_some() {
                statuses.extend(["413", "415", "422"]);
            }
            if limited {
                statuses.push("429");
            }
            for status in statuses {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::new("#/components/responses/Error")));
            }
        }
    }
}

pub fn app(state: AppState) -> Router {
    let (router, mut openapi) = api_router().split_for_parts();
    shared_error_responses(&mut openapi);
    declare_text_rule(&mut openapi);
    let max_body = state.settings.api.max_body_bytes;
    router
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi))
        .merge(dev::login_page::site_router())
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        // Errors are always `{code, detail}`, the router's own answers included.
        .fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route; the API is described at /api/v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method; see /api/v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            public::limits::limit_reads,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(refuse_long_uris))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("");
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %request.method(), route, request_id,
                    developer_id = tracing::field::Empty, submission_id = tracing::field::Empty,
                    workflow_id = tracing::field::Empty)
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The longest request target (path and query) the API reads, as most servers and proxies
/// allow. Longer ones get a JSON 414 here; beyond 64 KiB hyper's parser refuses the request
/// before any of SIGMA's code runs (a 414 without a body).
pub const MAX_URI_BYTES: usize = 8 * 1024;

async fn refuse_long_uris(
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return axum::response::IntoResponse::into_response(error::ApiError::new(
            axum::http::StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {target} bytes; at most {MAX_URI_BYTES} are read"),
        ));
    }
    next.run(request).await
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = public::spawn_background(&state, stopped);
    let served = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // Stop the change feed and write the last counted views.
    let _ = stop.send(true);
    for task in background {
        let _ = task.await;
    }
    Ok(served?)
}
