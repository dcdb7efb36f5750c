"""Invoice billing view (seed 001), in Python: one document per invoice through its lifecycle
(draft, sent, paid, cancelled). An InvoiceCreated needs only its amount and currency; lines may
come as `lines` or `items`, the customer as `customer` and/or `customerId`, the organization
from the data or the metadata."""

from refold import Projection, ProjectionError, Update, collection, manifest


class WitWorld(Projection):
    manifest = manifest(
        "invoice-billing",
        1,
        event_types=["InvoiceCreated", "InvoiceSent", "InvoicePaid", "InvoiceCancelled"],
        collections={
            "invoices": [
                {"name": "by_organization_status", "fields": ["organizationId", "status"]},
                {"name": "by_due_date", "fields": ["dueDate"]},
            ],
        },
    )

    def on_event(self, event):
        invoices, id = collection("invoices"), event.aggregate_id
        if event.event_type == "InvoiceCreated":
            data = event.data
            update = Update().set("invoiceId", id)
            organization = data.get("organizationId")
            if organization is None:
                organization = event.metadata.get("organizationId")
            if organization is not None:
                update.set("organizationId", organization)
            if data.get("customer") is not None:
                update.set("customer", data["customer"])
            if data.get("customerId") is not None:
                update.set("customerId", data["customerId"])
            lines = data.get("lines")
            if lines is None:
                lines = data.get("items")
            update.set("amount", float(data["amount"])).set("currency", data["currency"])
            update.set("lineCount", len(lines or []))
            if data.get("dueDate") is not None:
                update.set("dueDate", data["dueDate"])
            update.set("status", "draft").set("issuedAt", event.timestamp)
            invoices.update(id, update)
            return
        if event.event_type == "InvoiceSent":
            update = Update().set("status", "sent").set("sentAt", event.timestamp)
        elif event.event_type == "InvoicePaid":
            update = Update().set("status", "paid").set("paidAt", event.timestamp)
        elif event.event_type == "InvoiceCancelled":
            update = Update().set("status", "cancelled").set("cancelledAt", event.timestamp)
            update.set("cancellationReason", event.data["reason"])
        else:
            return
        if not invoices.update_existing(id, update):
            raise ProjectionError("invalid-state", f"{event.event_type} for unknown invoice {id}")
