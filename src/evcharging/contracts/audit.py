"""The audit log's vocabulary: what happened (`AuditAction`) and the outcome words.

One home for the names every writer (Central, the Registry) and every reader (`GET /api/audit`,
the admin dashboard's filter) uses; the rows themselves are `services.audit.AuditEntry`.
"""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    """What an audit row records (the statement's "qué acción se realiza")."""

    AUTH_OK = "auth.ok"  # a CP proved its credentials to Central
    AUTH_FAILED = "auth.failed"  # unknown, deregistered, wrong proof, bad exchange
    AUTH_THROTTLED = "auth.throttled"  # refused unheard: too many failures from this CP or IP
    CP_REGISTERED = "registry.registered"  # alta: credentials issued
    CP_DEREGISTERED = "registry.deregistered"  # baja: credentials gone
    CREDENTIALS_ROTATED = "registry.rotated"  # a CP (or an admin) replaced its secret
    REGISTRY_REFUSED = "registry.refused"  # an alta/baja/rotation the Registry refused
    CP_STATE = "cp.state"  # a CP's state changed (Activado, Averiado, Desconectado, ...)
    CP_BLOCKED = "cp.blocked"  # an operator put a CP out of service
    CP_UNBLOCKED = "cp.unblocked"  # an operator put it back
    SUPPLY_INCIDENT = "supply.incident"  # a supply interrupted (fault, lost Monitor, stop)
    DRIVER_DENIED = "driver.denied"  # a driver's request refused (unknown driver, no balance)
    ADMIN_ACTION = "admin.action"  # an operator's command, carried out
    ADMIN_REFUSED = (
        "admin.refused"  # an operator's command refused (bad token, senseless, bad input)
    )
    KEY_ISSUED = "key.issued"  # a CP was given a new symmetric key at authentication
    KEYS_REVOKED = "key.revoked"  # an operator revoked a CP's keys ("restaurar claves")
    KEYS_ROTATED = "key.rotated"  # an operator asked every connected CP for a new key
    WEATHER_ALERT = "weather.alert"  # EV_W: a CP's city is below 0 °C (the CP stops)
    WEATHER_CLEARED = "weather.cleared"  # EV_W: above 0 °C again (the CP comes back)
    WEATHER_REFUSED = "weather.refused"  # a weather write refused (bad token, unknown CP, input)
    MODULE_DOWN = "module.down"  # a module stopped answering (Kafka, EV_Registry, EV_W, ...)
    MODULE_UP = "module.up"  # and answers again
    OCPP_REFUSED = "ocpp.refused"  # EV_OCPP refused a charger's connection (credentials, id, ...)
    OCPP_BOOT = "ocpp.boot"  # EV_OCPP accepted or rejected a charger's BootNotification
    OCPP_SECURITY_EVENT = "ocpp.security_event"  # a charger's SecurityEventNotification
    MESSAGE_REJECTED = "message.rejected"  # a malformed frame or event, or a forged record
    ERROR = "error"  # an internal error someone must look at


class Outcome(StrEnum):
    OK = "ok"
    DENIED = "denied"
    ERROR = "error"
