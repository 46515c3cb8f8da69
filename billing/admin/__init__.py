"""Support staff's view of billing, one module per page: usage events and the dashboard, webhook
endpoints (secrets), deliveries.

Every write goes through billing.services so validation and the audit trail match everywhere.
"""

from billing.admin import deliveries, endpoints, usage

__all__ = ["deliveries", "endpoints", "usage"]
