"""User profiles (seed 002), in Python: the state of each user as a left fold of its events. The
organization comes from the data, else the metadata, and is left out when neither has it."""

from refold import Projection, ProjectionError, Update, collection, manifest


class WitWorld(Projection):
    manifest = manifest(
        "user-profiles",
        1,
        event_types=["UserRegistered", "UserRenamed", "UserEmailChanged"],
        aggregate_types=["User"],
        collections={
            "users": [
                {"name": "by_email", "fields": ["email"], "unique": True},
                {"name": "by_organization", "fields": ["organizationId"]},
            ],
        },
    )

    def on_event(self, event):
        users, id, data = collection("users"), event.aggregate_id, event.data
        if event.event_type == "UserRegistered":
            profile = {"userId": id, "name": data["name"], "email": data["email"]}
            organization = data.get("organizationId")
            if organization is None:
                organization = event.metadata.get("organizationId")
            if organization is not None:
                profile["organizationId"] = organization
            profile["registeredAt"] = event.timestamp
            profile["names"] = [data["name"]]
            profile["emailChanges"] = 0
            profile["version"] = event.version
            users.put(id, profile)
            return
        if event.event_type == "UserRenamed":
            update = Update().set("name", data["name"]).push("names", data["name"])
        elif event.event_type == "UserEmailChanged":
            update = Update().set("email", data["email"]).inc("emailChanges", 1)
        else:
            return
        if not users.update_existing(id, update.set("version", event.version)):
            raise ProjectionError("invalid-state", f"{event.event_type} for unknown user {id}")
