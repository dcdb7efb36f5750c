"""User profiles (seed 002), in Python: the state of each user as a left fold of its events."""

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
            users.put(id, {
                "userId": id,
                "name": data["name"],
                "email": data["email"],
                "organizationId": data["organizationId"],
                "registeredAt": event.timestamp,
                "names": [data["name"]],
                "emailChanges": 0,
                "version": event.version,
            })
            return
        if event.event_type == "UserRenamed":
            update = Update().set("name", data["name"]).push("names", data["name"])
        elif event.event_type == "UserEmailChanged":
            update = Update().set("email", data["email"]).inc("emailChanges", 1)
        else:
            return
        if not users.update_existing(id, update.set("version", event.version)):
            raise ProjectionError("invalid-state", f"{event.event_type} for unknown user {id}")
