"""Support staff's view of tenants and the customer hierarchy.

Every write goes through groups.services, so the admin enforces the same rules and writes the same
audit rows as the API. A `ServiceForm` runs its service inside `clean()` (the admin's change view
is one transaction), which turns a ValidationFailed into an ordinary form error on the right field.
"""

from groups.admin import hierarchy, tenants

__all__ = ["hierarchy", "tenants"]
