//! The OpenAPI document, generated from the handlers' annotations. The checked-in copy is
//! `docs/openapi.json`; a test fails when the two differ (regenerate with
//! `OTTER_UPDATE_OPENAPI=1 cargo test -p otterd openapi`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::*;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Stock Arduino update clients (`/arduino/v1/{product}`): the enrolment secret as password.
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Otter", description = "Self-hosted OTA updates for ESP32 and ESP8266 fleets. Management routes need an API token (`ott_…`), device routes a device token (`otd_…`). See docs/api.md and docs/protocol.md."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        tokens::whoami, tokens::create, tokens::list, tokens::revoke,
        products::create, products::list, products::show, products::add_key, products::delete_key, products::rotate_secret,
        upload::push_release, releases::list, releases::show, payloads::attach, payloads::list,
        devices::list, devices::show, devices::update, devices::remove,
        device_api::enroll, device_api::checkin, device_api::status, download::image,
        system::healthz, system::metrics,
        products::list_keys, devices::history, enrolment::update_product, enrolment::import_allowlist,
        enrolment::list_allowlist, enrolment::remove_from_allowlist, enrolment::allow_reenroll,
        promote::promote, arduino::update, arduino_fota::manifest_json, arduino_fota::image,
        github::follow, github::show, github::unfollow,
        fleet::add_tags, fleet::remove_tags, fleet::create_group, fleet::list_groups,
        fleet::show_group, fleet::delete_group, fleet::add_members, fleet::remove_members,
        audit::list,
        rollouts::create, rollouts::list, rollouts::show, rollouts::pause, rollouts::resume,
        rollouts::abort, rollouts::advance, rollouts::deployments, preview::preview,
        people::create, people::list, people::disable,
    ),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

/// The document as pretty JSON.
pub fn document_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
