//! User profiles (seed 002: state is a left fold of events): the current name and e-mail of each
//! user, with the history of names and the number of e-mail changes. The organization comes from
//! a `UserRegistered`'s data, else from its metadata, and is left out when neither has it.

use refold_projections_sdk::{Context, Error, Event, Manifest, Projection, Result, Update, export_projection};
use serde::Deserialize;

struct UserProfiles;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    name: String,
    email: String,
    #[serde(default)]
    organization_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    organization_id: Option<String>,
}

#[derive(Deserialize)]
struct Renamed {
    name: String,
}

#[derive(Deserialize)]
struct EmailChanged {
    email: String,
}

impl Projection for UserProfiles {
    fn manifest() -> Manifest {
        Manifest::new("user-profiles", 1)
            .event_types(&["UserRegistered", "UserRenamed", "UserEmailChanged"])
            .aggregate_types(&["User"])
            .collection("users")
            .unique_index("users", "by_email", &["email"])
            .index("users", "by_organization", &["organizationId"])
    }

    fn handle(ctx: &mut Context, event: &Event) -> Result<()> {
        let users = ctx.collection("users");
        let id = event.aggregate_id();
        match event.event_type() {
            "UserRegistered" => {
                let data: Registered = event.data()?;
                let organization = match data.organization_id {
                    Some(organization) => Some(organization),
                    None => event.metadata::<Metadata>()?.organization_id,
                };
                let mut profile = serde_json::json!({ "userId": id, "name": data.name, "email": data.email });
                if let Some(organization) = organization {
                    profile["organizationId"] = organization.into();
                }
                profile["registeredAt"] = event.timestamp();
                profile["names"] = serde_json::json!([data.name]);
                profile["emailChanges"] = 0.into();
                profile["version"] = event.version().into();
                users.put(id, &profile)?;
            }
            "UserRenamed" => {
                let data: Renamed = event.data()?;
                let update = Update::new().set("name", &data.name).push("names", &data.name).set("version", event.version());
                if !users.update_existing(id, update)? {
                    return Err(Error::invalid_state(format!("UserRenamed for unknown user {id}")));
                }
            }
            "UserEmailChanged" => {
                let data: EmailChanged = event.data()?;
                let update = Update::new().set("email", &data.email).inc("emailChanges", 1).set("version", event.version());
                if !users.update_existing(id, update)? {
                    return Err(Error::invalid_state(format!("UserEmailChanged for unknown user {id}")));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

export_projection!(UserProfiles);
