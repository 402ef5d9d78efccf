"""OCPP 1.6J over WebSocket for EV_OCPP: the charge points' server, on the PyPI `ocpp` package."""
